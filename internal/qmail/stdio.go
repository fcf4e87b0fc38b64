package qmail

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// StdioConn returns the connection of a program that tcpserver or inetd
// runs with the client on fd 0 and fd 1 (qmail-qmtpd's and qmail-qmqpd's
// interface). When in and out are the same socket, as tcpserver arranges,
// it is that socket as a net.Conn, with its addresses, deadlines and
// half-close. Otherwise (pipes, a terminal, tests) it is a net.Conn that
// reads in and writes out; deadlines work where the files support them
// (pipes do) and are ignored elsewhere.
func StdioConn(in, out *os.File) net.Conn {
	if sameFile(in, out) {
		if c, err := net.FileConn(in); err == nil {
			return c
		}
	}
	return &stdioConn{in: in, out: out}
}

func sameFile(a, b *os.File) bool {
	sa, err1 := a.Stat()
	sb, err2 := b.Stat()
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

type stdioConn struct {
	in, out *os.File
}

func (c *stdioConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *stdioConn) Write(p []byte) (int, error) { return c.out.Write(p) }

func (c *stdioConn) Close() error {
	err := c.in.Close()
	if err2 := c.out.Close(); err == nil {
		err = err2
	}
	return err
}

// CloseWrite ends the output, so the client sees EOF after the reply.
func (c *stdioConn) CloseWrite() error { return c.out.Close() }

func (c *stdioConn) LocalAddr() net.Addr  { return stdioAddr{} }
func (c *stdioConn) RemoteAddr() net.Addr { return stdioAddr{} }

func (c *stdioConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	c.SetWriteDeadline(t)
	return nil
}

func (c *stdioConn) SetReadDeadline(t time.Time) error {
	return ignoreNoDeadline(c.in.SetReadDeadline(t))
}

func (c *stdioConn) SetWriteDeadline(t time.Time) error {
	return ignoreNoDeadline(c.out.SetWriteDeadline(t))
}

func ignoreNoDeadline(err error) error {
	if errors.Is(err, os.ErrNoDeadline) || errors.Is(err, syscall.EPERM) {
		return nil
	}
	return err
}

type stdioAddr struct{}

func (stdioAddr) Network() string { return "stdio" }
func (stdioAddr) String() string  { return "stdio" }

// StreamConn is a net.Conn over any reader and writer, for callers that
// have no files (tests, embedding). It has no deadlines and no addresses.
func StreamConn(r io.Reader, w io.Writer) net.Conn {
	if rf, ok := r.(*os.File); ok {
		if wf, ok := w.(*os.File); ok {
			return StdioConn(rf, wf)
		}
	}
	return &streamConn{r: r, w: w}
}

type streamConn struct {
	r io.Reader
	w io.Writer
}

func (c *streamConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *streamConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c *streamConn) Close() error {
	if cl, ok := c.w.(io.Closer); ok {
		cl.Close()
	}
	if cl, ok := c.r.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}
func (c *streamConn) LocalAddr() net.Addr                { return stdioAddr{} }
func (c *streamConn) RemoteAddr() net.Addr               { return stdioAddr{} }
func (c *streamConn) SetDeadline(t time.Time) error      { return nil }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return nil }
