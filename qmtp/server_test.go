package qmtp

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/netstring"
)

// long is the deadline for anything that should happen "soon" in these
// tests: generous, so a loaded machine never fails them, and never a timing
// assertion, only a bound on how long a broken build can hang.
const long = 20 * time.Second

// startServer serves srv on a loopback listener until the test ends.
func startServer(t *testing.T, srv *Server, useTLS bool) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		if useTLS {
			done <- srv.ServeTLS(l)
		} else {
			done <- srv.Serve(l)
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		if err := testpeer.Recv(t, "Serve to return", long, done); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return l.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, long)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(long))
	t.Cleanup(func() { c.Close() })
	return c
}

// readReplies reads n reply netstrings.
func readReplies(t *testing.T, r *netstring.Reader, n int) []string {
	t.Helper()
	var out []string
	for range n {
		b, err := r.ReadBytes(MaxReplyBytes)
		if err != nil {
			t.Fatalf("reply %d: %v", len(out), err)
		}
		out = append(out, string(b))
	}
	return out
}

func expectEOF(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(long))
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Fatalf("waiting for close: %v (read %q)", err, b)
	}
	if len(b) > 0 {
		t.Fatalf("unexpected bytes before close: %q", b)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func TestServeNetwork(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srv := newTestServer(nil)
	var mu sync.Mutex
	var seenInfo *mail.ConnInfo
	var bodies []string
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		b, _ := io.ReadAll(req.Body)
		env, err := req.Envelope()
		if err != nil {
			return nil
		}
		mu.Lock()
		seenInfo = req.Conn
		bodies = append(bodies, string(b))
		mu.Unlock()
		return answer(env.Recipients)
	})
	addr := startServer(t, srv, false)
	c := dial(t, addr)
	io.WriteString(c, pk("\nhi\n", "s@x", "r@x", "z@x")+pk("\rcr\r\n", "", "d@x"))
	got := readReplies(t, netstring.NewReader(c), 3)
	want := []string{"Kok 0", "Ztry later (#4.2.0)", "Dno such user (#5.1.1)"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("replies %q, want %q", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if seenInfo.Proto != "QMTP" || !seenInfo.RemoteIP().IsLoopback() {
		t.Errorf("ConnInfo = %+v", seenInfo)
	}
	wantRcvd := "Received: from unknown (127.0.0.1)\n  by mx.test with QMTP; 26 Sep 1995 04:46:54 -0000\n"
	if len(bodies) != 2 || bodies[0] != wantRcvd+"hi\n" || bodies[1] != wantRcvd+"cr\n" {
		t.Errorf("bodies %q", bodies)
	}
}

// TestNoReplyBeforeLastByte sends a package in two writes, the second being
// its final comma alone, and checks that nothing arrives before it.
func TestNoReplyBeforeLastByte(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srv := newTestServer(nil)
	called := make(chan struct{}, 1)
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		env, _ := req.Envelope()
		called <- struct{}{}
		return answer(env.Recipients)
	})
	addr := startServer(t, srv, false)
	c := dial(t, addr)
	p := pk("\nx", "", "r@x")
	io.WriteString(c, p[:len(p)-1])
	// The handler cannot be called with Envelope done yet: the list's
	// outer comma is missing. Give the server every chance to misbehave.
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var b [1]byte
	if n, err := c.Read(b[:]); n > 0 || !errors.Is(err, errDeadline) {
		t.Fatalf("read before the last byte: %d bytes, %v", n, err)
	}
	select {
	case <-called:
		t.Fatal("Envelope returned before the package's last byte")
	default:
	}
	io.WriteString(c, ",")
	c.SetReadDeadline(time.Now().Add(long))
	if got := readReplies(t, netstring.NewReader(c), 1); got[0] != "Kok 0" {
		t.Fatalf("reply %q", got)
	}
}

