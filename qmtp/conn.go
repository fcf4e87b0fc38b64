package qmtp

import (
	"bufio"
	"errors"
	"io"
	"os"
	"time"
)

// deadliner is the part of net.Conn that sets deadlines. A stream without it
// (a pipe, stdin/stdout) gets no per-I/O or session deadlines from us.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// ioConn sits between a bufio.Reader/Writer and the connection. Before every
// call that can block on the network it arms the deadline, min(now+timeout,
// end of session), so the per-I/O and session limits need no timer of their
// own and cost one SetDeadline per real read or write, not per byte.
//
// On the server side it also flushes the pending replies before every real
// read: the bufio.Reader calls Read only when it has nothing buffered, which
// is exactly the moment the QMTP rule "flush before you would wait for more
// input" asks for (PROTOCOLS.md 8.4). Replies to pipelined packages that are
// already buffered stay batched.
type ioConn struct {
	rw           io.ReadWriter
	dl           deadliner // nil when rw has no deadlines
	readTimeout  time.Duration
	writeTimeout time.Duration
	end          time.Time     // session end; zero for none
	flush        *bufio.Writer // flushed before every read; may be nil
}

func newIOConn(rw io.ReadWriter, rto, wto time.Duration, end time.Time) *ioConn {
	c := &ioConn{rw: rw, readTimeout: rto, writeTimeout: wto, end: end}
	c.dl, _ = rw.(deadliner)
	return c
}

func (c *ioConn) deadline(timeout time.Duration) time.Time {
	var d time.Time
	if timeout > 0 {
		d = time.Now().Add(timeout)
	}
	if !c.end.IsZero() && (d.IsZero() || c.end.Before(d)) {
		d = c.end
	}
	return d
}

func (c *ioConn) Read(p []byte) (int, error) {
	if c.flush != nil && c.flush.Buffered() > 0 {
		if err := c.flush.Flush(); err != nil {
			return 0, err
		}
	}
	if c.dl != nil {
		if err := c.dl.SetReadDeadline(c.deadline(c.readTimeout)); err != nil {
			if !c.noDeadline(err) {
				return 0, err
			}
		}
	}
	return c.rw.Read(p)
}

func (c *ioConn) Write(p []byte) (int, error) {
	if c.dl != nil {
		if err := c.dl.SetWriteDeadline(c.deadline(c.writeTimeout)); err != nil {
			if !c.noDeadline(err) {
				return 0, err
			}
		}
	}
	return c.rw.Write(p)
}

// noDeadline reports whether err says the stream cannot have deadlines at all
// (an *os.File on a blocking descriptor), in which case we stop trying.
func (c *ioConn) noDeadline(err error) bool {
	if errors.Is(err, os.ErrNoDeadline) {
		c.dl = nil
		return true
	}
	return false
}
