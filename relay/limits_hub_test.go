package relay

import (
	"context"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
)

// The rate limits end to end, through `qmgate serve`'s hub: each protocol's
// refusal names the limit, exempt clients pass, a reload keeps or resets
// the counts.

const limitsRoute = `
[[route]]
domains = ["*"]
via = "discard:"
`

func (th *testHub) refusals(limit string) float64 {
	th.t.Helper()
	return gatherValue(th.t, th.hub.metrics.Registry, "qmgate_limit_refusals_total", limit)
}

func (th *testHub) reload(doc string) {
	th.t.Helper()
	doc = "queue_dir = \"" + th.cfg.QueueDir + "\"\n" + strings.ReplaceAll(doc, "DIR", th.dir)
	cfg, err := config.Parse("reload.toml", []byte(doc))
	if err != nil {
		th.t.Fatal(err)
	}
	if err := th.hub.Reload(cfg); err != nil {
		th.t.Fatal(err)
	}
}

func sendQMQP(t *testing.T, addr string, rcpts ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := "Subject: limits\n\nx\n"
	res, err := qmqp.Send(ctx, []string{addr}, mail.Envelope{Sender: "app@example.net", Recipients: rcpts}, strings.NewReader(body), int64(len(body)))
	if err != nil && res.Status.Class == 0 {
		t.Fatalf("qmqp send: %v", err)
	}
	return string(res.Status.Reply())
}

func TestHubLimitsSMTP(t *testing.T) {
	const limits = `
rcpthosts = ["example.net"]
[smtp]
listen = ["127.0.0.1:0"]
[limits]
client_messages = ["2/m"]
client_recipients = ["4/m"]
`
	h := startHub(t, limits+limitsRoute)
	data := "Subject: limits\r\n\r\nx\r\n."
	got := smtpDialog(t, h.addr("smtp"),
		"EHLO client.test",
		"MAIL FROM:<s@client.test>", "RCPT TO:<a@example.net>", "RCPT TO:<b@example.net>", "RCPT TO:<c@example.net>", "DATA", data,
		"MAIL FROM:<s@client.test>", "RCPT TO:<d@example.net>", "RCPT TO:<e@example.net>", "DATA", data,
		"MAIL FROM:<s@client.test>",
	)
	want := []string{
		"250", "250", "250", "250", "250", "354", "250",
		"250", "250", "451 4.7.1 too many recipients from this client: 4/m", "354", "250",
		"451 4.7.1 too much mail from this client: 2/m",
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Fatalf("reply %d: %q, want %q\nall: %q", i, got[i], want[i], got)
		}
	}
	log := h.logText()
	for _, l := range []string{"client_messages", "client_recipients"} {
		if n := strings.Count(log, `msg="refused over a rate limit" client=127.0.0.1 proto=SMTP limit=`+l+" "); n != 1 {
			t.Errorf("%d log lines for the %s refusal:\n%s", n, l, log)
		}
		if n := h.refusals(l); n != 1 {
			t.Errorf("qmgate_limit_refusals_total{limit=%q} = %v, want 1", l, n)
		}
	}

	// Exempt clients pass: a listed network, or a relay client when
	// exempt_relay_clients is set.
	for name, doc := range map[string]string{
		"exempt network": limits + "exempt = [\"127.0.0.0/8\"]\n",
		"relay client":   strings.Replace(limits, "[smtp]\n", "[smtp]\nrelay_clients = [\"127.0.0.0/8\"]\n", 1) + "exempt_relay_clients = true\n",
	} {
		t.Run(name, func(t *testing.T) {
			h := startHub(t, doc+limitsRoute)
			cmds := []string{"EHLO client.test"}
			for range 3 {
				cmds = append(cmds, "MAIL FROM:<s@client.test>", "RCPT TO:<a@example.net>", "RCPT TO:<b@example.net>", "DATA", data)
			}
			for i, r := range smtpDialog(t, h.addr("smtp"), cmds...) {
				if r[0] != '2' && r[0] != '3' {
					t.Fatalf("reply %d to an exempt client: %q", i, r)
				}
			}
		})
	}
}