func TestHandlerContract(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler HandlerFunc
		in      string
		want    []string
	}{
		{
			name: "panic is a temporary failure and the session goes on",
			handler: func(ctx context.Context, req *Request) []mail.Status {
				env, _ := req.Envelope()
				if env.Sender == "boom" {
					panic("handler bug")
				}
				return answer(env.Recipients)
			},
			in:   pk("\nx", "boom", "r@x", "a\x00") + pk("\nx", "", "r@x"),
			want: []string{replyTemp, replyBadRcpt, "Kok 0"},
		},
		{
			name: "panic before Envelope",
			handler: func(ctx context.Context, req *Request) []mail.Status {
				panic("early")
			},
			in:   pk("\nlong body", "", "r@x", "q@x"),
			want: []string{replyTemp, replyTemp},
		},
		{
			name: "never calling Envelope is a temporary failure",
			handler: func(ctx context.Context, req *Request) []mail.Status {
				return []mail.Status{mail.OK(""), mail.OK("")}
			},
			in:   pk("\nx", "", "r@x", "q@x"),
			want: []string{replyTemp, replyTemp},
		},
		{
			name: "missing statuses are temporary, extra ignored",
			handler: func(ctx context.Context, req *Request) []mail.Status {
				env, _ := req.Envelope()
				if len(env.Recipients) == 1 {
					return []mail.Status{mail.OK("a"), mail.OK("b"), mail.OK("c")}
				}
				return []mail.Status{mail.OK("only")}
			},
			in:   pk("\nx", "", "r@x", "q@x") + pk("\nx", "", "r@x"),
			want: []string{"Konly", replyTemp, "Ka"},
		},
		{
			name: "a handler ignoring the size error cannot accept",
			handler: func(ctx context.Context, req *Request) []mail.Status {
				io.Copy(io.Discard, req.Body)
				req.Envelope()
				return []mail.Status{mail.OK("yes"), mail.OK("yes")}
			},
			in:   pk("\n"+strings.Repeat("x", 100), "", "r@x", "q@x"),
			want: []string{replyTooBig, replyTooBig},
		},
		{
			name: "a handler not reading the body still gets the limit",
			handler: func(ctx context.Context, req *Request) []mail.Status {
				env, _ := req.Envelope()
				return []mail.Status{mail.OK("yes")}[:len(env.Recipients)]
			},
			in:   pk("\r"+strings.Repeat("x\r\n", 40), "", "r@x"),
			want: []string{replyTooBig},
		},
		{
			name: "a handler ignoring the bad sender cannot accept",
			handler: func(ctx context.Context, req *Request) []mail.Status {
				return []mail.Status{mail.OK("yes")}
			},
			in:   pk("\nx", "a\x00", "r@x"),
			want: []string{replyBadSender},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newTestServer(func(s *Server) { s.MaxMessageBytes = 50 })
			srv.Handler = tc.handler
			var out bytes.Buffer
			err := srv.ServeConn(context.Background(), rwPair{strings.NewReader(tc.in), &out}, nil)
			if err != nil {
				t.Fatalf("ServeConn: %v", err)
			}
			var want strings.Builder
			for _, w := range tc.want {
				want.WriteString(ns(w))
			}
			if out.String() != want.String() {
				t.Fatalf("replies\n got %q\nwant %q", out.String(), want.String())
			}
		})
	}
}

// TestClientGoneMidPackage: the handler streams the body of a package whose
// client disappears; it must see an error, never a clean envelope.
func TestClientGoneMidPackage(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srv := newTestServer(nil)
	type result struct {
		bodyErr, envErr error
	}
	results := make(chan result, 1)
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		_, berr := io.Copy(io.Discard, req.Body)
		_, eerr := req.Envelope()
		results <- result{berr, eerr}
		return []mail.Status{mail.OK("must not be sent")}
	})
	addr := startServer(t, srv, false)
	for _, cut := range []string{"100:\nabc", pk("\nabc", "s@x", "r@x")[:20]} {
		c := dial(t, addr)
		io.WriteString(c, cut)
		c.(*net.TCPConn).CloseWrite()
		var r result
		select {
		case r = <-results:
		case <-time.After(long):
			t.Fatal("handler not called")
		}
		if r.envErr == nil {
			t.Errorf("%q: Envelope succeeded on a cut-off package", cut)
		}
		if _, ok := r.envErr.(mail.Status); ok {
			t.Errorf("%q: Envelope error %v is a Status", cut, r.envErr)
		}
		expectEOF(t, c)
	}
}

