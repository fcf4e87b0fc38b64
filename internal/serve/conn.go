package serve

import (
	"errors"
	"io"
	"os"
	"time"
)

// ErrTooSlow is the error of a read that found the client sending slower
// than IOConn.MinRate.
var ErrTooSlow = errors.New("client sends too slowly")

// ErrFirstTimeout is the error of a read past IOConn.First: the client did
// not send its first command or package in time.
var ErrFirstTimeout = errors.New("no command in time")

// deadliner is the part of net.Conn that sets deadlines. A stream without it
// (a pipe, stdin/stdout under tcpserver) gets no deadlines from us.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// Flusher is what IOConn flushes before it waits for input (a
// *bufio.Writer).
type Flusher interface {
	Buffered() int
	Flush() error
}

// Timing holds a connection's clocks: the per-I/O timeouts, the end of the
// session, the deadline for the first command and the minimum data rate.
// It is the part of IOConn that a connection type of its own (the SMTP
// server's) uses directly.
type Timing struct {
	ReadTimeout  time.Duration // per read; 0: none
	WriteTimeout time.Duration // per write; 0: none
	End          time.Time     // end of the session; zero: none
	// First is the deadline for the first command (or package): until
	// Started is called, no read waits past it. Zero: none.
	First time.Time
	// MinRate is the slowest the client may send, in bytes a second,
	// measured over RateWindow from the first byte after the server's last
	// write (so that time a client spends waiting for a reply, or thinking
	// between commands, never counts). 0: no minimum.
	MinRate    int64
	RateWindow time.Duration

	started  bool
	winStart time.Time
	winBytes int64
}

// Started records that the first command arrived; First no longer applies.
func (t *Timing) Started() { t.started = true }

// Deadline returns the deadline for one I/O: now plus timeout, never past
// the session's end nor, before Started, past First.
func (t *Timing) Deadline(timeout time.Duration) time.Time {
	var d time.Time
	if timeout > 0 {
		d = time.Now().Add(timeout)
	}
	for _, e := range [2]time.Time{t.End, t.first()} {
		if !e.IsZero() && (d.IsZero() || e.Before(d)) {
			d = e
		}
	}
	return d
}

func (t *Timing) first() time.Time {
	if t.started {
		return time.Time{}
	}
	return t.First
}

// ReadDone accounts a read of n bytes that ended with err, and returns the
// error to report: ErrFirstTimeout for a timeout at First, ErrTooSlow when
// the rate over the last window fell below MinRate.
func (t *Timing) ReadDone(n int, err error) error {
	if err != nil && !t.started && !t.First.IsZero() && isTimeout(err) && !time.Now().Before(t.First) {
		return ErrFirstTimeout
	}
	if t.MinRate <= 0 || t.RateWindow <= 0 || n <= 0 {
		return err
	}
	now := time.Now()
	if t.winStart.IsZero() {
		t.winStart, t.winBytes = now, int64(n)
		return err
	}
	t.winBytes += int64(n)
	if el := now.Sub(t.winStart); el >= t.RateWindow {
		if float64(t.winBytes) < float64(t.MinRate)*el.Seconds() {
			return ErrTooSlow
		}
		t.winStart, t.winBytes = now, 0
	}
	return err
}

// Wrote resets the rate window: the client may now wait for the reply.
func (t *Timing) Wrote() { t.winStart = time.Time{} }

// IOConn sits between a bufio.Reader/Writer and the connection. Before every
// call that can block on the network it arms the deadline from its Timing,
// so the per-I/O, first-command and session limits need no timer of their
// own and cost one SetDeadline per real read or write, not per byte.
//
// Flush, when set, is flushed before every real read: a bufio.Reader calls
// Read only when it has nothing buffered, which is exactly the moment to
// send pending replies ("flush before you would wait for more input");
// replies to pipelined requests that are already buffered stay batched.
type IOConn struct {
	Timing
	rw    io.ReadWriter
	dl    deadliner // nil when rw has no deadlines
	Flush Flusher

	// WriteErr is the first error of a Write, for a writer whose own
	// errors are hidden behind a buffer.
	WriteErr error
}

// NewIOConn returns an IOConn on rw with the given timing.
func NewIOConn(rw io.ReadWriter, t Timing) *IOConn {
	c := &IOConn{rw: rw, Timing: t}
	c.dl, _ = rw.(deadliner)
	return c
}

// Conn returns the stream the IOConn reads and writes.
func (c *IOConn) Conn() io.ReadWriter { return c.rw }

func (c *IOConn) Read(p []byte) (int, error) {
	if c.Flush != nil && c.Flush.Buffered() > 0 {
		if err := c.Flush.Flush(); err != nil {
			return 0, err
		}
	}
	if c.dl != nil {
		if err := c.dl.SetReadDeadline(c.Deadline(c.ReadTimeout)); err != nil && !c.noDeadline(err) {
			return 0, err
		}
	}
	n, err := c.rw.Read(p)
	return n, c.ReadDone(n, err)
}

func (c *IOConn) Write(p []byte) (int, error) {
	if c.dl != nil {
		if err := c.dl.SetWriteDeadline(c.Deadline(c.WriteTimeout)); err != nil && !c.noDeadline(err) {
			return 0, err
		}
	}
	c.Wrote()
	n, err := c.rw.Write(p)
	if err != nil && c.WriteErr == nil {
		c.WriteErr = err
	}
	return n, err
}

// noDeadline reports whether err says the stream cannot have deadlines at
// all (an *os.File on a blocking descriptor, a pipe), in which case IOConn
// stops trying and the stream works without timeouts.
func (c *IOConn) noDeadline(err error) bool {
	if errors.Is(err, os.ErrNoDeadline) {
		c.dl = nil
		return true
	}
	return false
}
