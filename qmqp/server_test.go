package qmqp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// mailfront's tests/qmqp-echo request: body "test\n", sender a@example.com,
// one recipient b@example.com.
const mailfrontRequest = "42:5:test\n,13:a@example.com,13:b@example.com,,"

func TestMailfrontExample(t *testing.T) {
	h := &recorder{}
	s := &Server{Handler: h, Allow: loopback, Hostname: "hub.example", ErrorLog: (&logBuffer{}).logger()}
	addr := startServer(t, s)
	reply := exchange(t, "tcp", addr, []byte(mailfrontRequest))
	if string(reply) != ns("Kok queued") {
		t.Fatalf("reply %q", reply)
	}
	d := h.deliveries()
	if len(d) != 1 || !d[0].Committed {
		t.Fatalf("deliveries %+v", d)
	}
	rcv, msg := stripReceived(t, d[0].Body)
	if string(msg) != "test\n" {
		t.Errorf("message %q", msg)
	}
	if !strings.HasPrefix(rcv, "Received: from unknown (127.0.0.1)\n  by hub.example with QMQP; ") {
		t.Errorf("Received line %q", rcv)
	}
	if d[0].Env.Sender != "a@example.com" || len(d[0].Env.Recipients) != 1 || d[0].Env.Recipients[0] != "b@example.com" {
		t.Errorf("envelope %+v", d[0].Env)
	}
	if d[0].Info.Proto != "QMQP" || !d[0].Info.RelayClient {
		t.Errorf("conn info %+v", d[0].Info)
	}
}

// TestTranscripts runs whole requests against a fresh server and checks the
// exact reply and whether the handler committed.
func TestTranscripts(t *testing.T) {
	hops := func(n int) string {
		return strings.Repeat("Received: from x by y; date\n", n) + "Subject: loop\n\nbody\n"
	}
	long := strings.Repeat("a", 995) + "@b.cd" // 1000 bytes
	cases := []struct {
		name    string
		cfg     func(*Server)
		req     string
		reply   string // "" means: no reply at all
		commits int
	}{
		{"mailfront", nil, mailfrontRequest, "Kok queued", 1},
		{"several recipients, empty sender", nil,
			string(request("Subject: x\n\nhi\n", "", "a@x", "b@y", "a@x")), "Kok queued", 1},
		{"empty body", nil, string(request("", "a@x", "b@y")), "Kok queued", 1},
		{"raw addresses", nil, string(request("x\n", `\Backslashes!@x`, "Hate.The Quoting@y")), "Kok queued", 1},
		{"leading zeros", nil, "043:05:test\n,13:a@example.com,13:b@example.com,,", "Kok queued", 1},
		{"empty length is zero", nil, "10::,:,3:b@y,,", "Kok queued", 1},
		{"empty recipient", nil, "045:05:test\n,13:a@example.com,13:b@example.com,:,,",
			"Dsorry, I can't accept addresses like that (#5.1.3)", 0},
		{"zero recipients", nil, "25:5:test\n,13:a@example.com,,", "Dno recipients (#5.5.1)", 0},
		{"NUL in recipient", nil, string(request("x\n", "a@x", "b\x00@y")),
			"Dsorry, I can't accept addresses like that (#5.1.3)", 0},
		{"NUL in sender", nil, string(request("x\n", "a\x00@x", "b@y")),
			"Dsorry, I can't accept addresses like that (#5.1.3)", 0},
		{"1000-byte recipient", nil, string(request("x\n", "a@x", "b@y", long)),
			"Dsorry, I can't accept addresses like that (#5.1.3)", 0},
		{"1000-byte sender", nil, string(request("x\n", long, "b@y")),
			"Dsorry, I can't accept addresses like that (#5.1.3)", 0},
		{"999-byte recipient", nil, string(request("x\n", "a@x", long[1:])), "Kok queued", 1},
		{"too many recipients", func(s *Server) { s.MaxRecipients = 2 }, string(request("x\n", "a@x", "b@y", "c@y", "d@y")),
			"Dtoo many recipients (#5.5.3)", 0},
		{"recipients at the limit", func(s *Server) { s.MaxRecipients = 2 }, string(request("x\n", "a@x", "b@y", "c@y")), "Kok queued", 1},
		{"size at the limit", func(s *Server) { s.MaxMessageBytes = 100 }, string(request(strings.Repeat("x", 99)+"\n", "a@x", "b@y")),
			"Kok queued", 1},
		{"size over the limit", func(s *Server) { s.MaxMessageBytes = 100 }, string(request(strings.Repeat("x", 100)+"\n", "a@x", "b@y")),
			"Dsorry, that message size exceeds my databytes limit (#5.3.4)", 0},
		{"hops under the limit", nil, string(request(hops(99), "a@x", "b@y")), "Kok queued", 1},
		{"hop limit", nil, string(request(hops(100), "a@x", "b@y")),
			"Dtoo many hops, this message is looping (#5.4.6)", 0},
		{"hop limit set lower", func(s *Server) { s.MaxHops = 3 }, string(request(hops(3), "a@x", "b@y")),
			"Dtoo many hops, this message is looping (#5.4.6)", 0},
		{"hop counting off", func(s *Server) { s.MaxHops = -1 }, string(request(hops(150), "a@x", "b@y")), "Kok queued", 1},
		{"outer length short: inner overrun", nil, "20:5:test\n,13:a@example.com,13:b@example.com,,", "", 0},
		{"message length overruns outer", nil, "42:50:test\n,13:a@example.com,13:b@example.com,,", "", 0},
		{"outer length long by one", nil, "43:5:test\n,13:a@example.com,13:b@example.com,,", "", 0},
		{"trailing junk inside outer", nil, "43:5:test\n,13:a@example.com,13:b@example.com,x,", "", 0},
		{"missing outer comma", nil, "42:5:test\n,13:a@example.com,13:b@example.com,;", "", 0},
		{"missing message comma", nil, "42:5:test\n;13:a@example.com,13:b@example.com,,", "", 0},
		{"missing recipient comma", nil, "42:5:test\n,13:a@example.com,13:b@example.com;,", "", 0},
		{"non-digit outer length", nil, "4x:5:test\n,13:a@example.com,13:b@example.com,,", "", 0},
		{"non-digit recipient length", nil, "42:5:test\n,13:a@example.com,1x:b@example.com,,", "", 0},
		{"huge outer length", nil, "99999999999999999999999:", "", 0},
		{"empty input", nil, "", "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &recorder{}
			s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
			if tc.cfg != nil {
				tc.cfg(s)
			}
			addr := startServer(t, s)
			reply := exchange(t, "tcp", addr, []byte(tc.req))
			if tc.reply != "" {
				tc.reply = ns(tc.reply)
			}
			if string(reply) != tc.reply {
				t.Errorf("reply %q, want %q", reply, tc.reply)
			}
			if n := h.committed(); n != tc.commits {
				t.Errorf("%d commits, want %d", n, tc.commits)
			}
		})
	}
}

