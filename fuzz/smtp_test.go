package fuzz

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/smtp"
)

// Limits of the fuzzed SMTP server, small so the fuzzer reaches them.
const (
	smtpFuzzMaxBytes = 64
	smtpFuzzMaxRcpts = 3
	smtpFuzzMaxHops  = 3
	smtpFuzzMaxLine  = 200
)

// smtpReplyLine is one well-formed reply line: a code of 2xx to 5xx, then a
// space or hyphen and text. The text is not checked for printable ASCII:
// go-smtp echoes the client's own bytes (an unknown command word, the HELO
// argument, the address in "250 ... Roger, accepting mail from <...>") as
// they came, bare CRs included.
var smtpReplyLine = regexp.MustCompile(`^[2-5][0-5][0-9]([ -][^\n]*)?$`)

// FuzzSMTPSession feeds arbitrary bytes to an SMTP server session as the
// whole client side, delivered chunk bytes per read (0: all at once), and
// checks that the session ends quickly without a panic, that every reply
// line is well-formed and multi-line replies hang together, that no
// internal error text reaches the client, and that no message is committed
// past the limits or with a bare CR.
func FuzzSMTPSession(f *testing.F) {
	for _, seed := range []string{
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<\"q u\"@d>\r\nRCPT TO:<z@d>\r\nRCPT TO:<e@d>\r\nDATA\r\n..x\r\n.\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\n.\nMAIL FROM:<s@m>\r\n.\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\r\n.\r\nNOOP\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 5\r\nab\r\ncBDAT 2 LAST\r\nd\r",
		"EHLO x\r\nAUTH PLAIN AHUAcA==\r\nAUTH LOGIN\r\ndQ==\r\ncA==\r\nMAIL FROM:<a@b> SIZE=10\r\n",
		"EHLO x\r\nAUTH PLAIN\r\n*\r\nAUTH LOGIN dQ==\r\neA==\r\nAUTH PLAIN AHUAeA==\r\nAUTH PLAIN AHUAeA==\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nReceived: x\r\nReceived: y\r\nDelivered-To: z\r\n\r\n.\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + strings.Repeat("x", 100) + "\r\n.\r\n",
		"EHLO " + strings.Repeat("y", 300) + "\r\n",
		"STARTTLS\r\nRSET\r\nVRFY x\r\nEXPN y\r\nHELP\r\nBDAT x\r\nDATA\r\nfoo\r\n",
	} {
		f.Add([]byte(seed), uint8(0))
		f.Add([]byte(seed), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		h := &smtpFuzzHandler{}
		srv := &smtp.Server{
			Hostname:          "fuzz.test",
			Handler:           h,
			Auth:              smtpFuzzAuth{},
			AllowInsecureAuth: true,
			AuthFailureDelay:  -1,
			MaxMessageBytes:   smtpFuzzMaxBytes,
			MaxRecipients:     smtpFuzzMaxRcpts,
			MaxHops:           smtpFuzzMaxHops,
			MaxLineLength:     smtpFuzzMaxLine,
			ErrorLog:          slog.New(slog.DiscardHandler),
		}
		c := newSMTPFuzzConn(in, int(chunk))
		done := make(chan error, 1)
		go func() { done <- srv.ServeConn(context.Background(), c, nil) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end")
		}
		out := c.out.String()
		if !strings.HasSuffix(out, "\r\n") {
			t.Fatalf("output does not end a line: %q", out)
		}
		if strings.Contains(out, "secret") || strings.Contains(out, "transaction failed") {
			t.Fatalf("internal text in a reply: %q", out)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n")
		if !strings.HasPrefix(lines[0], "220 ") {
			t.Fatalf("greeting %q", lines[0])
		}
		cont := ""
		for _, l := range lines {
			if !smtpReplyLine.MatchString(l) {
				t.Fatalf("malformed reply line %q in %q", l, out)
			}
			if cont != "" && l[:3] != cont {
				t.Fatalf("multi-line reply changes code at %q", l)
			}
			cont = ""
			if len(l) > 3 && l[3] == '-' {
				cont = l[:3]
			}
		}
		if cont != "" {
			t.Fatalf("unfinished multi-line reply in %q", out)
		}
		h.check(t)
	})
}

// smtpFuzzHandler answers by the address's first byte ('z' temporary, 'd'
// permanent, 'e' a plain Go error with internal text, anything else
// accepted) and records what it committed.
type smtpFuzzHandler struct {
	mu        sync.Mutex
	committed [][]byte
	bad       string // a broken promise seen inside a handler call
}

func smtpFuzzStatus(addr string) mail.Status {
	switch {
	case strings.HasPrefix(addr, "z"):
		return mail.Temp("4.0.0", "later")
	case strings.HasPrefix(addr, "d"):
		return mail.Perm("5.0.0", "no")
	case strings.HasPrefix(addr, "e"):
		return mail.StatusOf(errors.New("open /secret/spool: permission denied"))
	}
	return mail.OK("")
}

func (h *smtpFuzzHandler) Sender(ctx context.Context, c *mail.ConnInfo, from string) mail.Status {
	return smtpFuzzStatus(from)
}

func (h *smtpFuzzHandler) Recipient(ctx context.Context, c *mail.ConnInfo, from, rcpt string) mail.Status {
	return smtpFuzzStatus(rcpt)
}

func (h *smtpFuzzHandler) Deliver(ctx context.Context, c *mail.ConnInfo, env mail.Envelope, body io.Reader) mail.Status {
	b, err := io.ReadAll(body)
	if err != nil {
		return mail.StatusOf(err)
	}
	if len(env.Recipients) == 0 || len(env.Recipients) > smtpFuzzMaxRcpts {
		// Not a panic: go-smtp would recover it into a 421.
		h.mu.Lock()
		h.bad = "envelope with " + strconv.Itoa(len(env.Recipients)) + " recipients"
		h.mu.Unlock()
	}
	if strings.HasPrefix(env.Recipients[0], "e") {
		return mail.StatusOf(errors.New("secret disk trouble"))
	}
	h.mu.Lock()
	h.committed = append(h.committed, b)
	h.mu.Unlock()
	return mail.OK("queued")
}

// check verifies every committed message against the limits.
func (h *smtpFuzzHandler) check(t *testing.T) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.bad != "" {
		t.Fatal(h.bad)
	}
	for _, b := range h.committed {
		// Skip the server's two-line Received line.
		i := bytes.Index(b, []byte("\n  by "))
		j := bytes.IndexByte(b[i+1:], '\n')
		msg := b[i+1+j+1:]
		if len(msg) > smtpFuzzMaxBytes {
			t.Fatalf("committed %d bytes over the limit", len(msg))
		}
		if bytes.IndexByte(msg, '\r') >= 0 {
			t.Fatalf("committed a CR: %q", msg)
		}
		if n := bytes.Count(bytes.ToLower(msg), []byte("\nreceived:")) + bytes.Count(bytes.ToLower(msg), []byte("\ndelivered-to:")); n > 2*smtpFuzzMaxHops {
			t.Fatalf("committed a message with %d trace lines", n)
		}
	}
}

type smtpFuzzAuth struct{}

func (smtpFuzzAuth) Authenticate(ctx context.Context, user, pass string) (bool, error) {
	if user == "secret" {
		return false, errors.New("secret backend down")
	}
	return user == "u" && pass == "p", nil
}

// smtpFuzzConn is the client side as an in-memory connection: reads come
// from the input, chunk bytes at a time, writes go to a buffer; deadlines
// never fire.
type smtpFuzzConn struct {
	r     *bytes.Reader
	chunk int
	mu    sync.Mutex
	out   bytes.Buffer
}

func newSMTPFuzzConn(in []byte, chunk int) *smtpFuzzConn {
	return &smtpFuzzConn{r: bytes.NewReader(in), chunk: chunk}
}

func (c *smtpFuzzConn) Read(p []byte) (int, error) {
	if c.chunk > 0 && len(p) > c.chunk {
		p = p[:c.chunk]
	}
	return c.r.Read(p)
}

func (c *smtpFuzzConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *smtpFuzzConn) Close() error { return nil }
func (c *smtpFuzzConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25}
}
func (c *smtpFuzzConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 4242}
}
func (c *smtpFuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *smtpFuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *smtpFuzzConn) SetWriteDeadline(time.Time) error { return nil }
