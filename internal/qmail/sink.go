package qmail

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"strconv"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
)

// A Sink takes messages the way qmail-queue does: the message first, then
// the envelope. qmgate's stand-ins for qmail-qmtpd, qmail-qmqpd and
// qmail-queue put their messages into one: ProgramSink runs the program of
// $QMAILQUEUE, DaemonSink hands the message to qmgate's daemon.
type Sink interface {
	// Begin starts a message. The error is a mail.Status.
	Begin(ctx context.Context) (Message, error)
}

// Message is one message on its way into a Sink. Write never fails (as
// qmail's qmail_put): trouble is reported by Commit. After Commit or Abort
// the Message is finished.
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
	return m.j.Commit(env)
}
func (m programMessage) Abort() { m.j.Abort() }

// DefaultQMQPTimeout is qmail-qmqpc's timeout for each read and write.
const DefaultQMQPTimeout = 60 * time.Second

// QMQPSink hands each message on over QMQP, the way qmail-qmqpc does: to
// Servers in order, failing over only when a connect fails. It is
// qmail-qmqpc itself (Servers from control/qmqpservers), and the way into
// qmgate's daemon for qmail-queue, qmtpd and qmqpd (Servers holding the
// daemon's local socket "unix:/path", which any user may reach: the socket's
// permissions decide). With QueueDir set, a message for which no server
// could be connected is committed into that queue directory itself if this
// process may (CommitToQueue: the queue's owner, or root, which becomes the
// owner), for when the daemon is not running. The message is spooled to an
// unlinked temporary file first, because QMQP sends its length up front.
//
// Exit codes in the Result are qmail-qmqpc's: 0 accepted, 31 refused for
// good, 71 refused for now, 72/73 no connection (timeout/refused), 74 the
// connection failed after it was made, 54 the message could not be read
// back, 53 the temporary file could not be written or the direct commit
// failed, 55 no server configured.
type QMQPSink struct {
	// Servers are tried in order (qmqp.Client's forms).
	Servers []string
	// QueueDir is qmgate's queue directory for direct commits; "" disables
	// them.
	QueueDir string
	// TempDir holds the spooled message; "" means os.TempDir().
	TempDir string
	// ConnectTimeout bounds each connect (qmqp.DefaultConnectTimeout, 10 s
	// as qmail-qmqpc, when 0).
	ConnectTimeout time.Duration
	// Timeout bounds each read and write (DefaultQMQPTimeout when 0).
	Timeout time.Duration
	// Commit replaces CommitToQueue (tests); nil means CommitToQueue.
	Commit func(ctx context.Context, dir string, env mail.Envelope, body io.Reader, size int64) (string, error)
}

// Begin makes the temporary file.
func (s *QMQPSink) Begin(ctx context.Context) (Message, error) {
	f, err := os.CreateTemp(s.TempDir, "qmgate-msg-")
	if err != nil {
		return nil, mail.StatusQueueTrouble
	}
	os.Remove(f.Name())
	return &daemonMessage{s: s, f: f}, nil
}

type daemonMessage struct {
	s    *QMQPSink
	f    *os.File
	n    int64
	werr error
	done bool
}

func (m *daemonMessage) Write(p []byte) (int, error) {
	if m.werr == nil {
		var n int
		n, m.werr = m.f.Write(p)
		m.n += int64(n)
	}
	return len(p), nil
}

func (m *daemonMessage) Abort() {
	if !m.done {
		m.done = true
		m.f.Close()
	}
}

// Commit sends the spooled message.
func (m *daemonMessage) Commit(ctx context.Context, env mail.Envelope) Result {
	if m.done {
		return Result{Status: mail.StatusTempFailure, Exit: ExitBug}
	}
	defer m.Abort()
	if m.werr != nil {
		return Result{Status: StatusForExit(ExitWriteError, nil), Exit: ExitWriteError}
	}
	timeout := m.s.Timeout
	if timeout <= 0 {
		timeout = DefaultQMQPTimeout
	}
	body := func() io.Reader { return io.NewSectionReader(m.f, 0, m.n) }

	res := Result{Status: StatusForExit(ExitConfig, nil), Exit: ExitConfig}
	if len(m.s.Servers) > 0 {
		c := &qmqp.Client{Servers: m.s.Servers, ConnectTimeout: m.s.ConnectTimeout, IOTimeout: timeout}
		r, err := c.Send(ctx, env, body(), m.n)
		var ce *qmqp.ConnectError
		switch {
		case err == nil:
			return Result{Status: r.Status, Exit: ExitForStatus(r.Status)}
		case errors.Is(err, qmqp.ErrInvalidEnvelope):
			return Result{Status: r.Status, Exit: ExitRefused}
		case errors.As(err, &ce):
			res = Result{Status: StatusForExit(ExitConnectRefused, nil), Exit: ExitConnectRefused}
			if ce.Timeout() {
				res = Result{Status: StatusForExit(ExitConnectTimeout, nil), Exit: ExitConnectTimeout}
			}
		default:
			var te *qmqp.TransferError
			if errors.As(err, &te) {
				// It may have been queued: trying the queue directory now
				// could make a duplicate, qmail-qmqpc's rule applies.
				return Result{Status: StatusForExit(ExitCommFailed, nil), Exit: ExitCommFailed}
			}
			return Result{Status: StatusForExit(ExitReadError, nil), Exit: ExitReadError}
		}
	}
	if m.s.QueueDir == "" {
		return res
	}
	commit := m.s.Commit
	if commit == nil {
		commit = CommitToQueue
	}
	id, err := commit(ctx, m.s.QueueDir, env, body(), m.n)
	if err != nil {
		var st mail.Status
		if errors.As(err, &st) && st.IsPermanent() {
			return Result{Status: st, Exit: ExitRefused}
		}
		if len(m.s.Servers) > 0 && (errors.Is(err, ErrQueueBusy) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission)) {
			// The queue is not ours to write (the daemon holds it, it is
			// not there, it belongs to another user): the failed
			// connection is the error to report.
			return res
		}
		return Result{Status: StatusForExit(ExitWriteError, nil), Exit: ExitWriteError}
	}
	return Result{Status: mail.OK("ok " + strconv.FormatInt(time.Now().Unix(), 10) + " queued as " + id), Exit: ExitOK}
}
