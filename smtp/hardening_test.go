package smtp

import (
	"testing"
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
