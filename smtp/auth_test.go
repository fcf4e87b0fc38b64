package smtp

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// startTLS runs STARTTLS on c and greets again.
func startTLS(t *testing.T, c *rawClient) []string {
	t.Helper()
	c.cmd("STARTTLS", "220")
	tc := tls.Client(c.c, clientTLSConfig(t))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	c.useConn(tc)
	return c.cmd("EHLO client.test", "250")
}

func authServer(t *testing.T, h *recHandler) *Server {
	return &Server{
		Handler:          h,
		TLSConfig:        serverTLSConfig(t),
		Auth:             passwords{"alice": "secret", "bob": "hunter2"},
		AuthFailureDelay: time.Millisecond,
	}
}

func TestSTARTTLSAndAuth(t *testing.T) {
	testpeer.CheckGoroutines(t, testTimeout)
	h := &recHandler{}
	addr := startServer(t, authServer(t, h))
	c := dialRaw(t, addr)
	c.expect("220")
	ehlo := c.cmd("EHLO client.test", "250")
	if !hasLine(ehlo, "STARTTLS") {
		t.Errorf("STARTTLS not offered: %q", ehlo)
	}
	if hasLine(ehlo, "AUTH") {
		t.Errorf("AUTH offered before TLS: %q", ehlo)
	}
	// AUTH before TLS is refused without looking at the credentials.
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00secret"), "538 5.7.11")
	ehlo = startTLS(t, c)
	if hasLine(ehlo, "STARTTLS") || !hasLine(ehlo, "AUTH") || !strings.Contains(strings.Join(ehlo, "\n"), "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO after STARTTLS: %q", ehlo)
	}
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00wrong"), "535 5.7.8")
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00secret"), "235")
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00secret"), "503") // once per session
	c.cmd("MAIL FROM:<alice@example.org>", "250")
	c.cmd("RCPT TO:<x@example.net>", "250")
	c.cmd("DATA", "354")
	c.send("hi\r\n.\r\n")
	c.expect("250")
	m := h.messages()[0]
	if m.info.Proto != "ESMTPSA" || m.info.AuthUser != "alice" || m.info.TLS == nil {
		t.Errorf("ConnInfo %+v", m.info)
	}
	if !strings.Contains(m.body, " with ESMTPSA; ") {
		t.Errorf("Received line: %q", m.body)
	}
}

func TestAuthPlainChallenge(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, authServer(t, h))
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	startTLS(t, c)
	// No initial response: an empty challenge, then the response.
	c.cmd("AUTH PLAIN", "334")
	c.cmd(b64("\x00bob\x00hunter2"), "235")
	// Another identity than one's own is refused.
	c = dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	startTLS(t, c)
	c.cmd("AUTH PLAIN "+b64("alice\x00bob\x00hunter2"), "535 5.7.8")
	// Malformed, and cancelled.
	c.cmd("AUTH PLAIN "+b64("no nul bytes"), "501 5.5.2")
	c.cmd("AUTH PLAIN", "334")
	c.cmd("*", "501")
}

func TestAuthLogin(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, authServer(t, h))
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	startTLS(t, c)
	c.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6")
	c.cmd(b64("alice"), "334 UGFzc3dvcmQ6")
	c.cmd(b64("bad"), "535 5.7.8")
	// With the user name as initial response.
	c.cmd("AUTH LOGIN "+b64("alice"), "334 UGFzc3dvcmQ6")
	c.cmd(b64("secret"), "235")
	c.cmd("MAIL FROM:<a@b.example>", "250")
}

func TestAuthBruteForceGuard(t *testing.T) {
	testpeer.CheckGoroutines(t, testTimeout)
	h := &recHandler{}
	srv := authServer(t, h)
	addr := startServer(t, srv)
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	startTLS(t, c)
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00a"), "535 5.7.8")
	c.cmd("AUTH LOGIN "+b64("alice"), "334")
	c.cmd(b64("b"), "535 5.7.8")
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00c"), "421 4.7.0")
	c.eof()
	// Failures count per connection across STARTTLS, and a temporary
	// trouble of the authenticator is not a failure.
	c = dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	startTLS(t, c)
	lines := c.cmd("AUTH PLAIN "+b64("\x00broken\x00x"), "454 4.7.0")
	checkNoSecret(t, lines)
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00secret"), "235")
}

