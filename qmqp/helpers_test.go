package qmqp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// loopback allows 127.0.0.0/8, what most tests need.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// logBuffer collects log output for assertions, safely across goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// delivery is what the recording handler saw of one message.
type delivery struct {
	Body      []byte
	Env       mail.Envelope
	EnvErr    error
	Committed bool
	Info      mail.ConnInfo
}

// recorder is a Handler that behaves like a queue: it reads the body, reads
// the envelope, and commits only if the envelope is acceptable.
type recorder struct {
	mu     sync.Mutex
	got    []delivery
	status mail.Status // reply for committed messages; K when zero
	called chan struct{}
}

func (h *recorder) ServeQMQP(ctx context.Context, req *Request) mail.Status {
	if h.called != nil {
		h.called <- struct{}{}
	}
	body, berr := io.ReadAll(req.Body)
	env, err := req.Envelope()
	d := delivery{Body: body, Env: env, EnvErr: err, Info: *req.Conn}
	st := h.status
	if st == (mail.Status{}) {
		st = mail.OK("ok queued")
	}
	if berr != nil && err == nil {
		err = berr
	}
	if err == nil {
		d.Committed = true
	} else {
		st = mail.StatusOf(err)
	}
	h.mu.Lock()
	h.got = append(h.got, d)
	h.mu.Unlock()
	return st
}

func (h *recorder) deliveries() []delivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]delivery(nil), h.got...)
}

func (h *recorder) committed() int {
	n := 0
	for _, d := range h.deliveries() {
		if d.Committed {
			n++
		}
	}
	return n
}

// startServer serves s on a loopback TCP port until the test ends, then shuts
// it down gracefully and checks Serve's result.
func startServer(t testing.TB, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, s, l)
}

func serveOn(t testing.TB, s *Server, l net.Listener) string {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := testpeer.Recv(t, "Serve to return", 30*time.Second, done); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return l.Addr().String()
}

// exchange sends req on a new connection to addr (network "tcp" or
// "unix"), half-closes, and returns everything the server sent back.
func exchange(t *testing.T, network, addr string, req []byte) []byte {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if len(req) > 0 {
		if _, err := c.Write(req); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	out, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		t.Fatalf("read: %v (got %q)", err, out)
	}
	return out
}

// request builds a QMQP request the way a correct client does.
func request(body, sender string, rcpts ...string) []byte {
	inner := ns(body) + ns(sender)
	for _, r := range rcpts {
		inner += ns(r)
	}
	return []byte(ns(inner))
}

func ns(s string) string { return itoa(len(s)) + ":" + s + "," }

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// stripReceived splits the server's Received line off a body.
func stripReceived(t *testing.T, body []byte) (received string, msg []byte) {
	t.Helper()
	// "Received: from H (IP)\n  by L with QMQP; date\n": two lines.
	i := bytes.IndexByte(body, '\n')
	if i < 0 || !bytes.HasPrefix(body, []byte("Received: from ")) {
		t.Fatalf("body does not start with a Received line: %q", body)
	}
	j := bytes.IndexByte(body[i+1:], '\n')
	if j < 0 {
		t.Fatalf("Received line incomplete: %q", body)
	}
	received = string(body[:i+1+j+1])
	if !strings.Contains(received, " with QMQP; ") {
		t.Fatalf("Received line %q lacks \"with QMQP\"", received)
	}
	return received, body[i+1+j+1:]
}

// settleGoroutines waits until no goroutine of a server is left (one with
// a Server method, lingerClose or the connection wrapper on its stack) and
// the goroutine count is back to at most base, and fails with a dump if that
// never happens. The count alone is not trusted: the runtime may start
// goroutines of its own meanwhile.
func settleGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "qmqp.(*Server).") || strings.Contains(g, "qmqp.lingerClose") ||
				strings.Contains(g, "qmqp.(*deadlineConn)") {
				leaked = append(leaked, g)
			}
		}
		n := runtime.NumGoroutine()
		if len(leaked) == 0 && n <= base {
			return
		}
		if time.Now().After(deadline) {
			if len(leaked) > 0 {
				t.Fatalf("server goroutines left:\n%s", strings.Join(leaked, "\n\n"))
			}
			t.Logf("%d goroutines, %d before (none of them a server's):\n%s", n, base, buf)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
