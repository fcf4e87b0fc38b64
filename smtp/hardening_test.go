package smtp

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRcptPostmaster: RCPT TO:<Postmaster> without a domain must be
// accepted (RFC 5321 4.5.1); it names this host's postmaster.
func TestRcptPostmaster(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<Postmaster>", "250")
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.recipients) != 1 || h.recipients[0] != "postmaster@mx.test" {
		t.Fatalf("handler saw %q", h.recipients)
	}
}

// countingAuth counts the checks, and the most that ran at once; each
// check waits until `parallel` run together, or a short while.
type countingAuth struct {
	mu       sync.Mutex
	calls    int
	inside   int
	most     int
	parallel int
	full     chan struct{}
}

func (a *countingAuth) Authenticate(ctx context.Context, user, pass string) (bool, error) {
	a.mu.Lock()
	a.calls++
	a.inside++
	a.most = max(a.most, a.inside)
	if a.inside == a.parallel && a.full != nil {
		close(a.full)
		a.full = nil
	}
	full := a.full
	a.mu.Unlock()
	if full != nil {
		select {
		case <-full:
		case <-time.After(200 * time.Millisecond):
		}
	}
	a.mu.Lock()
	a.inside--
	a.mu.Unlock()
	return pass == "right", nil
}

// counts returns the checks made and the most run at once.
func (a *countingAuth) counts() (calls, most int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls, a.most
}

func authLine(user, pass string) string {
	return "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass))
}

// TestAuthChecksBounded: no more than MaxAuthChecks password checks run at
// once, however many clients try.
func TestAuthChecksBounded(t *testing.T) {
	const clients = 6
	a := &countingAuth{parallel: clients, full: make(chan struct{})}
	addr := startServer(t, &Server{Handler: &recHandler{}, Auth: a, AllowInsecureAuth: true,
		MaxAuthChecks: 2, AuthFailureDelay: -1, MaxAuthFailuresPerIP: -1})
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		c := dialRaw(t, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.expect("220")
			c.cmd("EHLO x", "250")
			c.cmd(authLine("u", "wrong"+strconv.Itoa(i)), "535")
		}()
	}
	wg.Wait()
	if _, most := a.counts(); most > 2 {
		t.Fatalf("%d password checks ran at once, want at most 2", most)
	}
}

// TestAuthFailuresPerAddress: failures count per client address across
// connections; past the limit AUTH is refused without a check.
func TestAuthFailuresPerAddress(t *testing.T) {
	a := &countingAuth{}
	addr := startServer(t, &Server{Handler: &recHandler{}, Auth: a, AllowInsecureAuth: true,
		MaxAuthFailuresPerIP: 2, MaxAuthFailures: -1, AuthFailureDelay: -1})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.cmd(authLine("u", "one"), "535")
	c.cmd(authLine("u", "two"), "535")
	c = dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.cmd(authLine("u", "right"), "421 4.7.0")
	c.eof()
	if calls, _ := a.counts(); calls != 2 {
		t.Fatalf("%d password checks, want 2", calls)
	}
}

// TestAuthRepeatedFailureCheap: the same wrong (user, password) again is
// refused without a second check; the right password still works.
func TestAuthRepeatedFailureCheap(t *testing.T) {
	a := &countingAuth{}
	addr := startServer(t, &Server{Handler: &recHandler{}, Auth: a, AllowInsecureAuth: true,
		MaxAuthFailuresPerIP: -1, MaxAuthFailures: -1, AuthFailureDelay: -1})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	for i := 0; i < 3; i++ {
		c.cmd(authLine("u", "wrong"), "535")
	}
	if calls, _ := a.counts(); calls != 1 {
		t.Fatalf("%d password checks for one wrong password tried three times, want 1", calls)
	}
	c.cmd(authLine("u", "right"), "235")
	c.cmd(authLine("u", "right"), "503") // already authenticated
	if calls, _ := a.counts(); calls != 2 {
		t.Fatalf("%d password checks, want 2", calls)
	}
}

