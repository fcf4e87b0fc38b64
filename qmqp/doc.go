// Package qmqp implements QMQP, the Quick Mail Queueing Protocol: a server
// that hands each message to a Handler, and a client that sends messages to an
// ordered list of servers.
package qmqp
