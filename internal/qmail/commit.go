package qmail

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"

	"github.com/qmgate/qmgate/internal/privdrop"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
)

// CommitToQueue commits a message into qmgate's queue directory dir itself,
// for when the daemon that owns the queue is not running (the last resort
// of sendmail's spool mode and of qmail-queue). It returns the queue ID
// once the message is durable. body yields size bytes.
//
// The directory must exist: it belongs to the daemon, and creating it as
// whoever runs sendmail would make a queue the daemon cannot use. Only the
// queue's owner can write it (the queue keeps its files private); root
// first becomes that owner, so root's cron mail does not leave files the
// daemon cannot read. Any other user gets a temporary failure. A daemon
// that holds the queue (queue.ErrLocked) is a temporary failure too: its
// socket is the way in.
//
// Becoming the owner changes the identity of the whole process, so
// CommitToQueue is for short-lived commands like sendmail, at their end.
func CommitToQueue(ctx context.Context, dir string, env mail.Envelope, body io.Reader, size int64) (string, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return "", err
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%s is not a directory", dir)
	}
	if err := becomeOwner(st); err != nil {
		return "", err
	}
	q, err := queue.Open(dir, queue.Options{Passive: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		if errors.Is(err, queue.ErrLocked) {
			return "", ErrQueueBusy
		}
		return "", err
	}
	id, err := q.Put(ctx, env, io.LimitReader(body, size))
	if cerr := q.Close(); err == nil && cerr != nil {
		return "", cerr
	}
	return id, err
}

// ErrQueueBusy is CommitToQueue's error when a running daemon holds the
// queue: its QMQP socket is the way in.
var ErrQueueBusy = errors.New("the queue is held by a running daemon, whose QMQP socket did not take the message")

// BecomeQueueOwner makes root take the uid and gid of the owner of the queue
// directory dir, so that what it writes there stays the daemon's; other
// users stay who they are. It changes the identity of the whole process: for
// short-lived commands (sendmail, qmgate queue) only.
func BecomeQueueOwner(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	return becomeOwner(st)
}

// becomeOwner makes root take the uid and gid of the queue directory's
// owner. Other users stay who they are: the file permissions decide.
func becomeOwner(st os.FileInfo) error {
	if os.Geteuid() != 0 {
		return nil
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || sys.Uid == 0 {
		return nil
	}
	return privdrop.To(int(sys.Uid), int(sys.Gid))
}
