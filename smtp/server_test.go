package smtp

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

func TestSessionTranscript(t *testing.T) {
	testpeer.CheckGoroutines(t, testTimeout)
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h, MaxMessageBytes: 1000, MaxRecipients: 10})
	c := dialRaw(t, addr)
	c.expect("220 mx.test ESMTP")
	ehlo := c.cmd("EHLO client.test", "250 ")
	for _, ext := range []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "SIZE 1000", "CHUNKING"} {
		if !hasLine(ehlo, ext) {
			t.Errorf("EHLO reply %q lacks %s", ehlo, ext)
		}
	}
	for _, ext := range []string{"STARTTLS", "AUTH"} {
		if hasLine(ehlo, ext) {
			t.Errorf("EHLO reply %q offers %s without TLS config or authenticator", ehlo, ext)
		}
	}
	c.cmd("MAIL FROM:<sender@example.org>", "250 2.0.0")
	c.cmd("RCPT TO:<a@example.net>", "250 2.0.0")
	c.cmd("RCPT TO:<\"Hate.The Quoting\"@example.net>", "250 2.0.0")
	c.cmd("DATA", "354")
	c.send("Subject: test\r\n\r\nline one\r\n..dot line\r\nlast\r\n.\r\n")
	c.expect("250 2.0.0 queued")
	c.cmd("RSET", "250")
	c.cmd("MAIL FROM:<>", "250")
	c.cmd("RSET", "250")
	c.cmd("RCPT TO:<a@example.net>", "502 5.5.1") // RSET ended the transaction
	c.cmd("NOOP", "250")
	c.cmd("QUIT", "221")
	c.eof()

	msgs := h.messages()
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.env.Sender != "sender@example.org" || len(m.env.Recipients) != 2 ||
		m.env.Recipients[0] != "a@example.net" || m.env.Recipients[1] != "Hate.The Quoting@example.net" {
		t.Errorf("envelope %+v", m.env)
	}
	if got, want := stripReceived(t, m.body), "Subject: test\n\nline one\n.dot line\nlast\n"; got != want {
		t.Errorf("body %q, want %q", got, want)
	}
	if !strings.HasPrefix(m.body, "Received: from unknown (HELO client.test) (127.0.0.1)\n  by mx.test with ESMTP; ") {
		t.Errorf("Received line: %q", m.body)
	}
	if m.info.Proto != "ESMTP" || m.info.Helo != "client.test" || m.info.TLS != nil || m.info.AuthUser != "" {
		t.Errorf("ConnInfo %+v", m.info)
	}
}

func hasLine(lines []string, ext string) bool {
	for _, l := range lines {
		if len(l) > 4 && (l[4:] == ext || strings.HasPrefix(l[4:], ext+" ")) {
			return true
		}
	}
	return false
}

func TestHELOProto(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("HELO old.client", "250")
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.cmd("DATA", "354")
	c.send("hi\r\n.\r\n")
	c.expect("250")
	m := h.messages()[0]
	if m.info.Proto != "SMTP" || !strings.Contains(m.body, " with SMTP; ") {
		t.Errorf("HELO session recorded as %q: %q", m.info.Proto, m.body)
	}
}

// A Handler returning a plain Go error must produce 451, not go-smtp's 554
// with the error's text.
func TestPlainErrorsBecome451(t *testing.T) {
	secret := errors.New("open /var/spool/qmgate/secret: permission denied")
	h := &recHandler{
		sender: func(from string) mail.Status {
			if from == "boom@x.example" {
				return mail.StatusOf(secret)
			}
			return mail.OK("")
		},
		recipient: func(rcpt string) mail.Status { return mail.StatusOf(secret) },
	}
	addr := startServer(t, &Server{Handler: h})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	lines := c.cmd("MAIL FROM:<boom@x.example>", "451 4.3.0")
	checkNoSecret(t, lines)
	c.cmd("MAIL FROM:<ok@x.example>", "250")
	checkNoSecret(t, c.cmd("RCPT TO:<a@b.example>", "451 4.3.0"))

	// And from Deliver, where go-smtp would otherwise send 554.
	h2 := &recHandler{deliver: func([]byte, error) mail.Status { return mail.StatusOf(secret) }}
	addr = startServer(t, &Server{Handler: h2})
	c = dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.cmd("DATA", "354")
	c.send("x\r\n.\r\n")
	checkNoSecret(t, c.expect("451 4.3.0"))
	// A refusal keeps its own code.
	h2.deliver = func([]byte, error) mail.Status { return mail.Perm("5.7.1", "no thanks") }
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.cmd("DATA", "354")
	c.send("x\r\n.\r\n")
	c.expect("550 5.7.1 no thanks")
}