// An authenticated user is held to its own limit wherever it connects
// from, and a sender domain to its own.
func TestHubLimitsSMTPUserAndSenderDomain(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(pw, []byte("joe:"+string(hash)+"\n"), 0o600)
	h := startHub(t, `
rcpthosts = ["example.net"]
[smtp]
listen = ["127.0.0.1:0"]
auth_file = "`+pw+`"
auth_without_tls = true
[limits]
user_messages = ["1/h"]
sender_domain_messages = ["2/d"]
`+limitsRoute)
	data := "Subject: limits\r\n\r\nx\r\n."
	auth := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00joe\x00s3cret"))
	got := smtpDialog(t, h.addr("smtp"), "EHLO client.test", auth,
		"MAIL FROM:<joe@Dom.example>", "RCPT TO:<a@elsewhere.org>", "DATA", data,
		"MAIL FROM:<joe@dom.example>")
	if !strings.HasPrefix(got[1], "235") || !strings.HasPrefix(got[5], "250") || got[6] != "451 4.7.1 too much mail from this user: 1/h" {
		t.Fatalf("authenticated user: %q", got)
	}
	got = smtpDialog(t, h.addr("smtp"), "EHLO client.test",
		"MAIL FROM:<x@DOM.example>", "RCPT TO:<a@example.net>", "DATA", data,
		"MAIL FROM:<y@dom.example>", "MAIL FROM:<>")
	if !strings.HasPrefix(got[4], "250") || got[5] != "451 4.7.1 too much mail from this sender's domain: 2/d" || !strings.HasPrefix(got[6], "250") {
		t.Fatalf("sender domain: %q", got)
	}
	if !strings.Contains(h.logText(), "limit=sender_domain_messages rate=2/d counted_as=dom.example from=y@dom.example") {
		t.Fatalf("log:\n%s", h.logText())
	}
}

// QMTP answers each recipient: those over a limit get Z with the limit,
// the others are delivered.
func TestHubLimitsQMTP(t *testing.T) {
	h := startHub(t, `
rcpthosts = ["example.net"]
[qmtp]
listen = ["127.0.0.1:0"]
[limits]
client_messages = ["1/m"]
client_recipients = ["3/m"]
`+limitsRoute)
	send := func(rcpts ...string) []string {
		var out []string
		for _, st := range sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "s@client.test", Recipients: rcpts}, "Subject: limits\n\nx\n") {
			out = append(out, string(st.Reply()))
		}
		return out
	}
	if got := send("a@example.net", "b@example.net"); !strings.HasPrefix(got[0], "K") || !strings.HasPrefix(got[1], "K") {
		t.Fatalf("first package: %q", got)
	}
	got := send("c@example.net", "d@example.net")
	if got[0] != "Ztoo much mail from this client: 1/m (#4.7.1)" || got[1] != "Ztoo many recipients from this client: 3/m (#4.7.1)" {
		t.Fatalf("second package: %q", got)
	}
	if h.refusals("client_messages") != 1 || h.refusals("client_recipients") != 1 {
		t.Fatalf("refusals counted: %v, %v", h.refusals("client_messages"), h.refusals("client_recipients"))
	}
}