// TestDeclaredSizeSkipsHandler: a message whose declared length is over the
// limit never reaches the handler; the server drains it and refuses.
func TestDeclaredSizeSkipsHandler(t *testing.T) {
	h := &recorder{}
	s := &Server{Handler: h, Allow: loopback, MaxMessageBytes: 1000, ErrorLog: (&logBuffer{}).logger()}
	addr := startServer(t, s)
	reply := exchange(t, "tcp", addr, request(strings.Repeat("y", 1<<20), "a@x", "b@y"))
	if !bytes.HasPrefix(reply, []byte("61:D")) || !bytes.HasSuffix(reply, []byte("(#5.3.4),")) {
		t.Fatalf("reply %q", reply)
	}
	if len(h.deliveries()) != 0 {
		t.Fatal("handler was called")
	}
}

// TestTruncatedAtEveryOffset cuts a valid request at every byte: the server
// must close without a reply and the handler must never commit.
func TestTruncatedAtEveryOffset(t *testing.T) {
	h := &recorder{}
	s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
	addr := startServer(t, s)
	req := []byte(mailfrontRequest)
	for i := 0; i < len(req); i++ {
		if reply := exchange(t, "tcp", addr, req[:i]); len(reply) != 0 {
			t.Errorf("cut at %d: reply %q", i, reply)
		}
	}
	if n := h.committed(); n != 0 {
		t.Fatalf("%d commits of truncated requests", n)
	}
	if reply := exchange(t, "tcp", addr, req); string(reply) != ns("Kok queued") {
		t.Fatalf("whole request: reply %q", reply)
	}
	if n := h.committed(); n != 1 {
		t.Fatalf("%d commits, want 1", n)
	}
}