func checkNoSecret(t *testing.T, lines []string) {
	t.Helper()
	for _, l := range lines {
		if strings.Contains(l, "secret") || strings.Contains(l, "/var") {
			t.Errorf("reply leaks internal text: %q", l)
		}
	}
}

func TestHandlerStatuses(t *testing.T) {
	h := &recHandler{
		recipient: func(rcpt string) mail.Status {
			if strings.HasPrefix(rcpt, "bad") {
				return mail.StatusNotRcptHost
			}
			return mail.OK("")
		},
	}
	addr := startServer(t, &Server{Handler: h})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<bad@elsewhere.example>", "553 5.7.1 sorry, that domain isn't in my list of allowed rcpthosts")
	c.cmd("RCPT TO:<good@here.example>", "250")
	c.cmd("DATA", "354")
	c.send("x\r\n.\r\n")
	c.expect("250")
	if env := h.messages()[0].env; len(env.Recipients) != 1 || env.Recipients[0] != "good@here.example" {
		t.Errorf("envelope %+v", env)
	}
	// A long address is refused before the handler sees it.
	c.cmd("MAIL FROM:<"+strings.Repeat("a", 1000)+"@b.example>", "553 5.1.7")
}

func TestSizeLimit(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h, MaxMessageBytes: 100})
	c := dialRaw(t, addr)
	c.expect("220")
	if !hasLine(c.cmd("EHLO x", "250"), "SIZE 100") {
		t.Error("SIZE 100 not advertised")
	}
	c.cmd("MAIL FROM:<a@b.example> SIZE=101", "552 5.3.4")
	c.cmd("MAIL FROM:<a@b.example> SIZE=100", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.cmd("DATA", "354")
	// 100 bytes as stored (LF) but 110 on the wire: accepted, the limit
	// counts the stored form.
	line := strings.Repeat("x", 9) + "\r\n"
	c.send(strings.Repeat(line, 10) + ".\r\n")
	c.expect("250")
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.cmd("DATA", "354")
	c.send(strings.Repeat(line, 10) + "y\r\n" + strings.Repeat(line, 1000) + ".\r\n")
	c.expect("552 5.3.4")
	// The session goes on, in step.
	c.cmd("NOOP", "250")
	if n := len(h.messages()); n != 1 {
		t.Errorf("%d messages committed, want 1", n)
	}
}

func TestHopLimit(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	send := func(hops int, want string) {
		t.Helper()
		c.cmd("MAIL FROM:<a@b.example>", "250")
		c.cmd("RCPT TO:<c@d.example>", "250")
		c.cmd("DATA", "354")
		var b strings.Builder
		for i := 0; i < hops; i++ {
			if i%2 == 0 {
				b.WriteString("Received: from x by y; 1 Jan 2024 00:00:00 -0000\r\n")
			} else {
				b.WriteString("Delivered-To: someone@example.org\r\n")
			}
		}
		b.WriteString("Subject: loop\r\n\r\nbody\r\n.\r\n")
		c.send(b.String())
		c.expect(want)
	}
	send(99, "250")
	send(100, "554 5.4.6 too many hops")
	c.cmd("NOOP", "250")
}

func TestMaxRecipients(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h, MaxRecipients: 2})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<1@d.example>", "250")
	c.cmd("RCPT TO:<2@d.example>", "250")
	c.cmd("RCPT TO:<3@d.example>", "452 4.5.3")
	c.cmd("DATA", "354")
	c.send("x\r\n.\r\n")
	c.expect("250")
	if env := h.messages()[0].env; len(env.Recipients) != 2 {
		t.Errorf("envelope %+v", env)
	}
}

