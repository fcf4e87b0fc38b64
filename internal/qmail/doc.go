// Package qmail holds qmail's own formats and interfaces, so that qmgate's
// parts drop into an existing qmail installation and qmail's parts can feed
// qmgate:
//
//   - control files (ReadControlLines, ReadControlLine, ReadControlInt): one
//     entry per line, blank lines and lines starting with '#' skipped in
//     lists, trailing white space stripped, as qmail's control.c does
//     (qmail-control(5));
//   - control/qmqpservers (ParseQMQPServers): qmail's dotted-quad lines, where
//     text after the address is ignored and the port is 628, plus the
//     extensions "host:port", host names and IPv6 (bare, "[v6]:port", and
//     link-local with a zone, as s/qmail allows);
//   - the qmail-queue fd protocol (qmail-queue(8)): the message on fd 0, then
//     the envelope "F<sender>\0T<rcpt>\0...\0" on fd 1. ReadEnvelope is the
//     receiving side with qmail-queue's exit codes (11 address too long, 91
//     format, 54 read error); Queue is the sending side, which runs a
//     qmail-queue program (normally $QMAILQUEUE) and turns its exit code into a
//     mail.Status carrying qmail's reply texts (qmail.c's qmail_close),
//     notqmail's exit 82 with a custom reply on fd 6 included. Sink and
//     Message are the same interface in Go: a message, then its envelope,
//     then one Result; ProgramSink is a Sink that runs the program;
//   - tcpserver's environment (ReadEnv: TCPREMOTEIP, RELAYCLIENT,
//     DATABYTES...) and StdioConn, which turns fd 0 and fd 1 into a
//     connection;
//   - conversion of a qmail control directory into qmgate's TOML
//     configuration (FromQmail), with a comment for every setting that could
//     not be carried over.
//
// It knows nothing of qmgate's hub, queue or protocol servers: the handlers
// that play qmail-qmtpd and qmail-qmqpd, and the sinks for qmgate's queue
// and daemon socket, are the hub's (package relay).
//
// It is not a qmail implementation: there is no queue here, no qmail-send and
// no local delivery.
package qmail