// TestHandlerStatus: the handler's status is the reply, rendered per QMQP.
func TestHandlerStatus(t *testing.T) {
	for _, tc := range []struct {
		st    mail.Status
		reply string
	}{
		{mail.OK("ok 1700000000 qp 42"), ns("Kok 1700000000 qp 42")},
		{mail.Temp("4.3.0", "qq write error or disk full"), ns("Zqq write error or disk full (#4.3.0)")},
		{mail.Perm("5.7.1", "sorry, no relaying"), ns("Dsorry, no relaying (#5.7.1)")},
		{mail.Status{}, ns("Ztemporary failure (#4.3.0)")}, // a zero Status is never an acceptance
	} {
		h := HandlerFunc(func(ctx context.Context, req *Request) mail.Status {
			if _, err := req.Envelope(); err != nil {
				return mail.StatusOf(err)
			}
			return tc.st
		})
		s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
		if tc.st == (mail.Status{}) {
			s.Handler = HandlerFunc(func(context.Context, *Request) mail.Status { return mail.StatusTempFailure })
		}
		addr := startServer(t, s)
		if reply := exchange(t, "tcp", addr, []byte(mailfrontRequest)); string(reply) != tc.reply {
			t.Errorf("reply %q, want %q", reply, tc.reply)
		}
	}
}

