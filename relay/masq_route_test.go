package relay

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// TestHubMasqueradeThenRoute: acceptance checks routes with the addresses
// as masquerading rewrites them, which are the ones delivery routes by.
// Only sender routes and a local route, no general route after them:
//   - a route whose senders match only the rewritten domain takes the mail
//     (the original sender has no route, and was once refused);
//   - a route whose senders match only the original domain is not taken,
//     and its mail is refused at the door (it was once accepted, then found
//     no route at delivery);
//   - a recipient the admin rule rewrites is routed by its new domain;
//   - over SMTP, RCPT hears the same answers as QMTP;
//   - a stranger's mail, never rewritten, is routed as it came.
func TestHubMasqueradeThenRoute(t *testing.T) {
	rewritten := newRawSMTPSink(t, "127.0.0.1:0")
	original := newRawSMTPSink(t, "127.0.0.1:0")
	h := startHub(t, fmt.Sprintf(`
hostname = "hub.example.net"
rcpthosts = ["example.net"]
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.0/8"]
[smtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.0/8"]
[queue]
retry_min = "200ms"
retry_max = "400ms"
[[route]]
domains = ["example.net"]
via = "maildir:DIR/maildir"
[[route]]
domains = ["a.example"]
senders = ["*@example.net"]
via = "smtp://%s"
tls = "none"
[[route]]
domains = ["b.example"]
senders = ["*@app17.internal"]
via = "smtp://%s"
tls = "none"
[rewrite]
hosts = [{match = "*.internal", domain = "example.net"}]
admin = {address = "admin@example.net", hosts = ["*.internal"], users = ["root"]}
`, rewritten.l.Addr(), original.l.Addr()))

	env := mail.Envelope{Sender: "cron@app17.internal", Recipients: []string{"x@a.example", "y@b.example", "root@app17.internal"}}
	st := sendQMTP(t, h.addr("qmtp"), env, "From: cron@app17.internal\nSubject: nightly\n\nreport\n")
	if !st[0].IsAccept() {
		t.Errorf("x@a.example, by the rewritten sender's route: %v, want accepted", st[0])
	}
	if st[1].IsAccept() || st[1].EnhancedCode() != "5.1.2" {
		t.Errorf("y@b.example, by the original sender's route only: %v, want refused for no route", st[1])
	}
	if !st[2].IsAccept() {
		t.Errorf("root@app17.internal, rewritten to admin@example.net: %v, want accepted", st[2])
	}

	replies := smtpDialog(t, h.addr("smtp"), "EHLO app17.internal", "MAIL FROM:<cron@app17.internal>",
		"RCPT TO:<x@a.example>", "RCPT TO:<y@b.example>", "DATA", "From: cron@app17.internal\r\nSubject: by SMTP\r\n\r\nreport\r\n.")
	if !strings.HasPrefix(replies[2], "250") || !strings.HasPrefix(replies[3], "5") || !strings.HasPrefix(replies[5], "250") {
		t.Errorf("over SMTP: RCPT x@a.example %q (want 250), RCPT y@b.example %q (want 5xx), end of data %q (want 250)", replies[2], replies[3], replies[5])
	}

	testpeer.WaitFor(t, "both deliveries by the rewritten sender's route and the admin's copy", 30*time.Second, func() bool {
		return len(rewritten.transactions()) == 2 && len(maildirFiles(t, filepath.Join(h.dir, "maildir"), "example.net", "admin")) == 1
	})
	for _, tx := range rewritten.transactions() {
		from, _, _ := strings.Cut(tx.From, " ")
		if from != "<cron@example.net>" || len(tx.To) != 1 || tx.To[0] != "<x@a.example>" {
			t.Errorf("the rewritten sender's route got MAIL FROM %s RCPT TO %v, want <cron@example.net> to <x@a.example>", tx.From, tx.To)
		}
	}
	if n := len(original.transactions()); n != 0 {
		t.Errorf("the original sender's route took %d messages, want none", n)
	}

	// A stranger (not a relay client) is not masqueraded: the route is
	// the one for its sender as it came.
	s := startHub(t, `
rcpthosts = ["example.net"]
[qmtp]
listen = ["127.0.0.1:0"]
[[route]]
domains = ["example.net"]
senders = ["*@app17.internal"]
via = "maildir:DIR/maildir"
[rewrite]
hosts = [{match = "*.internal", domain = "example.net"}]
`)
	st = sendQMTP(t, s.addr("qmtp"), mail.Envelope{Sender: "cron@app17.internal", Recipients: []string{"ops@example.net"}}, "Subject: in\n\nhello\n")
	if !st[0].IsAccept() {
		t.Fatalf("a stranger's mail for rcpthosts, by its own sender's route: %v", st[0])
	}
	testpeer.WaitFor(t, "the stranger's message", 30*time.Second, func() bool {
		return len(maildirFiles(t, filepath.Join(s.dir, "maildir"), "example.net", "ops")) == 1
	})
}
