package qmqp

import (
	"errors"
	"io"
	"net"
	"syscall"
	"time"
)

// deadlineConn gives every Read and Write its own deadline, never later than
// the session's end. A per-I/O timeout bounds a stalled peer without capping
// a large message that keeps flowing; the session end caps everything
// (QMQP: "a session should last at most 1 hour").
type deadlineConn struct {
	net.Conn
	readTimeout  time.Duration
	writeTimeout time.Duration
	end          time.Time // zero: no session cap

	writeErr error // the first error of the connection's own Write
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
	// Errors are ignored: a conn without deadlines (a pipe some callers
	// hand to ServeConn) still works, just without timeouts.
	_ = c.Conn.SetReadDeadline(c.deadline(c.readTimeout))
	return c.Conn.Read(p)
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(c.deadline(c.writeTimeout))
	n, err := c.Conn.Write(p)
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

// lingerClose half-closes c, drains a bounded amount of input, and closes it.
func lingerClose(c net.Conn) {
	if cw, ok := c.(closeWriter); ok {
		if cw.CloseWrite() == nil {
			_ = c.SetReadDeadline(time.Now().Add(lingerTimeout))
			_, _ = io.CopyN(io.Discard, c, lingerBytes)
		}
	}
	_ = c.Close()
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
