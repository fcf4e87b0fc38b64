package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/qmgate/qmgate/internal/qmail"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/queue"
)

// The sinks the handlers commit to. Each takes a message the way
// qmail-queue does, body first, then the envelope (qmail.Sink): QueueSink
// is qmgate's durable queue, QMQPSink hands the message to a QMQP server
// (qmgate's daemon socket, or qmail-qmqpc's servers), and qmail.ProgramSink
// runs $QMAILQUEUE's program.

// QueueSink commits messages to the durable queue; the reply carries the
// queue ID. Storage errors are logged to Log (nil: not logged) and reach
// the client as a temporary failure without their text.
type QueueSink struct {
	Queue *queue.Queue
	Log   *slog.Logger
}

// Begin starts a message in the queue.
func (s QueueSink) Begin(ctx context.Context) (qmail.Message, error) {
	w, err := s.Queue.NewMessage(ctx)
	if err != nil {
		s.logError("queue: cannot start a message", err)
		return nil, err
	}
	return &queueMessage{w: w, s: s}, nil
}

func (s QueueSink) logError(msg string, err error) {
	if s.Log != nil {
		s.Log.Error(msg, "err", err)
	}
}

// queueMessage is a queue.Writer as a qmail.Message. Its Write and ReadFrom
// fail on a storage error (and ReadFrom passes on the body's own error, a
// limit say), so the handler stops reading into a message that cannot be
// committed.
type queueMessage struct {
	w    *queue.Writer
	s    QueueSink
	cont *queue.Continuation // from a trusted peer's hand-off
}

// continuer is a sink message that can continue a handed-off message
// where the peer left it (QueueSink's).
type continuer interface {
	SetContinuation(queue.Continuation)
}

func (m *queueMessage) SetContinuation(c queue.Continuation) { m.cont = &c }

func (m queueMessage) Write(p []byte) (int, error)         { return m.w.Write(p) }
func (m queueMessage) ReadFrom(r io.Reader) (int64, error) { return m.w.ReadFrom(r) }
func (m queueMessage) Abort()                              { m.w.Abort() }
func (m queueMessage) SetPrefix(p []byte) error            { return m.w.SetPrefix(p) }

func (m queueMessage) Commit(ctx context.Context, env mail.Envelope) qmail.Result {
	id, err := m.w.Commit(ctx, env)
	if err != nil {
		st := mail.StatusOf(err)
		if st.IsTemporary() {
			m.s.logError("queue: commit failed", err)
		}
		return qmail.Result{Status: st, Exit: qmail.ExitForStatus(st)}
	}
	if m.cont != nil {
		// Committed already: should this fail, the message stays queued
		// as a fresh arrival, which loses nothing.
		if err := m.s.Queue.Continue(ctx, id, *m.cont); err != nil {
			m.s.logError("queue: cannot continue a handed-off message's arrival and attempts", err)
		}
	}
	return qmail.Result{Status: acceptText(id), ID: id}
}

// DefaultQMQPTimeout is qmail-qmqpc's timeout for each read and write.
const DefaultQMQPTimeout = 60 * time.Second

// QMQPSink hands each message on over QMQP, the way qmail-qmqpc does: to
// Servers in order, failing over only when a connect fails. It is
// qmail-qmqpc itself (Servers from control/qmqpservers), and the way into
// qmgate's daemon for qmail-queue, qmtpd and qmqpd (Servers holding the
// daemon's local socket "unix:/path", which any user may reach: the socket's
// permissions and [qmqp] unix_allow decide). With QueueDir set, a message
// for which no server could be connected is committed into that queue
// directory itself if this process may (CommitToQueue: the queue's owner,
// or root, which becomes the owner), for when the daemon is not running.
// The message is spooled to an unlinked temporary file first, because QMQP
// sends its length up front.
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
func (s *QMQPSink) Begin(ctx context.Context) (qmail.Message, error) {
	f, err := os.CreateTemp(s.TempDir, "qmgate-msg-")
	if err != nil {
		return nil, mail.StatusQueueTrouble
	}
	os.Remove(f.Name())
	return &spooledMessage{s: s, f: f}, nil
}

type spooledMessage struct {
	s    *QMQPSink
	f    *os.File
	n    int64
	werr error
	done bool
}

func (m *spooledMessage) Write(p []byte) (int, error) {
	if m.werr == nil {
		var n int
		n, m.werr = m.f.Write(p)
		m.n += int64(n)
	}
	return len(p), nil
}

func (m *spooledMessage) Abort() {
	if !m.done {
		m.done = true
		m.f.Close()
	}
}

// exitResult is the Result for a qmail-qmqpc exit code with qmail's text,
// and the plain reason for the operator.
func exitResult(code int, problem string) qmail.Result {
	return qmail.Result{Status: qmail.StatusForExit(code, nil), Exit: code, Problem: problem}
}