func TestConnectionLimits(t *testing.T) {
	testpeer.CheckGoroutines(t, testTimeout)
	h := &recHandler{}
	refused := make(chan string, 100)
	srv := &Server{Handler: h, MaxConns: 3, MaxConnsPerIP: 2, OnRefuse: func(reason string) { refused <- reason }}
	addr := startServer(t, srv)
	a := dialRaw(t, addr)
	a.expect("220")
	b := dialRaw(t, addr)
	b.expect("220")
	c := dialRaw(t, addr) // third from 127.0.0.1: over the per-IP limit
	c.expect("421 4.3.2 too many connections")
	c.eof()
	if r := <-refused; r != "limit" {
		t.Fatalf("OnRefuse(%q), want limit", r)
	}
	b.cmd("QUIT", "221")
	b.eof()
	// The slot comes back once the server has seen the close; wait for it
	// by retrying, never by sleeping a fixed time.
	deadline := time.Now().Add(testTimeout)
	for {
		d := dialRaw(t, addr)
		code, _ := d.reply()
		if code == 220 {
			d.cmd("QUIT", "221")
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("connection slot never came back")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// MaxConns counts all clients: bind a second loopback address to be
	// another IP.
	srv2 := &Server{Handler: h, MaxConns: 1}
	addr2 := startServer(t, srv2)
	x := dialRaw(t, addr2)
	x.expect("220")
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: testTimeout}
	conn, err := d.Dial("tcp", addr2)
	if err != nil {
		t.Skip("no second loopback address:", err)
	}
	y := &rawClient{t: t, c: conn}
	t.Cleanup(func() { conn.Close() })
	y.useConn(conn)
	y.expect("421 4.3.2")
}

func TestRequireAuthRefusesMail(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h, RequireAuth: true, Auth: passwords{"u": "p"}, AllowInsecureAuth: true})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.cmd("MAIL FROM:<a@b.example>", "530 5.7.0")
	c.cmd("AUTH PLAIN AHUAcA==", "235") // \0u\0p
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.cmd("DATA", "354")
	c.send("x\r\n.\r\n")
	c.expect("250")
	m := h.messages()[0]
	if m.info.AuthUser != "u" || m.info.Proto != "ESMTPA" {
		t.Errorf("ConnInfo %+v", m.info)
	}
}

// A 10 MB command line is refused after MaxLineLength bytes, without the
// server holding it in memory.
func TestHugeCommandLine(t *testing.T) {
	testpeer.CheckGoroutines(t, testTimeout)
	addr := startServer(t, &Server{Handler: &recHandler{}})
	c := dialRaw(t, addr)
	c.expect("220")
	line := make([]byte, 10<<20)
	copy(line, "EHLO ")
	for i := 5; i < len(line); i++ {
		line[i] = 'a'
	}
	var before, after runtimeMem
	before.read()
	werr := make(chan error, 1)
	go func() {
		_, err := c.c.Write(line)
		werr <- err
	}()
	code, lines := c.reply()
	if code != 500 {
		t.Errorf("reply %q, want 500 too long line", lines)
	}
	c.eof()
	<-werr // the server closed: the write fails or completes into buffers
	after.read()
	if grown := after.total - before.total; grown > 4<<20 {
		t.Errorf("server allocated %d bytes for a 10 MB line", grown)
	}
}

func TestPipelining(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<1@d.example>\r\nRCPT TO:<2@d.example>\r\nDATA\r\n")
	c.expect("250")
	c.expect("250")
	c.expect("250")
	c.expect("354")
	c.send("hello\r\n.\r\nMAIL FROM:<e@f.example>\r\nRCPT TO:<3@d.example>\r\nDATA\r\n")
	c.expect("250")
	c.expect("250")
	c.expect("250")
	c.expect("354")
	c.send("second\r\n.\r\nQUIT\r\n")
	c.expect("250")
	c.expect("221")
	msgs := h.messages()
	if len(msgs) != 2 || len(msgs[0].env.Recipients) != 2 || msgs[1].env.Sender != "e@f.example" {
		t.Errorf("messages %+v", msgs)
	}
}

func TestBDAT(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.send("BDAT 9\r\nline\r\nab.")
	c.expect("250")
	c.send("BDAT 3 LAST\r\n\r\n.")
	c.expect("250")
	if got := stripReceived(t, h.messages()[0].body); got != "line\nab.\n." {
		t.Errorf("body %q", got)
	}
	// A bare CR in BDAT is refused too, and the session stays in step.
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.send("BDAT 4 LAST\r\na\rb\n")
	c.expect("554 5.6.0")
	c.cmd("NOOP", "250")
}

func TestReadTimeout(t *testing.T) {
	testpeer.CheckGoroutines(t, testTimeout)
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h, ReadTimeout: 100 * time.Millisecond})
	// Idle: 421 4.4.2 and close.
	c := dialRaw(t, addr)
	c.expect("220")
	c.expect("421 4.4.2")
	c.eof()
	// In the middle of a BDAT chunk: 421, never go-smtp's 554 with error text.
	c = dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.send("BDAT 100 LAST\r\npartial")
	checkNoSecret(t, c.expect("421 4.4.2"))
	c.eof()
	// In the middle of DATA.
	c = dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.cmd("DATA", "354")
	c.send("partial")
	c.expect("421 4.4.2")
	c.eof()
	if n := len(h.messages()); n != 0 {
		t.Errorf("%d messages committed", n)
	}
}