func TestMaxConns(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srv := newTestServer(func(s *Server) { s.MaxConns = 1 })
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		env, _ := req.Envelope()
		return answer(env.Recipients)
	})
	refused := make(chan string, 100)
	srv.OnRefuse = func(reason string) { refused <- reason }
	addr := startServer(t, srv, false)
	c1 := dial(t, addr)
	// Make sure the first connection is being served.
	io.WriteString(c1, pk("\nx", "", "r@x"))
	readReplies(t, netstring.NewReader(c1), 1)

	c2 := dial(t, addr)
	io.WriteString(c2, pk("\nx", "", "r@x"))
	got := readReplies(t, netstring.NewReader(c2), 1)
	if got[0] != "Ztoo many connections, try again later (#4.3.2)" {
		t.Fatalf("over the limit: %q", got[0])
	}
	c2.(*net.TCPConn).CloseWrite()
	expectEOF(t, c2)
	if r := testpeer.Recv(t, "OnRefuse", long, refused); r != "limit" {
		t.Fatalf("OnRefuse(%q), want limit", r)
	}

	// Once the first leaves, there is room again.
	c1.Close()
	deadline := time.Now().Add(long)
	for {
		c3 := dial(t, addr)
		io.WriteString(c3, pk("\nx", "", "r@x"))
		got := readReplies(t, netstring.NewReader(c3), 1)
		c3.Close()
		if got[0] == "Kok 0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("connection slot never freed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMaxConnsPerIP(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srv := newTestServer(func(s *Server) { s.MaxConnsPerIP = 2 })
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		env, _ := req.Envelope()
		return answer(env.Recipients)
	})
	addr := startServer(t, srv, false)
	for i := range 3 {
		c := dial(t, addr)
		io.WriteString(c, pk("\nx", "", "r@x"))
		got := readReplies(t, netstring.NewReader(c), 1)
		want := "Kok 0"
		if i == 2 {
			want = "Ztoo many connections, try again later (#4.3.2)"
		}
		if got[0] != want {
			t.Fatalf("connection %d: %q, want %q", i, got[0], want)
		}
	}
}

func TestShutdown(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srv := newTestServer(nil)
	inHandler := make(chan struct{})
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		if req.Size > 1 {
			close(inHandler)
		}
		io.Copy(io.Discard, req.Body)
		env, _ := req.Envelope()
		return answer(env.Recipients)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	addr := l.Addr().String()

	idle := dial(t, addr)
	io.WriteString(idle, pk("\n", "", "r@x"))
	readReplies(t, netstring.NewReader(idle), 1) // now idle between packages

	busy := dial(t, addr)
	p := pk("\nmid-package", "", "r@x", "q@x")
	io.WriteString(busy, p[:10])
	testpeer.Recv(t, "the handler called", long, inHandler)

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), long)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	expectEOF(t, idle) // the idle session is closed at once
	testpeer.WaitFor(t, "the server to start shutting down", long, srv.core.Shutting)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a package was in progress", err)
	default:
	}
	// The busy session finishes its package and gets its replies.
	io.WriteString(busy, p[10:])
	got := readReplies(t, netstring.NewReader(busy), 2)
	if got[0] != "Kok 0" || got[1] != "Kok 1" {
		t.Fatalf("replies %q", got)
	}
	expectEOF(t, busy)
	if err := testpeer.Recv(t, "Shutdown to return", long, shut); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := testpeer.Recv(t, "Serve to return", long, served); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("listener still open after Shutdown")
	}
}

func TestCloseCancelsHandler(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srv := newTestServer(nil)
	inHandler := make(chan struct{})
	ctxDone := make(chan struct{})
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		close(inHandler)
		<-ctx.Done()
		close(ctxDone)
		return nil
	})
	addr := startServer(t, srv, false)
	c := dial(t, addr)
	io.WriteString(c, "100:\nabc")
	testpeer.Recv(t, "the handler to start", long, inHandler)
	srv.Close()
	select {
	case <-ctxDone:
	case <-time.After(long):
		t.Fatal("handler context not cancelled by Close")
	}
	expectEOF(t, c)
}