// TestServerOverridesHandler: a handler that ignores Envelope's error and
// says K still gets its message refused.
func TestServerOverridesHandler(t *testing.T) {
	h := HandlerFunc(func(ctx context.Context, req *Request) mail.Status {
		io.Copy(io.Discard, req.Body)
		req.Envelope()
		return mail.OK("")
	})
	s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
	addr := startServer(t, s)
	reply := exchange(t, "tcp", addr, request("x\n", "a@x", "b\x00@y"))
	if string(reply) != ns("Dsorry, I can't accept addresses like that (#5.1.3)") {
		t.Fatalf("reply %q", reply)
	}
	// A handler that never reads anything: the server reads the rest
	// before replying, and a malformed tail still means no reply.
	lazy := HandlerFunc(func(context.Context, *Request) mail.Status { return mail.OK("") })
	s2 := &Server{Handler: lazy, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
	addr2 := startServer(t, s2)
	if reply := exchange(t, "tcp", addr2, []byte(mailfrontRequest)); string(reply) != ns("Kok") {
		t.Fatalf("lazy handler: reply %q", reply)
	}
	if reply := exchange(t, "tcp", addr2, []byte(mailfrontRequest[:len(mailfrontRequest)-1]+";")); len(reply) != 0 {
		t.Fatalf("lazy handler, bad comma: reply %q", reply)
	}
}

// TestEnvelopeFirst: a handler may read the envelope before the body; the
// body is then drained and reads as just the Received line.
func TestEnvelopeFirst(t *testing.T) {
	var body []byte
	h := HandlerFunc(func(ctx context.Context, req *Request) mail.Status {
		env, err := req.Envelope()
		if err != nil {
			return mail.StatusOf(err)
		}
		body, _ = io.ReadAll(req.Body)
		if env.Sender != "a@example.com" {
			return mail.Perm("5.0.0", "wrong sender")
		}
		return mail.OK("")
	})
	s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
	addr := startServer(t, s)
	if reply := exchange(t, "tcp", addr, []byte(mailfrontRequest)); string(reply) != ns("Kok") {
		t.Fatalf("reply %q", reply)
	}
	if _, msg := stripReceived(t, body); len(msg) != 0 {
		t.Fatalf("body after Envelope: %q", msg)
	}
}

func TestHandlerPanic(t *testing.T) {
	logs := &logBuffer{}
	h := HandlerFunc(func(ctx context.Context, req *Request) mail.Status { panic("boom") })
	s := &Server{Handler: h, Allow: loopback, ErrorLog: logs.logger()}
	addr := startServer(t, s)
	if reply := exchange(t, "tcp", addr, []byte(mailfrontRequest)); string(reply) != ns("Ztemporary failure (#4.3.0)") {
		t.Fatalf("reply %q", reply)
	}
	if !strings.Contains(logs.String(), "panic=boom") {
		t.Fatalf("no panic log line:\n%s", logs)
	}
	// A panic in a request that then proves truncated: no reply.
	if reply := exchange(t, "tcp", addr, []byte(mailfrontRequest[:20])); len(reply) != 0 {
		t.Fatalf("truncated: reply %q", reply)
	}
}

func TestNilHandler(t *testing.T) {
	s := &Server{Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
	addr := startServer(t, s)
	if reply := exchange(t, "tcp", addr, []byte(mailfrontRequest)); string(reply) != ns("Ztemporary failure (#4.3.0)") {
		t.Fatalf("reply %q", reply)
	}
}

// readRefusal connects and reads what the server says before the client
// sends anything.
func readRefusal(t *testing.T, network, addr string) string {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	out, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		t.Fatalf("read: %v", err)
	}
	return string(out)
}

func TestAllowList(t *testing.T) {
	t.Run("deny all by default", func(t *testing.T) {
		h := &recorder{}
		var refusals atomic.Int32
		s := &Server{Handler: h, ErrorLog: (&logBuffer{}).logger(), OnRefuse: func(reason string) {
			if reason == "access" {
				refusals.Add(1)
			}
		}}
		addr := startServer(t, s)
		want := ns("Dclient 127.0.0.1 is not authorized to use this service (#5.7.1)")
		if got := readRefusal(t, "tcp", addr); got != want {
			t.Fatalf("refusal %q, want %q", got, want)
		}
		if reply := exchange(t, "tcp", addr, []byte(mailfrontRequest)); string(reply) != want {
			t.Fatalf("reply %q", reply)
		}
		if len(h.deliveries()) != 0 {
			t.Fatal("handler called for a refused client")
		}
		if n := refusals.Load(); n != 2 {
			t.Fatalf("OnRefuse(access) called %d times for 2 refused clients", n)
		}
	})
	t.Run("other prefix", func(t *testing.T) {
		s := &Server{Handler: &recorder{}, Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")},
			ErrorLog: (&logBuffer{}).logger()}
		addr := startServer(t, s)
		if got := readRefusal(t, "tcp", addr); !strings.HasPrefix(got, "64:Dclient 127.0.0.1 is not") {
			t.Fatalf("refusal %q", got)
		}
	})
	t.Run("allowed prefix", func(t *testing.T) {
		s := &Server{Handler: &recorder{}, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, ErrorLog: (&logBuffer{}).logger()}
		addr := startServer(t, s)
		if reply := exchange(t, "tcp", addr, []byte(mailfrontRequest)); string(reply) != ns("Kok queued") {
			t.Fatalf("reply %q", reply)
		}
	})
	t.Run("SetAllow at runtime", func(t *testing.T) {
		s := &Server{Handler: &recorder{}, ErrorLog: (&logBuffer{}).logger()}
		addr := startServer(t, s)
		if reply := exchange(t, "tcp", addr, []byte(mailfrontRequest)); !bytes.Contains(reply, []byte("not authorized")) {
			t.Fatalf("before: reply %q", reply)
		}
		s.SetAllow(loopback)
		if reply := exchange(t, "tcp", addr, []byte(mailfrontRequest)); string(reply) != ns("Kok queued") {
			t.Fatalf("after SetAllow: reply %q", reply)
		}
		s.SetAllow(nil)
		if reply := exchange(t, "tcp", addr, []byte(mailfrontRequest)); !bytes.Contains(reply, []byte("not authorized")) {
			t.Fatalf("after SetAllow(nil): reply %q", reply)
		}
	})
	t.Run("AllowFunc", func(t *testing.T) {
		var seen string
		s := &Server{Handler: &recorder{}, Allow: loopback, ErrorLog: (&logBuffer{}).logger(),
			AllowFunc: func(info *mail.ConnInfo) bool { seen = info.RemoteIP().String(); return false }}
		addr := startServer(t, s)
		if got := readRefusal(t, "tcp", addr); !strings.Contains(got, "not authorized") || seen != "127.0.0.1" {
			t.Fatalf("refusal %q, AllowFunc saw %q", got, seen)
		}
	})
	t.Run("unix socket always allowed", func(t *testing.T) {
		h := &recorder{}
		s := &Server{Handler: h, ErrorLog: (&logBuffer{}).logger(),
			AllowFunc: func(*mail.ConnInfo) bool { return false }}
		path := filepath.Join(t.TempDir(), "qmqp.sock")
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		serveOn(t, s, l)
		if reply := exchange(t, "unix", path, []byte(mailfrontRequest)); string(reply) != ns("Kok queued") {
			t.Fatalf("reply %q", reply)
		}
		rcv, _ := stripReceived(t, h.deliveries()[0].Body)
		if !strings.HasPrefix(rcv, "Received: from unknown (unknown)\n") {
			t.Errorf("Received line %q", rcv)
		}
	})
	t.Run("unknown address denied", func(t *testing.T) {
		s := &Server{Handler: &recorder{}, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
		a, b := net.Pipe()
		defer a.Close()
		go s.ServeConn(context.Background(), b, &mail.ConnInfo{})
		a.SetDeadline(time.Now().Add(30 * time.Second))
		out, _ := io.ReadAll(a)
		if string(out) != ns("Dclient unknown is not authorized to use this service (#5.7.1)") {
			t.Fatalf("reply %q", out)
		}
	})
}

// TestConnContext: the hook completes the ConnInfo the handler sees and the
// Received line is built from it.
func TestConnContext(t *testing.T) {
	h := &recorder{}
	s := &Server{Handler: h, Allow: loopback, Hostname: "hub.example", ErrorLog: (&logBuffer{}).logger(),
		ConnContext: func(ctx context.Context, info *mail.ConnInfo) (context.Context, error) {
			info.RemoteHost = "app1.example"
			info.RelayClient = false
			return nil, nil
		}}
	addr := startServer(t, s)
	if reply := exchange(t, "tcp", addr, []byte(mailfrontRequest)); string(reply) != ns("Kok queued") {
		t.Fatalf("reply %q", reply)
	}
	d := h.deliveries()[0]
	rcv, _ := stripReceived(t, d.Body)
	if !strings.HasPrefix(rcv, "Received: from app1.example (127.0.0.1)\n  by hub.example with QMQP; ") || d.Info.RelayClient {
		t.Fatalf("Received %q, info %+v", rcv, d.Info)
	}
}

// blockingHandler holds each message until released, so tests can keep a
// connection slot busy.
type blockingHandler struct {
	called  chan struct{}
	release chan struct{}
}

func (h *blockingHandler) ServeQMQP(ctx context.Context, req *Request) mail.Status {
	h.called <- struct{}{}
	<-h.release
	if _, err := req.Envelope(); err != nil {
		return mail.StatusOf(err)
	}
	return mail.OK("")
}

func TestConnectionLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*Server)
	}{
		{"MaxConns", func(s *Server) { s.MaxConns = 1 }},
		{"MaxConnsPerIP", func(s *Server) { s.MaxConns = 10; s.MaxConnsPerIP = 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &blockingHandler{called: make(chan struct{}, 1), release: make(chan struct{})}
			var refusals atomic.Int32
			s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger(), OnRefuse: func(reason string) {
				if reason == "limit" {
					refusals.Add(1)
				}
			}}
			if tc.cfg != nil {
				tc.cfg(s)
			}
			addr := startServer(t, s)

			// The first client holds its slot inside the handler.
			c1, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c1.Close()
			c1.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := c1.Write([]byte(mailfrontRequest)); err != nil {
				t.Fatal(err)
			}
			testpeer.Recv(t, "the first client in the handler", 30*time.Second, h.called)

			want := ns("Ztoo many connections, try again later (#4.3.2)")
			if got := readRefusal(t, "tcp", addr); got != want {
				t.Fatalf("over the limit: %q, want %q", got, want)
			}
			if n := refusals.Load(); n != 1 {
				t.Fatalf("OnRefuse(limit) called %d times for 1 refused client", n)
			}
			close(h.release)
			out, _ := io.ReadAll(c1)
			if string(out) != ns("Kok") {
				t.Fatalf("first client: %q", out)
			}
			// The slot is free again.
			h.called = make(chan struct{}, 1)
			if reply := exchange(t, "tcp", addr, []byte(mailfrontRequest)); string(reply) != ns("Kok") {
				t.Fatalf("after release: %q", reply)
			}
		})
	}
}