// TestDotCR: CR LF "." CR X in DATA is a bare CR, refused with 554 5.6.0
// (go-smtp's reader would drop the ".\r" without a word), on a plain
// connection, under implicit TLS and after STARTTLS; the session goes on.
func TestDotCR(t *testing.T) {
	for _, mode := range []string{"plain", "implicit TLS", "STARTTLS"} {
		t.Run(mode, func(t *testing.T) {
			h := &recHandler{}
			s := &Server{Handler: h}
			if mode != "plain" {
				s.TLSConfig = serverTLSConfig(t)
			}
			addr := startServerTLS(t, s, mode == "implicit TLS")
			c := dialRaw(t, addr)
			if mode == "implicit TLS" {
				tc := tls.Client(c.c, clientTLSConfig(t))
				c.useConn(tc)
			}
			c.expect("220")
			c.cmd("EHLO x", "250")
			if mode == "STARTTLS" {
				startTLS(t, c)
			}
			c.cmd("MAIL FROM:<a@b.example>", "250")
			c.cmd("RCPT TO:<c@d.example>", "250")
			c.cmd("DATA", "354")
			c.send("Subject: x\r\n\r\nline\r\n.\rX smuggled\r\n.\r\n")
			c.expect("554 5.6.0")
			c.cmd("MAIL FROM:<a@b.example>", "250")
			c.cmd("RCPT TO:<c@d.example>", "250")
			c.cmd("DATA", "354")
			c.send("Subject: x\r\n\r\nclean\r\n..stuffed dot is fine\r\n.\r\n")
			c.expect("250")
			if n := len(h.messages()); n != 1 {
				t.Fatalf("%d messages committed, want 1", n)
			}
		})
	}
}

// TestDotLineCRCRLF: a line "." CR CR LF in DATA (the dot line of the
// terminator ending in CR CR LF) makes go-smtp's reader drop the ".\r" and
// lose its place; the client, which may take the line as its end of data,
// gets 554 5.6.0 at once (not 421 when the read times out), nothing is
// accepted, and the connection closes. The read timeout is far longer than
// the client's patience, so a reply that waited for it would fail the test.
func TestDotLineCRCRLF(t *testing.T) {
	for _, tail := range []string{".\r\r\n", ".\r\r\n.\r\n", ".\r\r\nQUIT\r\n"} {
		for _, mode := range []string{"plain", "implicit TLS", "STARTTLS"} {
			t.Run(fmt.Sprintf("%q/%s", tail, mode), func(t *testing.T) {
				h := &recHandler{}
				s := &Server{Handler: h, ReadTimeout: time.Hour, ErrorLog: quietLog(t)}
				if mode != "plain" {
					s.TLSConfig = serverTLSConfig(t)
				}
				addr := startServerTLS(t, s, mode == "implicit TLS")
				c := dialRaw(t, addr)
				if mode == "implicit TLS" {
					c.useConn(tls.Client(c.c, clientTLSConfig(t)))
				}
				c.expect("220")
				c.cmd("EHLO x", "250")
				if mode == "STARTTLS" {
					startTLS(t, c)
				}
				c.cmd("MAIL FROM:<a@b.example>", "250")
				c.cmd("RCPT TO:<c@d.example>", "250")
				c.cmd("DATA", "354")
				c.send("Subject: x\r\n\r\nline\r\n" + tail)
				c.expect("554 5.6.0")
				c.eof()
				if n := len(h.messages()); n != 0 {
					t.Fatalf("%d messages committed, want none", n)
				}
			})
		}
	}
}

