// Package relay is qmgate's hub: it wires the protocol servers (qmtp, qmqp,
// smtp) through policy (who may send what where: policy.go) and the handlers
// (handlers.go) to a sink (sink.go: the durable queue, the daemon's QMQP
// socket, or $QMAILQUEUE's program), and the queue to the transports (QMTP,
// QMQP, SMTP, MX with MXPS, Maildir, mbox, HTTP webhooks, discard) through
// an ordered route table and a delivery engine that records per-recipient
// results for retries and bounces.
//
// `qmgate serve` (Hub, hub.go) and the tcpserver drop-ins `qmgate qmtpd` and
// `qmgate qmqpd` (DropIn, servers.go) build their servers, handlers and
// policy through the same code; they differ only in the sink and in where
// the connection's facts come from (the socket, or tcpserver's
// environment).
//
// It is the only package that knows all the others; each of them knows only
// mail types. cmd/qmgate is flags and wiring on top of it.
package relay