// Commit sends the spooled message.
func (m *spooledMessage) Commit(ctx context.Context, env mail.Envelope) qmail.Result {
	if m.done {
		return qmail.Result{Status: mail.StatusTempFailure, Exit: qmail.ExitBug}
	}
	defer m.Abort()
	if m.werr != nil {
		return exitResult(qmail.ExitWriteError, "could not write the message to a temporary file: "+m.werr.Error())
	}
	timeout := m.s.Timeout
	if timeout <= 0 {
		timeout = DefaultQMQPTimeout
	}
	body := func() io.Reader { return io.NewSectionReader(m.f, 0, m.n) }

	res := exitResult(qmail.ExitConfig, "no QMQP server to send to (for qmgate's daemon: no unix: address in [qmqp] listen)")
	if len(m.s.Servers) > 0 {
		c := &qmqp.Client{Servers: m.s.Servers, ConnectTimeout: m.s.ConnectTimeout, IOTimeout: timeout}
		r, err := c.Send(ctx, env, body(), m.n)
		var ce *qmqp.ConnectError
		var te *qmqp.TransferError
		switch {
		case err == nil:
			return qmail.Result{Status: r.Status, Exit: qmail.ExitForStatus(r.Status)}
		case errors.Is(err, qmqp.ErrInvalidEnvelope):
			return qmail.Result{Status: r.Status, Exit: qmail.ExitRefused}
		case errors.As(err, &ce) && ce.Timeout():
			res = exitResult(qmail.ExitConnectTimeout, "no QMQP server answered in time ("+strings.Join(m.s.Servers, ", ")+"): is the daemon running?")
		case ce != nil:
			res = exitResult(qmail.ExitConnectRefused, "could not connect to "+strings.Join(m.s.Servers, ", ")+
				" ("+cmp.Or(mail.Cause(err, 0), "connection failed")+"): is the daemon running?")
		case errors.As(err, &te):
			// It may have been queued: trying the queue directory now
			// could make a duplicate, qmail-qmqpc's rule applies.
			return exitResult(qmail.ExitCommFailed, "the connection to the QMQP server failed during the transfer ("+
				cmp.Or(mail.Cause(err, timeout), "connection lost")+"); the message may have been queued, so it was not sent again")
		default:
			return exitResult(qmail.ExitReadError, "could not read the message back from its temporary file")
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
			return qmail.Result{Status: st, Exit: qmail.ExitRefused}
		}
		why := directProblem(m.s.QueueDir, err)
		if len(m.s.Servers) > 0 && (errors.Is(err, ErrQueueBusy) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission)) {
			// The queue is not ours to write (the daemon holds it, it is
			// not there, it belongs to another user): the failed
			// connection is the exit code to report, with both reasons.
			res.Problem += "; and " + why
			return res
		}
		if len(m.s.Servers) == 0 {
			why = res.Problem + "; and " + why
		}
		return exitResult(qmail.ExitWriteError, why)
	}
	return qmail.Result{Status: mail.OK("ok " + strconv.FormatInt(time.Now().Unix(), 10) + " queued as " + id), ID: id}
}

// directProblem words why a direct commit into the queue directory dir
// failed, for the operator.
func directProblem(dir string, err error) string {
	switch {
	case errors.Is(err, ErrQueueBusy):
		return "the queue directory " + dir + " is locked (a running daemon holds it)"
	case errors.Is(err, fs.ErrNotExist):
		return "the queue directory " + dir + " does not exist"
	case errors.Is(err, fs.ErrPermission):
		return "this user (uid " + strconv.Itoa(os.Getuid()) + ") may not write the queue directory " + dir + " directly: only its owner or root may"
	}
	return "could not write the message into the queue directory " + dir + ": " + err.Error()
}

// CommitToQueue commits a message into qmgate's queue directory dir itself,
// for when the daemon that owns the queue is not running (the last resort
// of sendmail's spool mode and of qmail-queue). It returns the queue ID
// once the message is durable. body yields size bytes.
//
// The directory must exist: it belongs to the daemon, and creating it as
// whoever runs sendmail would make a queue the daemon cannot use. Only the
// queue's owner can write it (the queue keeps its files private); root
// first becomes that owner (qmail.BecomeQueueOwner), so root's cron mail
// does not leave files the daemon cannot read. Any other user gets a
// temporary failure. A daemon that holds the queue (queue.ErrLocked) is a
// temporary failure too: its socket is the way in.
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
	if err := qmail.BecomeQueueOwner(dir); err != nil {
		return "", err
	}
	q, err := openSpool(ctx, dir)
	if err != nil {
		return "", err
	}
	id, err := q.Put(ctx, env, io.LimitReader(body, size))
	if cerr := q.Close(); err == nil && cerr != nil {
		return "", cerr
	}
	return id, err
}

// ErrQueueBusy is CommitToQueue's error when the queue stayed locked for
// SpoolLockWait: a running daemon holds it (its QMQP socket is the way in,
// and did not take the message), or other commands kept it that long.
var ErrQueueBusy = errors.New("the queue stayed locked (a running daemon holds it and its QMQP socket did not take the message, or other sendmail commands kept it busy)")

// SpoolLockWait bounds how long CommitToQueue waits for the queue's lock.
// Another sendmail spooling at the same moment holds it only for the time
// of one message, so waiting lets both succeed; a daemon holds it for good,
// and then the wait ends in ErrQueueBusy, a temporary failure.
var SpoolLockWait = 10 * time.Second

// spoolLockPoll is how often a locked queue is tried again.
const spoolLockPoll = 20 * time.Millisecond

// openSpool opens the queue passively, waiting up to SpoolLockWait while
// another process holds its lock.
func openSpool(ctx context.Context, dir string) (*queue.Queue, error) {
	deadline := time.Now().Add(SpoolLockWait)
	for {
		q, err := queue.Open(dir, queue.Options{Passive: true, Logger: slog.New(slog.DiscardHandler)})
		if !errors.Is(err, queue.ErrLocked) {
			return q, err
		}
		if time.Now().After(deadline) {
			return nil, ErrQueueBusy
		}
		select {
		case <-ctx.Done():
			return nil, ErrQueueBusy
		case <-time.After(spoolLockPoll):
		}
	}
}
