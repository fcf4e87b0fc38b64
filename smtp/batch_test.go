package smtp

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"github.com/qmgate/qmgate/mail"
)

// writeCounter counts the writes the server makes on its connection.
type writeCounter struct {
	net.Conn
	writes atomic.Int32
}

func (c *writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestRepliesWrittenTogether: the lines of a multi-line reply, and the
// replies to pipelined commands (RFC 2920), leave in one write, sent once
// the server would wait for more input; nothing is held back past that.
func TestRepliesWrittenTogether(t *testing.T) {
	h := &recHandler{}
	srv := &Server{Handler: h, Hostname: "mx.test", ErrorLog: quietLog(t)}
	a, b := net.Pipe()
	wc := &writeCounter{Conn: a}
	done := make(chan error, 1)
	go func() {
		done <- srv.ServeConn(context.Background(), wc, &mail.ConnInfo{RemoteHost: "tcpremote.example"})
	}()
	c := &rawClient{t: t}
	c.useConn(b)
	c.expect("220")
	step := func(what string, want int32, f func()) {
		t.Helper()
		before := wc.writes.Load()
		f()
		if got := wc.writes.Load() - before; got != want {
			t.Errorf("%s: %d writes, want %d", what, got, want)
		}
	}
	step("EHLO", 1, func() {
		if lines := c.cmd("EHLO x", "250"); len(lines) < 4 {
			t.Errorf("EHLO reply %q", lines)
		}
	})
	step("pipelined MAIL, RCPT, RCPT, DATA", 1, func() {
		c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<1@d.example>\r\nRCPT TO:<2@d.example>\r\nDATA\r\n")
		c.expect("250")
		c.expect("250")
		c.expect("250")
		c.expect("354")
	})
	step("end of data and QUIT", 1, func() {
		c.send("hello\r\n.\r\nQUIT\r\n")
		c.expect("250")
		c.expect("221")
	})
	b.Close()
	if err := <-done; err != nil {
		t.Errorf("ServeConn: %v", err)
	}
	if m := h.messages(); len(m) != 1 || len(m[0].env.Recipients) != 2 {
		t.Errorf("messages %+v", m)
	}
}
