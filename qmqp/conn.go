package qmqp

import (
	"errors"
	"io"
	"net"
	"syscall"
	"time"
)

// deadliner is the part of net.Conn that sets deadlines. A stream without
// it (stdin/stdout under tcpserver) gets no per-I/O or session deadline.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// deadlineConn gives every Read and Write its own deadline, never later than
// the session's end. A per-I/O timeout bounds a stalled peer without capping
// a large message that keeps flowing; the session end caps everything
// (QMQP: "a session should last at most 1 hour").
type deadlineConn struct {
	rw           io.ReadWriter
	dl           deadliner // nil when rw has no deadlines
	readTimeout  time.Duration
	writeTimeout time.Duration
	end          time.Time // zero: no session cap

	writeErr error // the first error of the connection's own Write
}

func newDeadlineConn(rw io.ReadWriter, rto, wto time.Duration, end time.Time) *deadlineConn {
	c := &deadlineConn{rw: rw, readTimeout: rto, writeTimeout: wto, end: end}
	c.dl, _ = rw.(deadliner)
	return c
}

func (c *deadlineConn) deadline(d time.Duration) time.Time {
	var t time.Time
	if d > 0 {
		t = time.Now().Add(d)
	}
	if !c.end.IsZero() && (t.IsZero() || c.end.Before(t)) {
		t = c.end
	}
	return t
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if c.dl != nil {
		// An error means the stream has no deadlines after all (a pipe
		// some callers pass); it still works, without timeouts.
		_ = c.dl.SetReadDeadline(c.deadline(c.readTimeout))
	}
	return c.rw.Read(p)
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	if c.dl != nil {
		_ = c.dl.SetWriteDeadline(c.deadline(c.writeTimeout))
	}
	n, err := c.rw.Write(p)
	if err != nil && c.writeErr == nil {
		c.writeErr = err
	}
	return n, err
}

// Linger bounds for closing a connection: after the reply the server
// half-closes and reads what the client may still send, so that unread input
// does not make the kernel answer with a reset that could destroy the reply
// in flight. A well-behaved client closes at once; a misbehaving one gets at
// most this much time and input.
const (
	lingerTimeout = 2 * time.Second
	lingerBytes   = 64 << 10
)

type closeWriter interface{ CloseWrite() error }

// lingerClose half-closes rw, drains a bounded amount of input, and closes
// it, as far as rw supports each step.
func lingerClose(rw io.ReadWriter) {
	if cw, ok := rw.(closeWriter); ok {
		if cw.CloseWrite() == nil {
			if dl, ok := rw.(deadliner); ok {
				_ = dl.SetReadDeadline(time.Now().Add(lingerTimeout))
			}
			_, _ = io.CopyN(io.Discard, rw, lingerBytes)
		}
	}
	closeRW(rw)
}

// closeRW closes rw if it can be closed.
func closeRW(rw io.ReadWriter) {
	if c, ok := rw.(io.Closer); ok {
		_ = c.Close()
	}
}

// isReset reports whether err is the peer resetting or vanishing, which is
// routine for QMQP: Postfix's qmqp-source closes with SO_LINGER 0 right after
// reading the reply.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// isTimeout reports whether err is a deadline expiring.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
