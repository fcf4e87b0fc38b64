package relay

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/mail"
)

// testLimits builds Limits from a [limits] table, logging into a buffer.
func testLimits(t *testing.T, table string) (*Limits, *bytes.Buffer) {
	t.Helper()
	cfg, err := config.Parse("t.toml", []byte("[limits]\n"+table))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	return newLimits(&cfg.Limits, slog.New(slog.NewTextHandler(&buf, nil))), &buf
}

func tcpClient(ip string) *mail.ConnInfo {
	return &mail.ConnInfo{Proto: "SMTP", RemoteAddr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}
}

// gathered reads the value of metric name{limit=limit} from c.
func gathered(t *testing.T, c prometheus.Collector, name, limit string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	return gatherValue(t, reg, name, limit)
}

// gatherValue reads the value of metric name{limit=limit} from g, -1 when
// it has none.
func gatherValue(t *testing.T, g prometheus.Gatherer, name, limit string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "limit" && lp.GetValue() == limit {
					if m.GetCounter() != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

// send runs one message through the limits as the handlers do: each
// recipient reserved, the message checked, then counted.
func send(l *Limits, c *mail.ConnInfo, from string, rcpts int) mail.Status {
	tl := l.Start(c, from)
	if st := tl.Recipients(rcpts); !st.IsAccept() {
		return st
	}
	st := tl.Message()
	if st.IsAccept() {
		tl.Count()
	}
	return st
}

func TestLimitsClient(t *testing.T) {
	l, logs := testLimits(t, `client_messages = ["3/m", "100/h"]`)
	c := tcpClient("192.0.2.1")
	for i := range 3 {
		if st := send(l, c, "a@example.com", 1); !st.IsAccept() {
			t.Fatalf("message %d: %v", i, st)
		}
	}
	st := send(l, c, "a@example.com", 1)
	if !st.IsTemporary() || st.EnhancedCode() != "4.7.1" || st.Text != "too much mail from this client: 3/m" {
		t.Fatalf("fourth message: %+v", st)
	}
	if got := string(st.Reply()); got != "Ztoo much mail from this client: 3/m (#4.7.1)" {
		t.Fatalf("QMTP/QMQP reply %q", got)
	}
	if st.SMTPCode() != 451 {
		t.Fatalf("SMTP code %d", st.SMTPCode())
	}
	if n := strings.Count(logs.String(), "refused over a rate limit"); n != 1 {
		t.Fatalf("%d log lines for one refusal:\n%s", n, logs)
	}
	for _, want := range []string{"client=192.0.2.1", "limit=client_messages", "rate=3/m", "counted_as=192.0.2.1/32", "from=a@example.com"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %s in the log line:\n%s", want, logs)
		}
	}
	if n := gathered(t, l.refusals, "qmgate_limit_refusals_total", "client_messages"); n != 1 {
		t.Fatalf("refusal metric %v", n)
	}
	if st := send(l, tcpClient("192.0.2.2"), "a@example.com", 1); !st.IsAccept() {
		t.Fatalf("another client: %v", st)
	}
	// IPv6 clients count per /64 by default.
	for i, ip := range []string{"2001:db8:1:2::1", "2001:db8:1:2::ffff", "2001:db8:1:2:aaaa::9"} {
		if st := send(l, tcpClient(ip), "", 1); !st.IsAccept() {
			t.Fatalf("IPv6 message %d: %v", i, st)
		}
	}
	if st := send(l, tcpClient("2001:db8:1:2::77"), "", 1); st.IsAccept() {
		t.Fatal("a fourth address of the same /64 was not held to its limit")
	}
	if st := send(l, tcpClient("2001:db8:1:3::1"), "", 1); !st.IsAccept() {
		t.Fatalf("the next /64: %v", st)
	}
	if !strings.Contains(logs.String(), "counted_as=2001:db8:1:2::/64") {
		t.Fatalf("the log does not name the network:\n%s", logs)
	}
}

// Recipients are reserved as accepted and counted with the message; a
// refused message or recipient counts nowhere.
func TestLimitsRecipientsAndRefusedMail(t *testing.T) {
	l, _ := testLimits(t, `client_recipients = ["5/m"]
sender_domain_messages = ["1/m"]`)
	c := tcpClient("192.0.2.1")
	tl := l.Start(c, "a@example.com")
	if st := tl.Recipients(3); !st.IsAccept() {
		t.Fatal(st)
	}
	if st := tl.Recipients(3); st.IsAccept() || st.Text != "too many recipients from this client: 5/m" {
		t.Fatalf("3 more over 5/m: %v", st)
	}
	if st := tl.Recipients(2); !st.IsAccept() {
		t.Fatalf("2 more within 5/m: %v", st)
	}
	// Nothing counted until the message is.
	if st := send(l, c, "b@other.example", 5); !st.IsAccept() {
		t.Fatalf("reserved recipients were counted: %v", st)
	}
	// The first message of example.com was not counted either: tl is
	// abandoned (its commit failed, say).
	if st := send(l, tcpClient("192.0.2.9"), "x@EXAMPLE.com", 1); !st.IsAccept() {
		t.Fatalf("a message that was never committed was counted: %v", st)
	}
	// Sender domains fold ASCII case.
	if st := send(l, tcpClient("192.0.2.10"), "y@example.COM", 1); st.Text != "too much mail from this sender's domain: 1/m" {
		t.Fatalf("second message of the domain: %v", st)
	}
	// A message refused for its sender domain counts no recipients: the
	// client 192.0.2.10 still has its 5.
	if st := send(l, tcpClient("192.0.2.10"), "y@elsewhere.example", 5); !st.IsAccept() {
		t.Fatalf("the refused message's recipients were counted: %v", st)
	}
	// The null sender has no domain: only the client limits apply.
	for range 3 {
		if st := send(l, tcpClient("192.0.2.11"), "", 1); !st.IsAccept() {
			t.Fatalf("null sender: %v", st)
		}
	}
}

func TestLimitsUserAndUID(t *testing.T) {
	l, logs := testLimits(t, `user_messages = ["1/h"]
uid_recipients = ["2/d"]
exempt_relay_clients = true
exempt = ["0.0.0.0/0"]`)
	// The user limit follows the user, not the address; an exempt network
	// exempts it (exempt means no limit at all).
	joe := &mail.ConnInfo{Proto: "ESMTPA", AuthUser: "joe", RemoteAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8::1")}}
	if st := send(l, joe, "", 1); !st.IsAccept() {
		t.Fatal(st)
	}
	joe2 := &mail.ConnInfo{Proto: "ESMTPA", AuthUser: "joe", RemoteAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8:ffff::1")}}
	if st := send(l, joe2, "", 1); st.Text != "too much mail from this user: 1/h" {
		t.Fatalf("joe from another address: %v", st)
	}
	if l.Start(&mail.ConnInfo{AuthUser: "joe", RemoteAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.1")}}, "") != nil {
		t.Fatal("an exempt network is limited")
	}
	// A local user of the unix socket is a relay client to the QMQP server
	// and has no address: neither exemption applies.
	peer := &mail.ConnInfo{Proto: "QMQP", RelayClient: true, RemoteAddr: &Peer{UID: 1000, User: "alice"}}
	if st := send(l, peer, "", 2); !st.IsAccept() {
		t.Fatal(st)
	}
	if st := send(l, peer, "", 1); st.Text != "too many recipients from this local user: 2/d" {
		t.Fatalf("third recipient of uid 1000: %v", st)
	}
	if !strings.Contains(logs.String(), `counted_as="uid 1000 (alice)"`) {
		t.Fatalf("the log does not name the local user:\n%s", logs)
	}
	if st := send(l, &mail.ConnInfo{Proto: "QMQP", RemoteAddr: &Peer{UID: 1001}}, "", 2); !st.IsAccept() {
		t.Fatalf("another uid: %v", st)
	}
}

func TestLimitsExemptRelayClients(t *testing.T) {
	on, _ := testLimits(t, `client_messages = ["1/m"]
exempt_relay_clients = true`)
	off, _ := testLimits(t, `client_messages = ["1/m"]`)
	relay := tcpClient("10.1.2.3")
	relay.RelayClient = true
	if on.Start(relay, "") != nil {
		t.Fatal("a relay client is limited with exempt_relay_clients")
	}
	if off.Start(relay, "") == nil {
		t.Fatal("a relay client is exempt by default")
	}
	if on.Start(tcpClient("10.1.2.4"), "") == nil {
		t.Fatal("a stranger is exempt")
	}
	var none *Limits
	if none.Start(relay, "") != nil {
		t.Fatal("nil limits limit")
	}
	if empty, _ := testLimits(t, ""); empty.Start(relay, "") != nil {
		t.Fatal("no configured limit limits")
	}
}

// Policy.MailFrom refuses a client over its message limit before the body;
// Policy.Rcpt counts an accepted recipient at once, and a refused one not.
func TestPolicyLimitsSMTP(t *testing.T) {
	p := testPolicy()
	p.Limits, _ = testLimits(t, `client_messages = ["1/m"]
client_recipients = ["2/m"]`)
	c := tcpClient("192.0.2.1")
	if st := p.MailFrom(c, "a@b.example"); !st.IsAccept() {
		t.Fatal(st)
	}
	if st := p.Rcpt(c, "a@b.example", "u@elsewhere.org"); st.IsAccept() {
		t.Fatal("a relay attempt accepted")
	}
	for i := range 2 {
		if st := p.Rcpt(c, "a@b.example", "u@example.net"); !st.IsAccept() {
			t.Fatalf("recipient %d: %v", i, st)
		}
	}
	if st := p.Rcpt(c, "a@b.example", "u@example.net"); st.Text != "too many recipients from this client: 2/m" {
		t.Fatalf("third recipient: %v", st)
	}
	tl := p.Limits.Start(c, "a@b.example")
	if st := tl.Message(); !st.IsAccept() {
		t.Fatal(st)
	}
	tl.Count()
	if st := p.MailFrom(c, "a@b.example"); st.Text != "too much mail from this client: 1/m" {
		t.Fatalf("MAIL after the limit: %v", st)
	}
	if st := p.MailFrom(c, "bad\x00sender"); st.IsTemporary() {
		t.Fatalf("a bad sender got the limit's refusal: %v", st)
	}
}

// A reload keeps the counts of limits whose rates did not change, starts
// the others afresh, and keeps one refusal counter.
func TestLimitsKeep(t *testing.T) {
	old, _ := testLimits(t, `client_messages = ["1/m"]
user_messages = ["1/m"]`)
	c := &mail.ConnInfo{AuthUser: "joe", RemoteAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.1")}}
	send(old, c, "", 1)
	if st := send(old, c, "", 1); st.IsAccept() {
		t.Fatal("not limited")
	}
	same, logs := testLimits(t, `client_messages = ["1/m"]
user_messages = ["1/m"]`)
	same.keep(old)
	if st := send(same, c, "", 1); st.Text != "too much mail from this client: 1/m" {
		t.Fatalf("after a reload with the same rates: %v", st)
	}
	if !strings.Contains(logs.String(), `counts_kept="client_messages user_messages"`) {
		t.Fatalf("reload log:\n%s", logs)
	}
	if n := gathered(t, same.refusals, "qmgate_limit_refusals_total", "client_messages"); n != 2 {
		t.Fatalf("refusals after the reload: %v, want 2", n)
	}
	changed, _ := testLimits(t, `client_messages = ["2/m"]
user_messages = ["1/m"]`)
	changed.keep(same)
	if st := send(changed, c, "", 1); st.Text != "too much mail from this user: 1/m" {
		t.Fatalf("after a reload with a new client rate: %v (want the kept user count to refuse)", st)
	}
	grouped, _ := testLimits(t, `client_messages = ["2/m"]
client_ipv4_prefix = 24`)
	grouped.keep(changed)
	if st := send(grouped, c, "", 1); !st.IsAccept() {
		t.Fatalf("a new address grouping kept the old counts: %v", st)
	}
}