func TestSessionTimeout(t *testing.T) {
	addr := startServer(t, &Server{Handler: &recHandler{}, SessionTimeout: 300 * time.Millisecond})
	c := dialRaw(t, addr)
	c.expect("220")
	// Keep the session busy; it ends anyway.
	for {
		c.send("NOOP\r\n")
		code, _ := c.reply()
		if code == 421 {
			break
		}
		if code != 250 {
			t.Fatalf("NOOP got %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.eof()
}

func TestShutdown(t *testing.T) {
	testpeer.CheckGoroutines(t, testTimeout)
	h := &recHandler{delivered: make(chan struct{}, 1)}
	srv := &Server{Handler: h, ErrorLog: quietLog(t), Hostname: "mx.test"}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	addr := l.Addr().String()

	idle := dialRaw(t, addr)
	idle.expect("220")
	idle.cmd("EHLO x", "250")
	busy := dialRaw(t, addr)
	busy.expect("220")
	busy.cmd("EHLO x", "250")
	busy.cmd("MAIL FROM:<a@b.example>", "250")

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	idle.expect("421 4.4.2")
	idle.eof()
	// The open transaction finishes.
	busy.cmd("RCPT TO:<c@d.example>", "250")
	busy.cmd("DATA", "354")
	busy.send("x\r\n.\r\n")
	busy.expect("250")
	<-h.delivered
	// After it, the session ends. Shutdown kicks the sessions one after
	// another under its lock, so idle's 421 does not prove that busy has
	// been kicked yet: a command that arrives before then is answered as
	// usual, and the first one after it gets the 421.
	for n := 1; ; n++ {
		busy.send("NOOP\r\n")
		lines := busy.expect("")
		if strings.HasPrefix(lines[len(lines)-1], "421") {
			break
		}
		if !strings.HasPrefix(lines[len(lines)-1], "250") || n == 1000 {
			t.Fatalf("after the transaction, NOOP %d got %q, want 250 until the shutdown reaches the session, then 421", n, lines)
		}
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	if len(h.messages()) != 1 {
		t.Error("message lost in shutdown")
	}
}

func TestServeConnPipe(t *testing.T) {
	testpeer.CheckGoroutines(t, testTimeout)
	h := &recHandler{}
	srv := &Server{Handler: h, Hostname: "mx.test", ErrorLog: quietLog(t)}
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- srv.ServeConn(context.Background(), a, &mail.ConnInfo{RemoteHost: "tcpremote.example"})
	}()
	c := &rawClient{t: t}
	c.useConn(b)
	c.expect("220")
	c.cmd("HELO x", "250")
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.cmd("DATA", "354")
	c.send("x\r\n.\r\n")
	c.expect("250")
	c.cmd("QUIT", "221")
	b.Close()
	if err := <-done; err != nil {
		t.Errorf("ServeConn: %v", err)
	}
	if m := h.messages(); len(m) != 1 || !strings.HasPrefix(m[0].body, "Received: from tcpremote.example (HELO x)") {
		t.Errorf("messages %+v", m)
	}
}

// go-smtp lets MAIL through inside a transaction and keeps the old
// recipients; the session refuses it, so no envelope mixes two senders or
// arrives without recipients.
func TestNestedMail(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.cmd("MAIL FROM:<other@b.example>", "503 5.5.1")
	c.cmd("DATA", "354")
	c.send("x\r\n.\r\n")
	c.expect("250")
	if m := h.messages()[0]; m.env.Sender != "a@b.example" || len(m.env.Recipients) != 1 {
		t.Errorf("envelope %+v", m.env)
	}
	// Control characters in an address are refused: they could not go out
	// over SMTP again.
	c.cmd("MAIL FROM:<\"a\x01b\"@b.example>", "553")
}

func TestNilHandler(t *testing.T) {
	addr := startServer(t, &Server{})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.cmd("MAIL FROM:<a@b.example>", "451 4.3.0")
}

// runtimeMem reads the allocation counters.
type runtimeMem struct{ total uint64 }

func (m *runtimeMem) read() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.total = ms.TotalAlloc
}
