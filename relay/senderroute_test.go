package relay

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

func TestSenderListMatch(t *testing.T) {
	l := SenderList{"*@billing.example.net", "shop.example.org", ".news.example.com", "Ops@Example.NET"}
	for sender, want := range map[string]bool{
		"invoices@billing.example.net": true,
		"INVOICES@Billing.Example.Net": true,
		"x@sub.billing.example.net":    false,
		"orders@shop.example.org":      true,
		"a@eu.news.example.com":        true,
		"a@news.example.com":           false,
		"ops@example.net":              true,
		"root@example.net":             false,
		"":                             false, // a bounce
		"#@[]":                         false, // a double bounce
	} {
		if got := l.Match(sender); got != want {
			t.Errorf("Match(%q) = %v, want %v", sender, got, want)
		}
	}
	if !(SenderList{"*"}).Match("a@b.example") || (SenderList{"*"}).Match("") {
		t.Error(`"*" must take every sender but the null one`)
	}
}

func TestRouterLookupBySender(t *testing.T) {
	billing := &Route{Name: "billing", Patterns: mail.HostList{"*"}, Senders: SenderList{"billing.example.net"}}
	local := &Route{Name: "local", Patterns: mail.HostList{"example.net"}}
	rest := &Route{Name: "rest", Patterns: mail.HostList{"*"}}
	r := &Router{Routes: []*Route{local, billing, rest}}
	for _, c := range []struct{ from, rcpt, want string }{
		{"inv@billing.example.net", "c@customer.example", "billing"},
		{"inv@billing.example.net", "ops@example.net", "local"}, // an earlier route still wins
		{"app@example.net", "c@customer.example", "rest"},
		{"", "c@customer.example", "rest"}, // bounces follow the recipient rule
	} {
		if got := r.Lookup(c.from, c.rcpt); got == nil || got.Name != c.want {
			t.Errorf("Lookup(%q, %q) = %v, want %s", c.from, c.rcpt, got, c.want)
		}
	}
	// With only a sender route for a domain, other senders have no route.
	r = &Router{Routes: []*Route{billing}}
	if r.Lookup("app@example.net", "c@customer.example") != nil {
		t.Error("a route with senders took another sender's mail")
	}
	p := &Policy{Router: r}
	relay := &mail.ConnInfo{Proto: "QMTP", RelayClient: true}
	if st := p.Recipient(relay, "app@example.net", "c@customer.example"); st.IsAccept() {
		t.Error("accepted mail no route takes")
	}
}

// TestHubSenderRoutes: two sending domains, each with its own smarthost,
// and everything else through a third; one message's recipients split
// across routes; the messages sent in both orders; a bounce (null sender)
// for a recipient the billing smarthost refused goes by the recipient rule.
func TestHubSenderRoutes(t *testing.T) {
	billing := newRawSMTPSink(t, "127.0.0.1:0")
	shop := newRawSMTPSink(t, "127.0.0.1:0")
	rest := newRawSMTPSink(t, "127.0.0.1:0")
	h := startHub(t, fmt.Sprintf(`
hostname = "hub.test"
rcpthosts = ["example.net"]
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.0/8"]
[queue]
retry_min = "200ms"
retry_max = "400ms"
[[route]]
domains = ["example.net"]
via = "maildir:DIR/maildir"
[[route]]
domains = ["*"]
senders = ["*@billing.example.net"]
via = "smtp://%s"
tls = "none"
[[route]]
domains = ["*"]
senders = ["shop.example.net"]
via = "smtp://%s"
tls = "none"
[[route]]
domains = ["*"]
via = "smtp://%s"
tls = "none"
`, billing.l.Addr(), shop.l.Addr(), rest.l.Addr()))

	send := func(from string, rcpts ...string) {
		t.Helper()
		env := mail.Envelope{Sender: from, Recipients: rcpts}
		for _, st := range sendQMTP(t, h.addr("qmtp"), env, "Subject: from "+from+"\n\nhello\n") {
			if !st.IsAccept() {
				t.Fatalf("refused %s: %v", from, st)
			}
		}
	}
	// Both orders: shop first then billing, then billing first then shop.
	send("orders@shop.example.net", "c1@customer.example")
	send("invoices@billing.example.net", "c1@customer.example", "ops@example.net", "refuse-me@customer.example")
	send("app@example.net", "c2@customer.example")
	send("invoices@billing.example.net", "c3@customer.example")
	send("orders@shop.example.net", "c3@customer.example")

	rcptsOf := func(s *rawSMTPSink) map[string][]string {
		m := map[string][]string{}
		for _, tx := range s.transactions() {
			from, _, _ := strings.Cut(tx.From, " ") // without BODY=8BITMIME
			m[from] = append(m[from], tx.To...)
		}
		for _, v := range m {
			slices.Sort(v)
		}
		return m
	}
	testpeer.WaitFor(t, "every delivery and the bounce", 30*time.Second, func() bool {
		return len(billing.transactions()) == 2 && len(shop.transactions()) == 2 && len(rest.transactions()) == 2 &&
			len(maildirFiles(t, filepath.Join(h.dir, "maildir"), "example.net", "ops")) == 1
	})
	if got := rcptsOf(billing); !slices.Equal(got["<invoices@billing.example.net>"], []string{"<c1@customer.example>", "<c3@customer.example>"}) || len(got) != 1 {
		t.Errorf("billing smarthost got %v", got)
	}
	if got := rcptsOf(shop); !slices.Equal(got["<orders@shop.example.net>"], []string{"<c1@customer.example>", "<c3@customer.example>"}) || len(got) != 1 {
		t.Errorf("shop smarthost got %v", got)
	}
	// The rest: app's mail, and the bounce of the recipient the billing
	// smarthost refused, which has the null sender and so the recipient
	// rule, although it goes to a billing address.
	got := rcptsOf(rest)
	if !slices.Equal(got["<app@example.net>"], []string{"<c2@customer.example>"}) || !slices.Equal(got["<>"], []string{"<invoices@billing.example.net>"}) || len(got) != 2 {
		t.Errorf("the other smarthost got %v", got)
	}
	for _, tx := range rest.transactions() {
		if strings.HasPrefix(tx.From, "<> ") && !strings.Contains(tx.Data, "refuse-me@customer.example") {
			t.Errorf("the bounce does not name the refused recipient:\n%s", tx.Data)
		}
	}
}

// TestDestinationOfSender: the queue's per-destination backoff keys a
// recipient by the route its sender takes, so a dead smarthost of one
// sending domain holds back only that domain's mail.
func TestDestinationOfSender(t *testing.T) {
	h := startHub(t, `
[qmtp]
listen = ["127.0.0.1:0"]
[[route]]
domains = ["*"]
senders = ["*@billing.example.net"]
via = "qmtp://127.0.0.1:1"
[[route]]
domains = ["*"]
via = "qmtp://127.0.0.1:2"
`)
	for _, c := range []struct{ sender, want string }{
		{"a@billing.example.net", "qmtp://127.0.0.1:1"},
		{"a@shop.example.net", "qmtp://127.0.0.1:2"},
		{"", "qmtp://127.0.0.1:2"},
		// VERP: the sender as delivery expands it.
		{"list-@billing.example.net-@[]", "qmtp://127.0.0.1:1"},
	} {
		if got := h.hub.destinationOf(c.sender, "x@example.org"); got != c.want {
			t.Errorf("sender %q: destination %q, want %q", c.sender, got, c.want)
		}
	}
}