// QMQP over TCP: one reply for the message; a refused message counts
// nothing; a reload with the same rates keeps the counts, new rates start
// afresh; exempt_relay_clients lets allowed clients through.
func TestHubLimitsQMQP(t *testing.T) {
	doc := `
[qmqp]
listen = ["127.0.0.1:0"]
allow = ["127.0.0.0/8"]
[limits]
client_messages = ["2/m"]
client_recipients = ["4/m"]
` + limitsRoute
	h := startHub(t, doc)
	addr := h.addr("qmqp")
	for i, tc := range []struct {
		rcpts []string
		want  string
	}{
		{[]string{"a@x.org", "b@x.org", "c@x.org", "d@x.org", "e@x.org"}, "Ztoo many recipients from this client: 4/m (#4.7.1)"},
		{[]string{"a@x.org", "b@x.org"}, "K"},
		{[]string{"c@x.org"}, "K"},
		{[]string{"d@x.org"}, "Ztoo much mail from this client: 2/m (#4.7.1)"},
	} {
		if got := sendQMQP(t, addr, tc.rcpts...); !strings.HasPrefix(got, tc.want) {
			t.Fatalf("message %d: %q, want %q", i, got, tc.want)
		}
	}
	if n := gatherValue(t, h.hub.metrics.Registry, "qmgate_limit_keys", "client_messages"); n != 1 {
		t.Fatalf("qmgate_limit_keys{limit=\"client_messages\"} = %v, want 1", n)
	}
	if n := h.refusals("client_recipients"); n != 1 {
		t.Fatalf("qmgate_limit_refusals_total{limit=\"client_recipients\"} = %v, want 1", n)
	}
	h.reload(doc)
	if got := sendQMQP(t, addr, "d@x.org"); got != "Ztoo much mail from this client: 2/m (#4.7.1)" {
		t.Fatalf("after a reload with the same rates: %q", got)
	}
	if !strings.Contains(h.logText(), `counts_kept="client_messages client_recipients" counts_reset=""`) {
		t.Fatalf("reload log:\n%s", h.logText())
	}
	h.reload(strings.Replace(doc, `["2/m"]`, `["3/m"]`, 1))
	if got := sendQMQP(t, addr, "d@x.org"); !strings.HasPrefix(got, "K") {
		t.Fatalf("after a reload with a new rate: %q", got)
	}
	if got := sendQMQP(t, addr, "e@x.org"); got != "Ztoo many recipients from this client: 4/m (#4.7.1)" {
		t.Fatalf("the recipients' kept count: %q", got)
	}

	ex := startHub(t, strings.Replace(doc, "[limits]\n", "[limits]\nexempt_relay_clients = true\n", 1))
	for i := range 4 {
		if got := sendQMQP(t, ex.addr("qmqp"), "a@x.org", "b@x.org"); !strings.HasPrefix(got, "K") {
			t.Fatalf("message %d from an exempt QMQP client: %q", i, got)
		}
	}
}

// The QMQP unix socket: local users are limited per uid, and neither an
// exempt network nor exempt_relay_clients exempts them.
func TestHubLimitsUnixSocket(t *testing.T) {
	u := me(t)
	h := startHub(t, `
[qmqp]
listen = ["unix:DIR/qmqp.sock"]
[limits]
uid_messages = ["1/m"]
client_messages = ["1/s"]
exempt = ["0.0.0.0/0", "::/0"]
exempt_relay_clients = true
`+limitsRoute)
	sock := filepath.Join(h.dir, "qmqp.sock")
	env := mail.Envelope{Sender: "me@example.net", Recipients: []string{"a@x.org"}}
	if st := sendUnixQMQP(t, sock, env); !st.IsAccept() {
		t.Fatal(st)
	}
	if got := string(sendUnixQMQP(t, sock, env).Reply()); got != "Ztoo much mail from this local user: 1/m (#4.7.1)" {
		t.Fatalf("second message: %q", got)
	}
	if !strings.Contains(h.logText(), `limit=uid_messages rate=1/m counted_as="uid `+u.Uid+` (`+u.Username+`)"`) {
		t.Fatalf("log:\n%s", h.logText())
	}
}

// TestHubConnLimitExemptsTrusted: max_conns_per_ip does not hold back the
// QMQP allow list (nor relay clients, nor [limits] exempt) unless
// limit_trusted_conns is set, as Postfix exempts mynetworks: an app-server
// fleet behind one address may open more sessions than one client.
func TestHubConnLimitExemptsTrusted(t *testing.T) {
	const cfg = `
rcpthosts = ["example.net"]
[qmqp]
listen = ["127.0.0.1:0"]
allow = ["127.0.0.0/8"]
max_conns_per_ip = 1
`
	for _, tc := range []struct {
		extra string
		want  string
	}{
		{"", "K"},
		{"[limits]\nlimit_trusted_conns = true\n", "Z"},
	} {
		h := startHub(t, cfg+tc.extra+limitsRoute)
		// A session that holds its slot; the kernel hands connections to
		// the accept loop in order, so it is admitted before the next.
		held, err := net.Dial("tcp", h.addr("qmqp"))
		if err != nil {
			t.Fatal(err)
		}
		got := sendQMQP(t, h.addr("qmqp"), "a@example.net")
		held.Close()
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("%q: second session got %q, want %s", tc.extra, got, tc.want)
		}
	}
}