// TestSlowLoris: a client that stops sending is dropped at the read
// deadline, and one that trickles is dropped at the session deadline.
func TestSlowLoris(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	t.Run("read timeout", func(t *testing.T) {
		srv := newTestServer(func(s *Server) { s.ReadTimeout = 100 * time.Millisecond })
		addr := startServer(t, srv, false)
		for _, partial := range []string{"", "5:", "5:\nab", pk("\nx", "", "r@x")[:8]} {
			c := dial(t, addr)
			io.WriteString(c, partial)
			expectEOF(t, c)
		}
	})
	t.Run("session timeout", func(t *testing.T) {
		srv := newTestServer(func(s *Server) {
			s.ReadTimeout = time.Hour
			s.SessionTimeout = 300 * time.Millisecond
		})
		addr := startServer(t, srv, false)
		c := dial(t, addr)
		// Trickle a byte now and then: each read is quick, the session
		// is not.
		io.WriteString(c, "100000:\n")
		stop := make(chan struct{})
		go func() {
			defer close(stop)
			for i := 0; i < 10000; i++ {
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		expectEOF(t, c)
		c.Close()
		<-stop
	})
}

// TestHugeDeclaredLength: a declared length of 1 GiB with no data behind it
// must not allocate anything near that.
func TestHugeDeclaredLength(t *testing.T) {
	srv := newTestServer(nil)
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		io.Copy(io.Discard, req.Body)
		env, _ := req.Envelope()
		return answer(env.Recipients)
	})
	for _, in := range []string{
		"1073741824:\n",
		"1073741824:\nabc",
		ns("\nx") + "1073741824:",              // sender
		ns("\nx") + "60000:",                   // sender within bound
		ns("\nx") + ns("") + "1000000:",        // recipient list
		ns("\nx") + ns("") + "1000000:999990:", // one recipient
		ns("\nx") + ns("") + "1000000:" + strings.Repeat("0", 5000), // digits
	} {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		var out bytes.Buffer
		err := srv.ServeConn(context.Background(), rwPair{strings.NewReader(in), &out}, nil)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Errorf("%.30q: ServeConn succeeded", in)
		}
		if out.Len() != 0 {
			t.Errorf("%.30q: replies %q", in, out.String())
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 2<<20 {
			t.Errorf("%.30q: allocated %d bytes", in, d)
		}
	}
}

func TestConnContext(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srv := newTestServer(nil)
	type key struct{}
	srv.ConnContext = func(ctx context.Context, info *mail.ConnInfo) (context.Context, error) {
		if info.RemoteIP().IsLoopback() && info.LocalIP().IsLoopback() {
			info.RemoteHost = "client.example"
			info.RelayClient = true
		}
		return context.WithValue(ctx, key{}, "v"), nil
	}
	got := make(chan string, 1)
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		b, _ := io.ReadAll(req.Body)
		env, _ := req.Envelope()
		got <- string(b) + ctx.Value(key{}).(string)
		if !req.Conn.RelayClient {
			return nil
		}
		return answer(env.Recipients)
	})
	addr := startServer(t, srv, false)
	c := dial(t, addr)
	io.WriteString(c, pk("\nx", "", "r@x"))
	if r := readReplies(t, netstring.NewReader(c), 1); r[0] != "Kok 0" {
		t.Fatalf("reply %q", r)
	}
	want := "Received: from client.example (127.0.0.1)\n  by mx.test with QMTP; 26 Sep 1995 04:46:54 -0000\nxv"
	if g := testpeer.Recv(t, "the handler's body", long, got); g != want {
		t.Errorf("body %q, want %q", g, want)
	}

	srv2 := newTestServer(nil)
	srv2.ConnContext = func(ctx context.Context, info *mail.ConnInfo) (context.Context, error) {
		return nil, errors.New("not you")
	}
	c2 := dial(t, startServer(t, srv2, false))
	io.WriteString(c2, pk("\nx", "", "r@x"))
	expectEOF(t, c2)
}

