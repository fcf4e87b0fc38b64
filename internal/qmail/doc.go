// Package qmail holds qmgate's side of qmail's own interfaces, so that
// qmgate's parts drop into an existing qmail installation and qmail's parts
// can feed qmgate:
//
//   - control files (ReadControlLines, ReadControlLine, ReadControlInt): one
//     entry per line, blank lines and lines starting with '#' skipped in
//     lists, trailing white space stripped, as qmail's control.c does
//     (PROTOCOLS.md 2.3);
//   - control/qmqpservers (ParseQMQPServers): qmail's dotted-quad lines, where
//     text after the address is ignored and the port is 628, plus the
//     extensions "host:port", host names and IPv6 (bare, "[v6]:port", and
//     link-local with a zone, as s/qmail allows);
//   - the qmail-queue fd protocol (PROTOCOLS.md 5): the message on fd 0, then
//     the envelope "F<sender>\0T<rcpt>\0...\0" on fd 1. ReadEnvelope is the
//     receiving side with qmail-queue's exit codes (11 address too long, 91
//     format, 54 read error); Queue is the sending side, which runs a
//     qmail-queue program (normally $QMAILQUEUE) and turns its exit code into a
//     mail.Status carrying qmail's reply texts (qmail.c's qmail_close,
//     PROTOCOLS.md 5.3), notqmail's exit 82 with a custom reply on fd 6
//     included;
//   - the stand-ins for qmail's daemons and queue programs that cmd/qmgate
//     wires: a Sink takes a message the way qmail-queue does (message,
//     then envelope), either by running $QMAILQUEUE (ProgramSink) or over
//     QMQP (QMQPSink: qmail-qmqpc's server list and exit codes, or qmgate's
//     daemon socket with CommitToQueue as the fallback when the daemon is
//     down); QMTPHandler and QMQPHandler are qmail-qmtpd's and
//     qmail-qmqpd's policy on qmgate's protocol servers (rcpthosts,
//     RELAYCLIENT appended to recipients, one qmail-queue run per package);
//     ReadEnv reads tcpserver's environment (TCPREMOTEIP, RELAYCLIENT,
//     DATABYTES...) and StdioConn turns fd 0 and fd 1 into a connection;
//   - conversion of a qmail control directory into qmgate's TOML
//     configuration (FromQmail), with a comment for every setting that could
//     not be carried over.
//
// Deliberate differences from qmail: an empty rcpthosts allows nothing
// (qmail's missing rcpthosts is an open relay), a recipient without '@' is
// refused unless RELAYCLIENT is set, and the message size limit applies to
// QMQP as well when DATABYTES or max_message_bytes says so.
//
// It is not a qmail implementation: there is no queue here, no qmail-send and
// no local delivery.
package qmail
