package smtp

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

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

// BenchmarkSessionLikeSmtpSource runs whole sessions the way Postfix's
// smtp-source does (a connection per message, no pipelining: greeting,
// EHLO, MAIL, RCPT, DATA, 2 KB body, QUIT, each waiting for its reply)
// from 10 clients, and reports the process's CPU (server and the small
// client together) per message.
func BenchmarkSessionLikeSmtpSource(b *testing.B) {
	srv := &Server{Handler: discardHandler{}, Hostname: "mx.test", ErrorLog: slog.New(slog.DiscardHandler)}
	addr := startServer(b, srv)
	body := strings.ReplaceAll(benchMessage(2048), "\n", "\r\n")
	cmds := []string{"EHLO client.test\r\n", "MAIL FROM:<a@b.example>\r\n", "RCPT TO:<c@d.example>\r\n", "DATA\r\n", body + ".\r\n", "QUIT\r\n"}
	var ru0, ru1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	w0 := writeCalls()
	b.SetParallelism(5) // 10 clients on 2 processors
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		for pb.Next() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Error(err)
				return
			}
			r := bufio.NewReader(c)
			readReply := func() error {
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return err
					}
					if len(line) < 4 || line[3] != '-' {
						return nil
					}
				}
			}
			err = readReply()
			for _, cmd := range cmds {
				if err != nil {
					break
				}
				if _, err = io.WriteString(c, cmd); err == nil {
					err = readReply()
				}
			}
			c.Read(buf) // the server closes
			c.Close()
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
	b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-us/msg")
	if w0 >= 0 {
		// The client's own 7 writes per session included.
		b.ReportMetric(float64(writeCalls()-w0)/float64(b.N), "writes/msg")
	}
}

// writeCalls is the process's count of write system calls so far (Linux's
// /proc/self/io), or -1.
func writeCalls() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}