// testCert returns a server configuration with a certificate for mx.test
// and 127.0.0.1, and the pool of the CA that issued it.
func testCert(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	ca := testpeer.NewCA(t, "qmtp test CA", "")
	cert := ca.Issue("mx.test", x509.ExtKeyUsageServerAuth, "mx.test", "127.0.0.1")
	return &tls.Config{Certificates: []tls.Certificate{cert}}, ca.Pool
}

func TestQMTPS(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srvTLS, pool := testCert(t)
	srv := newTestServer(func(s *Server) { s.TLSConfig = srvTLS; s.MaxConns = 1 })
	var tlsSeen atomic.Bool
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		b, _ := io.ReadAll(req.Body)
		env, _ := req.Envelope()
		tlsSeen.Store(req.Conn.TLS != nil && strings.Contains(string(b), " with QMTPS; "))
		return answer(env.Recipients)
	})
	addr := startServer(t, srv, true)
	cl := &Client{TLSConfig: &tls.Config{RootCAs: pool, ServerName: "mx.test"}}
	res, err := cl.Send(context.Background(), addr, &Message{
		Envelope: mail.Envelope{Sender: "s@x", Recipients: []string{"r@x", "d@x"}},
		Body:     strings.NewReader("hello\r\n"), Size: 7, CRLF: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0][0].IsAccept() || !res[0][1].IsPermanent() || !tlsSeen.Load() {
		t.Fatalf("statuses %v, TLS seen %v", res, tlsSeen.Load())
	}
	if _, err := cl.Dial(context.Background(), "127.0.0.1"); err == nil {
		t.Error("QMTPS dial without a port succeeded")
	}
	// Over the limit under TLS: the Z comes through the handshake too.
	// First hold the one slot (the previous connection may still be
	// leaving it).
	var cn *Conn
	for deadline := time.Now().Add(long); ; {
		cn, err = cl.Dial(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		res, _ := cn.Send(context.Background(), msg("x", false, "", "r@x"))
		if res[0][0].IsAccept() {
			break
		}
		cn.Close()
		if time.Now().After(deadline) {
			t.Fatal("connection slot never freed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer cn.Close()
	cn2, err := cl.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cn2.Close()
	res, _ = cn2.Send(context.Background(), &Message{
		Envelope: mail.Envelope{Recipients: []string{"r@x"}}, Body: strings.NewReader("x"), Size: 1,
	})
	// Either the Z arrives as the answer, or the client's idle probe sees
	// it first and gives up: temporary either way, which is the point.
	if !res[0][0].IsTemporary() {
		t.Fatalf("over the limit under TLS: %v", res[0][0])
	}
}

// TestServeConnCancel: cancelling ServeConn's context ends a session that is
// blocked reading, by closing the connection.
func TestServeConnCancel(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srvSide, client := net.Pipe()
	defer client.Close()
	srv := newTestServer(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(ctx, srvSide, nil) }()
	go io.WriteString(client, "100:\nabc") // mid-package, then silence
	cancel()
	select {
	case <-done:
	case <-time.After(long):
		t.Fatal("ServeConn did not return after cancel")
	}
}

// TestShutdownServeConn: Shutdown closes an idle ServeConn session too.
func TestShutdownServeConn(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srvSide, client := net.Pipe()
	defer client.Close()
	srv := newTestServer(nil)
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		env, _ := req.Envelope()
		return answer(env.Recipients)
	})
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), srvSide, nil) }()
	go io.WriteString(client, pk("\nx", "", "r@x"))
	client.SetDeadline(time.Now().Add(long))
	readReplies(t, netstring.NewReader(client), 1)
	ctx, cancel := context.WithTimeout(context.Background(), long)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := testpeer.Recv(t, "ServeConn to return", long, done); !errors.Is(err, ErrServerClosed) && err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
	if err := srv.ServeConn(context.Background(), srvSide, nil); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("ServeConn after Shutdown: %v", err)
	}
}
