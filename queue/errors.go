package queue

import (
	"errors"

	"github.com/qmgate/qmgate/mail"
)

var (
	// ErrLocked: another process holds the queue directory (Open).
	ErrLocked = errors.New("queue: directory is in use by another process")
	// ErrNotFound: no queued message has the ID (admin operations).
	ErrNotFound = errors.New("no such message in the queue")
	// ErrClosed: the queue is closed (Ready, Wait, and the causes of
	// NewMessage's and Commit's errors).
	ErrClosed = errors.New("queue: closed")

	errClosed = ErrClosed
)

// Error is a storage failure: a full disk, an I/O error, a failed fsync, a
// missing directory. It is always temporary: as a mail.Status (errors.As,
// mail.StatusOf) it is mail.StatusQueueTrouble, so clients see qmail's
// "qq write error or disk full (#4.3.0)", while errors.Unwrap gives the
// cause for the log.
type Error struct {
	Op  string // what the queue was doing: "write", "commit", "open", ...
	Err error
}

func (e *Error) Error() string { return "queue: " + e.Op + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// As lets errors.As (and so mail.StatusOf) see the error as the temporary
// mail.StatusQueueTrouble, whatever the cause.
func (e *Error) As(target any) bool {
	switch t := target.(type) {
	case *mail.Status:
		*t = mail.StatusQueueTrouble
		return true
	case **mail.Status:
		s := mail.StatusQueueTrouble
		*t = &s
		return true
	}
	return false
}

// Temporary reports true: a storage failure never refuses mail for good.
func (e *Error) Temporary() bool { return true }