// TestReplyTexts: replies carry qmgate's own plain texts, not go-smtp's.
func TestReplyTexts(t *testing.T) {
	addr := startServer(t, &Server{Handler: &recHandler{}})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	var all []string
	all = append(all, c.cmd("MAIL FROM:<a@b.example>", "250 2.0.0 sender <a@b.example> ok")...)
	all = append(all, c.cmd("RCPT TO:<c@d.example>", "250 2.0.0 recipient <c@d.example> ok")...)
	all = append(all, c.cmd("NOOP", "250")...)
	all = append(all, c.cmd("DATA", "354")...)
	c.send("\r\n.\r\n")
	all = append(all, c.expect("250")...)
	all = append(all, c.cmd("QUIT", "221")...)
	for _, l := range all {
		for _, joke := range []string{"Roger", "I'll make sure", "successfully done nothing", "Go ahead", "Bye"} {
			if strings.Contains(l, joke) {
				t.Errorf("reply %q carries go-smtp's text", l)
			}
		}
	}
}

// TestSTARTTLSInjection: commands sent in plaintext behind STARTTLS are
// never taken as sent under TLS (RFC 3207 5): the server closes.
func TestSTARTTLSInjection(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h, TLSConfig: serverTLSConfig(t)})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.send("STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
	c.expect("421 4.7.0")
	c.eof()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.senders) != 0 {
		t.Fatalf("injected command reached the handler: %q", h.senders)
	}
}

// syncBuffer is a log destination that tests may read while the server
// writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestSyntaxRefusalsLogged: the 500 and 501 replies go-smtp gives by itself
// leave a "refused" line like the server's other refusals. The line is
// written before the reply, so it is there once the client has the reply.
func TestSyntaxRefusalsLogged(t *testing.T) {
	var logs syncBuffer
	s := &Server{Handler: &recHandler{}, ErrorLog: slog.New(slog.NewTextHandler(&logs, nil))}
	addr := startServer(t, s)
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	c.cmd("MAIL <a@b.example>", "501 5.5.2")
	c.cmd("MAIL FROM:<a@b.example> SIZE=many", "501 5.5.4")
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT <c@d.example>", "501 5.5.2")
	c.cmd("DATA now", "501 5.5.4")
	got := logs.String()
	for _, want := range []string{
		`msg=refused proto=SMTP client=127.0.0.1 reason=syntax reply="Was expecting MAIL arg syntax of FROM:<address>" code=5.5.2 result=refused`,
		`reply="Unable to parse SIZE as an integer" code=5.5.4`,
		`reply="Was expecting RCPT arg syntax of TO:<address>" code=5.5.2`,
		`reply="DATA command should not have any arguments" code=5.5.4`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %s\nlog:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "reason=syntax"); n != 4 {
		t.Errorf("%d syntax refusals logged, want 4:\n%s", n, got)
	}
}

// TestRewriteLines: rewrite replaces go-smtp's texts line by line in a
// write of several lines, keeps the other lines and their order, and
// leaves a write without such texts (or without whole lines) as it is.
func TestRewriteLines(t *testing.T) {
	sc := &serverConn{srv: &Server{TLSConfig: &tls.Config{}}}
	for _, tc := range []struct{ in, want string }{
		{"250-mx.test\r\n250-CHUNKING\r\n250 SIZE 10\r\n", "250-mx.test\r\n250-CHUNKING\r\n250-STARTTLS\r\n250 SIZE 10\r\n"},
		{"250 2.0.0 Roger, accepting mail from <a@b.example>\r\n", "250 2.0.0 sender <a@b.example> ok\r\n"},
		{"250 2.0.0 ok\r\n354 Go ahead. End your data with <CR><LF>.<CR><LF>\r\n221 2.0.0 Bye\r\n", "250 2.0.0 ok\r\n354 end data with <CR><LF>.<CR><LF>\r\n221 2.0.0 closing connection\r\n"},
		{"250 2.0.0 ok queued\r\n", "250 2.0.0 ok queued\r\n"},
		{"221 2.0.0 Bye", "221 2.0.0 Bye"},
	} {
		out, changed := sc.rewrite([]byte(tc.in))
		if string(out) != tc.want || changed != (tc.in != tc.want) {
			t.Errorf("rewrite(%q) = %q, %v; want %q", tc.in, out, changed, tc.want)
		}
	}
}