func TestAuthNotOffered(t *testing.T) {
	h := &recHandler{}
	// No authenticator: no AUTH, even over TLS.
	addr := startServer(t, &Server{Handler: h, TLSConfig: serverTLSConfig(t)})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	if hasLine(startTLS(t, c), "AUTH") {
		t.Error("AUTH offered without an authenticator")
	}
	c.cmd("AUTH PLAIN "+b64("\x00a\x00b"), "502")
	// AllowInsecureAuth offers it in clear.
	addr = startServer(t, &Server{Handler: h, Auth: passwords{"a": "b"}, AllowInsecureAuth: true})
	c = dialRaw(t, addr)
	c.expect("220")
	if !hasLine(c.cmd("EHLO x", "250"), "AUTH") {
		t.Error("AUTH not offered with AllowInsecureAuth")
	}
	// AUTH is not allowed inside a transaction.
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("AUTH PLAIN "+b64("\x00a\x00b"), "503 5.5.1")
}

func TestImplicitTLS(t *testing.T) {
	testpeer.CheckGoroutines(t, testTimeout)
	h := &recHandler{}
	srv := authServer(t, h)
	srv.RequireAuth = true
	addr := startServerTLS(t, srv, true)
	c := dialRaw(t, addr)
	tc := tls.Client(c.c, clientTLSConfig(t))
	c.useConn(tc)
	c.expect("220")
	ehlo := c.cmd("EHLO x", "250")
	if hasLine(ehlo, "STARTTLS") || !hasLine(ehlo, "AUTH") {
		t.Errorf("EHLO on implicit TLS: %q", ehlo)
	}
	c.cmd("MAIL FROM:<a@b.example>", "530 5.7.0")
	c.cmd("AUTH PLAIN "+b64("\x00bob\x00hunter2"), "235")
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.cmd("DATA", "354")
	c.send("x\r\n.\r\n")
	c.expect("250")
	if m := h.messages()[0]; m.info.Proto != "ESMTPSA" {
		t.Errorf("Proto %q", m.info.Proto)
	}
	// Connection limits on an implicit-TLS listener answer inside TLS.
	srv2 := authServer(t, h)
	srv2.MaxConnsPerIP = 1
	addr2 := startServerTLS(t, srv2, true)
	a := dialRaw(t, addr2)
	a.useConn(tls.Client(a.c, clientTLSConfig(t)))
	a.expect("220")
	b := dialRaw(t, addr2)
	b.useConn(tls.Client(b.c, clientTLSConfig(t)))
	b.expect("421 4.3.2")
}

// ConnContext runs once per connection, STARTTLS or not, and what it sets
// reaches the handler with the server's own fields kept current.
func TestConnContextOnce(t *testing.T) {
	h := &recHandler{}
	srv := authServer(t, h)
	var calls atomic.Int32
	srv.ConnContext = func(ctx context.Context, info *mail.ConnInfo) (context.Context, error) {
		calls.Add(1)
		if info.Proto != "SMTP" || !info.RemoteIP().IsLoopback() || info.LocalHost != "mx.test" {
			t.Errorf("ConnContext got %+v", info)
		}
		info.RemoteHost = "client.example"
		info.RelayClient = true
		return ctx, nil
	}
	addr := startServer(t, srv)
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO first", "250")
	startTLS(t, c)
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.cmd("DATA", "354")
	c.send("x\r\n.\r\n")
	c.expect("250")
	c.cmd("QUIT", "221")
	c.eof()
	if n := calls.Load(); n != 1 {
		t.Errorf("ConnContext called %d times", n)
	}
	m := h.messages()[0]
	if !m.info.RelayClient || m.info.RemoteHost != "client.example" || m.info.Helo != "client.test" || m.info.Proto != "ESMTPS" {
		t.Errorf("ConnInfo %+v", m.info)
	}
	if !strings.HasPrefix(m.body, "Received: from client.example (HELO client.test) (127.0.0.1)\n  by mx.test with ESMTPS; ") {
		t.Errorf("Received: %q", m.body)
	}
}
