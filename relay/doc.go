// Package relay is qmgate's hub: it wires the protocol servers (qmtp, qmqp,
// smtp) to the durable queue through policy (who may send where), and the
// queue to the transports (QMTP, QMQP, SMTP, MX with MXPS, Maildir, mbox,
// HTTP webhooks, discard) through an ordered route table and a delivery
// engine that records per-recipient results for retries and bounces.
//
// It is the only package that knows all the others; each of them knows only
// mail types. cmd/qmgate is flags and wiring on top of it.
package relay
