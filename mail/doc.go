// Package mail holds the plain types every other qmgate package shares: the
// envelope, address helpers (domain, rcpthosts matching, VERP, SMTP quoting),
// the one Status type that every protocol edge renders (QMTP/QMQP reply, SMTP
// reply, DSN status), qmail's Received line, and a body reader that enforces
// the size and hop limits while a message streams through.
//
// It does no I/O of its own: it knows nothing of sockets or disks, so it can be
// used and tested alone.
package mail