// TestEarlyReplyOrder: the only replies sent before the request is complete
// are the refusals; an accepted client's reply waits for the last byte even
// when the handler has decided earlier.
func TestReplyWaitsForLastByte(t *testing.T) {
	h := HandlerFunc(func(context.Context, *Request) mail.Status { return mail.Perm("5.7.0", "no") })
	s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
	addr := startServer(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte(mailfrontRequest)
	if _, err := c.Write(req[:len(req)-1]); err != nil {
		t.Fatal(err)
	}
	// Nothing may arrive before the last byte. A short read deadline only
	// bounds the wait for a reply that must not come; it asserts no timing.
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var buf [64]byte
	if n, err := c.Read(buf[:]); n != 0 || !isTimeout(err) {
		t.Fatalf("early reply %q, %v", buf[:n], err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(req[len(req)-1:]); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(c)
	if string(out) != ns("Dno (#5.7.0)") {
		t.Fatalf("reply %q", out)
	}
}

func TestServeConnAfterClose(t *testing.T) {
	s := &Server{Handler: &recorder{}, Allow: loopback}
	s.Close()
	a, b := net.Pipe()
	defer a.Close()
	if err := s.ServeConn(context.Background(), b, nil); err != ErrServerClosed {
		t.Fatalf("ServeConn after Close: %v", err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := s.Serve(l); err != ErrServerClosed {
		t.Fatalf("Serve after Close: %v", err)
	}
}

// TestServeConnErrors checks ServeConn's result for each kind of ending.
func TestServeConnErrors(t *testing.T) {
	s := &Server{Handler: &recorder{}, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
	info := func() *mail.ConnInfo {
		return &mail.ConnInfo{RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1234}}
	}
	run := func(input string) (string, error) {
		a, b := net.Pipe()
		defer a.Close()
		errc := make(chan error, 1)
		go func() { errc <- s.ServeConn(context.Background(), b, info()) }()
		a.SetDeadline(time.Now().Add(30 * time.Second))
		go func() { a.Write([]byte(input)) }()
		out, _ := io.ReadAll(a)
		return string(out), <-errc
	}
	if out, err := run(mailfrontRequest); err != nil || out != ns("Kok queued") {
		t.Errorf("good request: %q, %v", out, err)
	}
	if out, err := run("x"); err == nil || !strings.Contains(err.Error(), "malformed") || out != "" {
		t.Errorf("malformed: %q, %v", out, err)
	}
	if out, err := run("20:5:test\n,13:a@example.com,13:b@example.com,,"); err == nil ||
		!strings.Contains(err.Error(), "overruns") || out != "" {
		t.Errorf("overrun: %q, %v", out, err)
	}
}

// TestSlowClientTimesOut: a client that stalls mid-request is dropped by the
// per-read timeout, and one that trickles is dropped by the session cap.
func TestSlowClientTimesOut(t *testing.T) {
	h := &recorder{}
	s := &Server{Handler: h, Allow: loopback, ReadTimeout: 100 * time.Millisecond, ErrorLog: (&logBuffer{}).logger()}
	addr := startServer(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(mailfrontRequest[:10]))
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if out, err := io.ReadAll(c); len(out) != 0 || err != nil {
		t.Fatalf("stalled client: %q, %v", out, err)
	}

	s2 := &Server{Handler: h, Allow: loopback, SessionTimeout: 300 * time.Millisecond, ErrorLog: (&logBuffer{}).logger()}
	addr2 := startServer(t, s2)
	c2, err := net.Dial("tcp", addr2)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 3000; i++ { // at most 30 s, a byte each 10 ms
			if _, err := c2.Write([]byte("1")); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	c2.SetReadDeadline(time.Now().Add(30 * time.Second))
	if out, err := io.ReadAll(c2); len(out) != 0 || (err != nil && !isReset(err)) {
		t.Fatalf("trickling client: %q, %v", out, err)
	}
	c2.Close()
	testpeer.Recv(t, "the first client to finish", 30*time.Second, done)
	if h.committed() != 0 {
		t.Fatal("a timed-out request was committed")
	}
}

// TestShutdownWaitsAndNoLeaks: Shutdown lets a message in progress finish,
// and afterwards no goroutine of the server is left.
func TestShutdownWaitsAndNoLeaks(t *testing.T) {
	base := runtime.NumGoroutine()
	h := &blockingHandler{called: make(chan struct{}, 1), release: make(chan struct{})}
	s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte(mailfrontRequest))
	testpeer.Recv(t, "the handler called", 30*time.Second, h.called)

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if err := testpeer.Recv(t, "Serve to return", 30*time.Second, served); err != ErrServerClosed {
		t.Fatalf("Serve: %v", err)
	}
	// New connections are refused once the listener is closed.
	if c2, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		c2.Close()
		t.Fatal("listener still accepting after Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a message in progress", err)
	default:
	}
	close(h.release)
	out, _ := io.ReadAll(c)
	c.Close()
	if string(out) != ns("Kok") {
		t.Fatalf("in-flight message: %q", out)
	}
	if err := testpeer.Recv(t, "Shutdown to return", 30*time.Second, shut); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	settleGoroutines(t, base)
}

// TestCloseEndsConnections: Close cuts a message in progress without a
// reply and cancels the handler's context.
func TestCloseEndsConnections(t *testing.T) {
	base := runtime.NumGoroutine()
	cancelled := make(chan struct{})
	started := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, req *Request) mail.Status {
		close(started)
		io.Copy(io.Discard, req.Body) // blocks: the client sends half a message
		<-ctx.Done()
		close(cancelled)
		return mail.OK("")
	})
	s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte("100:50:half a message"))
	testpeer.Recv(t, "the handler called", 30*time.Second, started)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	testpeer.Recv(t, "Close to cancel the handler's context", 30*time.Second, cancelled)
	if out, _ := io.ReadAll(c); len(out) != 0 {
		t.Fatalf("reply after Close: %q", out)
	}
	if err := testpeer.Recv(t, "Serve to return", 30*time.Second, served); err != ErrServerClosed {
		t.Fatalf("Serve: %v", err)
	}
	settleGoroutines(t, base)
}

// TestResetAfterReplyIsQuiet: a client that resets the connection right
// after the reply (qmqp-source's SO_LINGER 0) is routine, not an error.
func TestResetAfterReplyIsQuiet(t *testing.T) {
	logs := &logBuffer{}
	s := &Server{Handler: &recorder{}, Allow: loopback, ErrorLog: logs.logger()}
	addr := startServer(t, s)
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetLinger(0)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		c.Write([]byte(mailfrontRequest))
		buf := make([]byte, 14)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != ns("Kok queued") {
			t.Fatalf("reply %q, %v", buf, err)
		}
		c.Close()
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") || strings.Contains(line, "level=INFO") {
			t.Errorf("log line for a routine reset: %s", line)
		}
	}
}

