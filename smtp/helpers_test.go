package smtp

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// testTimeout is a generous bound for anything a test waits on: it only
// catches hangs, it never measures speed.
const testTimeout = 30 * time.Second

// delivery is one message a recHandler committed.
type delivery struct {
	info mail.ConnInfo
	env  mail.Envelope
	body string
}

// recHandler records what the server hands it. By default it accepts every
// address and commits every message; the fields change that.
type recHandler struct {
	mu         sync.Mutex
	senders    []string
	recipients []string
	msgs       []delivery
	// Optional overrides.
	sender    func(from string) mail.Status
	recipient func(rcpt string) mail.Status
	deliver   func(body []byte, readErr error) mail.Status
	delivered chan struct{} // gets a value per Deliver call, when set
}

func (h *recHandler) Sender(ctx context.Context, c *mail.ConnInfo, from string) mail.Status {
	h.mu.Lock()
	h.senders = append(h.senders, from)
	h.mu.Unlock()
	if h.sender != nil {
		return h.sender(from)
	}
	return mail.OK("")
}

func (h *recHandler) Recipient(ctx context.Context, c *mail.ConnInfo, from, rcpt string) mail.Status {
	h.mu.Lock()
	h.recipients = append(h.recipients, rcpt)
	h.mu.Unlock()
	if h.recipient != nil {
		return h.recipient(rcpt)
	}
	return mail.OK("")
}

func (h *recHandler) Deliver(ctx context.Context, c *mail.ConnInfo, env mail.Envelope, body io.Reader) mail.Status {
	b, err := io.ReadAll(body)
	defer func() {
		if h.delivered != nil {
			h.delivered <- struct{}{}
		}
	}()
	if h.deliver != nil {
		return h.deliver(b, err)
	}
	if err != nil {
		return mail.StatusOf(err)
	}
	h.mu.Lock()
	h.msgs = append(h.msgs, delivery{info: *c, env: env, body: string(b)})
	h.mu.Unlock()
	return mail.OK("queued")
}

func (h *recHandler) messages() []delivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]delivery(nil), h.msgs...)
}

// stripReceived removes the server's Received line (two lines) from a body.
func stripReceived(t testing.TB, body string) string {
	t.Helper()
	if !strings.HasPrefix(body, "Received: from ") {
		t.Fatalf("body does not start with a Received line: %q", body)
	}
	i := strings.Index(body, "\n  by ")
	if i < 0 {
		t.Fatalf("malformed Received line: %q", body)
	}
	j := strings.IndexByte(body[i+1:], '\n')
	return body[i+1+j+1:]
}

// quietLog discards log output unless the test fails.
func quietLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startServer serves s on a loopback port until the test ends.
func startServer(t testing.TB, s *Server) string {
	return startServerTLS(t, s, false)
}

func startServerTLS(t testing.TB, s *Server, implicit bool) string {
	t.Helper()
	if s.ErrorLog == nil {
		s.ErrorLog = quietLog(t)
	}
	if s.Hostname == "" {
		s.Hostname = "mx.test"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		if implicit {
			done <- s.ServeTLS(l)
		} else {
			done <- s.Serve(l)
		}
	}()
	t.Cleanup(func() {
		s.Close()
		select {
		case err := <-done:
			if !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v", err)
			}
		case <-time.After(testTimeout):
			t.Error("Serve did not return after Close")
		}
	})
	return l.Addr().String()
}

// rawClient speaks SMTP byte by byte, to see exactly what the server says.
type rawClient struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testTimeout))
	return &rawClient{t: t, c: c, r: bufio.NewReader(c)}
}

// useConn switches to a new underlying connection (after STARTTLS).
func (rc *rawClient) useConn(c net.Conn) {
	rc.c = c
	rc.r = bufio.NewReader(c)
}

func (rc *rawClient) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatalf("write %q: %v", s, err)
	}
}

// reply reads one (possibly multi-line) reply and returns the code and the
// lines with their codes.
func (rc *rawClient) reply() (int, []string) {
	rc.t.Helper()
	var lines []string
	for {
		line, err := rc.r.ReadString('\n')
		if err != nil {
			rc.t.Fatalf("reading reply (so far %q): %v", lines, err)
		}
		if !strings.HasSuffix(line, "\r\n") || len(line) < 5 {
			rc.t.Fatalf("malformed reply line %q", line)
		}
		line = strings.TrimSuffix(line, "\r\n")
		lines = append(lines, line)
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			rc.t.Fatalf("malformed reply line %q", line)
		}
		if len(line) == 3 || line[3] == ' ' {
			return code, lines
		}
		if line[3] != '-' {
			rc.t.Fatalf("malformed reply line %q", line)
		}
	}
}

// expect reads a reply and checks that it starts with prefix (such as
// "250" or "554 5.6.0").
func (rc *rawClient) expect(prefix string) []string {
	rc.t.Helper()
	_, lines := rc.reply()
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, prefix) {
		rc.t.Fatalf("got reply %q, want %q", lines, prefix)
	}
	return lines
}

// cmd sends one command line and checks the reply.
func (rc *rawClient) cmd(line, want string) []string {
	rc.t.Helper()
	rc.send(line + "\r\n")
	return rc.expect(want)
}

// eof checks that the server has closed the connection.
func (rc *rawClient) eof() {
	rc.t.Helper()
	b, err := rc.r.ReadString('\n')
	if err == nil {
		rc.t.Fatalf("want the connection closed, got %q", b)
	}
}

// testPKI is a throw-away CA and a server certificate for 127.0.0.1 and
// localhost, made fresh per test binary.
type testPKI struct {
	pool       *x509.CertPool
	serverCert tls.Certificate
}

var (
	pkiOnce sync.Once
	pki     testPKI
)

func getPKI(t testing.TB) testPKI {
	t.Helper()
	pkiOnce.Do(func() {
		caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		now := time.Now()
		caTmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "qmgate test CA"},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(24 * time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		}
		caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
		if err != nil {
			panic(err)
		}
		caCert, _ := x509.ParseCertificate(caDER)
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(2),
			Subject:      pkix.Name{CommonName: "localhost"},
			DNSNames:     []string{"localhost", "mx.test"},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			panic(err)
		}
		pki.pool = x509.NewCertPool()
		pki.pool.AddCert(caCert)
		pki.serverCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	})
	return pki
}

func serverTLSConfig(t testing.TB) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{getPKI(t).serverCert}}
}

func clientTLSConfig(t testing.TB) *tls.Config {
	return &tls.Config{RootCAs: getPKI(t).pool, ServerName: "localhost"}
}

// passwords is a test Authenticator.
type passwords map[string]string

func (p passwords) Authenticate(ctx context.Context, user, pass string) (bool, error) {
	if user == "broken" {
		return false, errors.New("password database unreachable at /secret/path")
	}
	want, ok := p[user]
	return ok && want == pass, nil
}
