package relay

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/smtp"
	"golang.org/x/crypto/bcrypt"
)

// TestHubAuthTLSMetrics: STARTTLS with the configured certificate; an
// authenticated user may relay (submission requires AUTH); a QMTPS client
// with a certificate from client_ca may relay, one without may not; TLS
// below 1.2 is refused; /metrics counts it all and /healthz answers.
func TestHubAuthTLSMetrics(t *testing.T) {
	pki := newTestPKI(t)
	// The cheapest bcrypt cost: the test is about the hub's AUTH rules, and
	// cost 12 under the race detector on a busy machine outlasts the
	// client's deadline.
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(pw, []byte("joe:"+string(hash)+"\n"), 0o600)
	h := startHub(t, fmt.Sprintf(`
rcpthosts = ["example.net"]
[smtp]
listen = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
tls_cert = %q
tls_key = %q
auth_file = %q
[qmtp]
listen_tls = ["127.0.0.1:0"]
tls_cert = %q
tls_key = %q
client_ca = %q
[metrics]
listen = "127.0.0.1:0"
[[route]]
domains = ["*"]
via = "discard:"
`, pki.Cert, pki.Key, pw, pki.Cert, pki.Key, pki.CA))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msg := "Subject: auth\n\nx\n"
	env := mail.Envelope{Sender: "joe@example.net", Recipients: []string{"friend@elsewhere.org"}}

	send := func(addr, user, pass string) []mail.Status {
		c := &smtp.Client{TLS: smtp.TLSRequired, TLSConfig: &tls.Config{RootCAs: pki.Pool, ServerName: "localhost"},
			Username: user, Password: pass}
		conn, err := c.Dial(ctx, "smtp://"+addr)
		if err != nil {
			return []mail.Status{mail.StatusOf(err)}
		}
		defer conn.Close()
		sts, _ := conn.Send(ctx, env, strings.NewReader(msg))
		return sts
	}
	if st := send(h.addr("submission"), "joe", "s3cret"); !st[0].IsAccept() {
		t.Fatalf("authenticated relay over submission: %v", st[0])
	}
	if st := send(h.addr("smtp"), "joe", "s3cret"); !st[0].IsAccept() {
		t.Fatalf("authenticated relay over port 25: %v", st[0])
	}
	if st := send(h.addr("smtp"), "", ""); st[0].IsAccept() {
		t.Fatalf("unauthenticated relay accepted")
	}
	if st := send(h.addr("submission"), "", ""); st[0].IsAccept() {
		t.Fatalf("submission without AUTH accepted")
	}
	if st := send(h.addr("submission"), "joe", "wrong"); st[0].IsAccept() {
		t.Fatalf("wrong password accepted")
	}

	qsend := func(cert *tls.Certificate) mail.Status {
		tc := &tls.Config{RootCAs: pki.Pool, ServerName: "localhost"}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		res, err := (&qmtp.Client{TLSConfig: tc}).Send(ctx, h.addr("qmtps"), &qmtp.Message{Envelope: env, Body: strings.NewReader(msg), Size: int64(len(msg))})
		if err != nil && len(res) == 0 {
			return mail.StatusOf(err)
		}
		return res[0][0]
	}
	if st := qsend(&pki.ClientPair); !st.IsAccept() {
		t.Fatalf("QMTPS with a client certificate may relay: %v", st)
	}
	if st := qsend(nil); st.IsAccept() || st.Code != "5.7.1" {
		t.Fatalf("QMTPS without a client certificate relayed: %v", st)
	}
	// TLS 1.1 is refused.
	c, err := tls.Dial("tcp", h.addr("qmtps"), &tls.Config{RootCAs: pki.Pool, ServerName: "localhost", MaxVersion: tls.VersionTLS11})
	if err == nil {
		c.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}

	resp, err := http.Get("http://" + h.addr("metrics") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`qmgate_messages_accepted_total{proto="SMTP"} 2`, `qmgate_messages_accepted_total{proto="QMTP"} 1`,
		`qmgate_messages_rejected_total{proto="QMTP",reason="relay"} 1`, `qmgate_messages_rejected_total{proto="SMTP",reason="relay"}`,
		"qmgate_queue_messages", "qmgate_sessions_open", "qmgate_deliveries_total",
		"qmgate_queue_flushes_total", "qmgate_queue_records_total", "qmgate_queue_commit_holds_total", "qmgate_queue_commit_hold_seconds_total"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	resp, err = http.Get("http://" + h.addr("metrics") + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestHubSenderLogin: with [smtp] sender_login, an authenticated user may
// send only as the senders named for it (issue 12: AUTH users could use any
// MAIL FROM); users not named, with no "*" entry, are not held.
func TestHubSenderLogin(t *testing.T) {
	pki := newTestPKI(t)
	var lines []string
	for _, u := range []string{"joe", "ann"} {
		hash, err := bcrypt.GenerateFromPassword([]byte("pw-"+u), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, u+":"+string(hash))
	}
	pw := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(pw, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	h := startHub(t, fmt.Sprintf(`
rcpthosts = ["example.net"]
[smtp]
submission = ["127.0.0.1:0"]
tls_cert = %q
tls_key = %q
auth_file = %q
sender_login = { joe = ["joe@example.net", "<>"] }
[[route]]
domains = ["*"]
via = "discard:"
`, pki.Cert, pki.Key, pw))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	send := func(user, from string) mail.Status {
		c := &smtp.Client{TLS: smtp.TLSRequired, TLSConfig: &tls.Config{RootCAs: pki.Pool, ServerName: "localhost"},
			Username: user, Password: "pw-" + user}
		conn, err := c.Dial(ctx, "smtp://"+h.addr("submission"))
		if err != nil {
			return mail.StatusOf(err)
		}
		defer conn.Close()
		sts, err := conn.Send(ctx, mail.Envelope{Sender: from, Recipients: []string{"friend@elsewhere.org"}}, strings.NewReader("Subject: x\n\nx\n"))
		if len(sts) == 0 {
			return mail.StatusOf(err)
		}
		return sts[0]
	}
	for _, tc := range []struct {
		user, from string
		ok         bool
	}{
		{"joe", "joe@example.net", true},
		{"joe", "", true},
		{"joe", "boss@example.net", false},
		{"ann", "boss@example.net", true}, // not named, no "*": not held
	} {
		st := send(tc.user, tc.from)
		if st.IsAccept() != tc.ok || (!tc.ok && st.Code != "5.7.1") {
			t.Errorf("%s as <%s>: %v, want accepted=%v", tc.user, tc.from, st, tc.ok)
		}
	}
}