func TestManyConcurrentClients(t *testing.T) {
	h := &recorder{}
	s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
	addr := startServer(t, s)
	const n = 50
	errc := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			body := fmt.Sprintf("Subject: %d\n\n%s\n", i, strings.Repeat("z", i*100))
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			c.Write(request(body, "s@x", fmt.Sprintf("r%d@y", i)))
			out, _ := io.ReadAll(c)
			if string(out) != ns("Kok queued") {
				errc <- fmt.Errorf("client %d: %q", i, out)
				return
			}
			errc <- nil
		}(i)
	}
	for i := 0; i < n; i++ {
		if err := testpeer.Recv(t, "a client to finish", 30*time.Second, errc); err != nil {
			t.Error(err)
		}
	}
	got := h.deliveries()
	if len(got) != n {
		t.Fatalf("%d deliveries", len(got))
	}
	for _, d := range got {
		_, msg := stripReceived(t, d.Body)
		var i int
		fmt.Sscanf(string(msg), "Subject: %d", &i)
		if want := fmt.Sprintf("Subject: %d\n\n%s\n", i, strings.Repeat("z", i*100)); string(msg) != want || d.Env.Recipients[0] != fmt.Sprintf("r%d@y", i) {
			t.Errorf("message %d mixed up", i)
		}
	}
}

// TestBodyAfterHandlerReturns: a handler that keeps the Body beyond
// ServeQMQP reads an error, never a recycled buffer.
func TestBodyAfterHandlerReturns(t *testing.T) {
	kept := make(chan io.Reader, 2)
	h := HandlerFunc(func(ctx context.Context, req *Request) mail.Status {
		kept <- req.Body
		return mail.OK("")
	})
	s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
	addr := startServer(t, s)
	if reply := exchange(t, "tcp", addr, []byte(mailfrontRequest)); string(reply) != "3:Kok," {
		t.Fatalf("reply %q", reply)
	}
	// Another request reuses the pooled buffer.
	exchange(t, "tcp", addr, request("secret\n", "x@y", "z@w"))
	testpeer.Recv(t, "the first request's body", 30*time.Second, kept)
	b := testpeer.Recv(t, "the second request's body", 30*time.Second, kept)
	if n, err := b.Read(make([]byte, 100)); n != 0 || err != errReleased {
		t.Fatalf("stale body read %d, %v", n, err)
	}
}
