package qmail

import (
	"context"
	"io"
	"strconv"

	"github.com/qmgate/qmgate/mail"
)

// A Sink takes messages the way qmail-queue does (qmail-queue(8)): the
// message first, then the envelope. The hub's handlers commit every
// accepted message to one: ProgramSink runs the program of $QMAILQUEUE;
// qmgate's durable queue and its daemon's QMQP socket are sinks too.
type Sink interface {
	// Begin starts a message. The error is a mail.Status.
	Begin(ctx context.Context) (Message, error)
}

// Message is one message on its way into a Sink. Write fails only when the
// sink can take nothing more (qmgate's queue on a storage error), and the
// writer then aborts; a program's Write never fails (as qmail's qmail_put),
// its trouble is reported by Commit. After Commit or Abort the Message is
// finished.
type Message interface {
	io.Writer
	// Commit ends the message with its envelope and returns once the sink
	// has accepted or refused it. Result.Exit is the qmail-queue exit code
	// that matches the outcome.
	Commit(ctx context.Context, env mail.Envelope) Result
	// Abort drops the message: nothing is committed.
	Abort()
}

// ProgramSink runs a qmail-queue program for each message (Queue).
type ProgramSink struct{ Queue *Queue }

// Begin starts the program.
func (s ProgramSink) Begin(ctx context.Context) (Message, error) {
	j, err := s.Queue.Start(ctx)
	if err != nil {
		return nil, err
	}
	return programMessage{j}, nil
}

type programMessage struct{ j *Job }

func (m programMessage) Write(p []byte) (int, error) { return m.j.Write(p) }
func (m programMessage) Commit(_ context.Context, env mail.Envelope) Result {
	res := m.j.Commit(env)
	if res.Status.IsAccept() && res.PID > 0 {
		res.ID = strconv.Itoa(res.PID)
	}
	return res
}
func (m programMessage) Abort() { m.j.Abort() }
