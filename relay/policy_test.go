package relay

import (
	"log/slog"
	"time"

	"net"
	"net/netip"
	"testing"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/relay/transport"

	"github.com/qmgate/qmgate/mail"
)

func testPolicy() *Policy {
	return &Policy{
		RcptHosts: mail.HostList{"example.net", ".example.net"},
		QMTPRelay: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Router: &Router{Routes: []*Route{
			{Name: "local", Patterns: mail.HostList{"example.net", ".example.net"}},
			{Name: "default", Patterns: mail.HostList{"*"}},
		}},
	}
}

func TestRouterLookup(t *testing.T) {
	r := &Router{Routes: []*Route{
		{Name: "a", Patterns: mail.HostList{"example.net"}},
		{Name: "b", Patterns: mail.HostList{".example.net"}},
		{Name: "c", Patterns: mail.HostList{"*"}},
	}}
	for rcpt, want := range map[string]string{
		"u@example.net": "a", "u@EXAMPLE.NET": "a", "u@sub.example.net": "b", "u@other.org": "c", "u@example.net.": "a",
	} {
		if got := r.Lookup("", rcpt); got == nil || got.Name != want {
			t.Errorf("%s: got %v want %s", rcpt, got, want)
		}
	}
	r.Routes = r.Routes[:2]
	if r.Lookup("", "u@other.org") != nil {
		t.Error("no route expected")
	}
}

// TestNoOpenRelay tries the classic relay-test address forms from a client
// that is neither a relay client nor authenticated.
func TestNoOpenRelay(t *testing.T) {
	p := testPolicy()
	stranger := &mail.ConnInfo{Proto: "SMTP", RemoteAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}}
	foreign := []string{
		"victim@other.org",
		"victim%other.org@example.net",
		"victim%other.org@sub.example.net",
		"other.org!victim@example.net",
		"victim@other.org@example.net", // "victim@other.org"@example.net after unquoting
		"@example.net:victim@other.org",
		"victim@[192.0.2.1]",
		"victim@other.org.",
		"Victim@OTHER.ORG",
		"victim@xn--nxasmq6b.example",
		"victim@example.net.other.org",
		"victim@notexample.net",
		"victim",
		"",
		"victim@",
		"@example.net",
	}
	for _, rcpt := range foreign {
		if st := p.Recipient(stranger, "", rcpt); st.IsAccept() {
			t.Errorf("open relay: %q accepted from a stranger", rcpt)
		}
	}
	for _, rcpt := range []string{"user@example.net", "User@Example.NET", "user@mx.example.net", "user-ext@example.net", "user@example.net."} {
		if st := p.Recipient(stranger, "", rcpt); !st.IsAccept() {
			t.Errorf("%q refused from a stranger: %v", rcpt, st)
		}
	}
	relay := &mail.ConnInfo{Proto: "QMTP", RelayClient: true}
	auth := &mail.ConnInfo{Proto: "ESMTPSA", AuthUser: "joe"}
	for _, c := range []*mail.ConnInfo{relay, auth} {
		if st := p.Recipient(c, "", "victim@other.org"); !st.IsAccept() {
			t.Errorf("%+v may relay, got %v", c, st)
		}
		if st := p.Recipient(c, "", "victim"); st.IsAccept() {
			t.Errorf("address without domain accepted for relaying")
		}
	}
}

func TestInPrefixes(t *testing.T) {
	nets := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for ip, want := range map[string]bool{"10.1.2.3": true, "11.0.0.1": false, "::1": true, "::ffff:10.0.0.1": true} {
		if got := InPrefixes(netip.MustParseAddr(ip), nets); got != want {
			t.Errorf("%s: %v", ip, got)
		}
	}
	if InPrefixes(netip.Addr{}, nets) {
		t.Error("invalid address matched")
	}
}

func TestQueueOptionsDelayNoticeOff(t *testing.T) {
	cfg, err := config.Parse("t", []byte("[queue]\ndelay_notice = \"0s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := QueueOptions(cfg, slog.New(slog.DiscardHandler)).DelayNotice; d >= 0 {
		t.Fatalf("delay_notice 0s gave %v; the queue reads 0 as its default", d)
	}
	cfg, _ = config.Parse("t", nil)
	if d := QueueOptions(cfg, slog.New(slog.DiscardHandler)).DelayNotice; d != 4*time.Hour {
		t.Fatalf("default %v", d)
	}
}

// Recipients local delivery would refuse (mail.MailboxName) are refused at
// the door for every client, strangers included, so no bounce carries a
// forged sender's message back; and a control character is refused from
// strangers as from relay clients.
func TestPolicyRefusesUndeliverableAtTheDoor(t *testing.T) {
	p := testPolicy()
	p.Router.Routes[0].Via = "maildir:" + t.TempDir()
	p.Router.Routes[0].Transport = &transport.Maildir{Mailboxes: transport.Mailboxes{Dir: t.TempDir()}}
	stranger := &mail.ConnInfo{Proto: "QMTP", RemoteAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}}
	relay := &mail.ConnInfo{Proto: "QMTP", RelayClient: true}
	qmqp := &mail.ConnInfo{Proto: "QMQP"}
	auth := &mail.ConnInfo{Proto: "ESMTPSA", AuthUser: "joe"}
	for _, c := range []*mail.ConnInfo{stranger, relay, qmqp, auth} {
		for _, rcpt := range []string{
			"../x@example.net",
			"\"../x\"@example.net",
			"a/b@example.net",
			"-x@example.net",
			".x@example.net",
			"a\nb@example.net",
			"a\rb@example.net",
			"a\x7fb@example.net",
			"\u212Aate@example.net", // KELVIN SIGN must not reach kate's mailbox
		} {
			if st := p.Recipient(c, "", rcpt); st.IsAccept() || st.EnhancedCode() != "5.1.3" {
				t.Errorf("%s: %q: %v", c.Proto, rcpt, st)
			}
		}
		if st := p.Recipient(c, "", "Kate-Lists@example.net"); !st.IsAccept() {
			t.Errorf("%s: a good local recipient refused: %v", c.Proto, st)
		}
	}
	// Routes that do not deliver into mailboxes keep their own rules.
	if st := p.Recipient(relay, "", "-x@other.org"); !st.IsAccept() {
		t.Errorf("a remote recipient was held to mailbox names: %v", st)
	}
	if st := p.Recipient(relay, "", "a\nb@other.org"); st.IsAccept() {
		t.Error("a control character accepted for a remote route")
	}
}

func TestPolicyRelaySuffix(t *testing.T) {
	p := &Policy{RcptHosts: mail.HostList{"example.net"}, RelaySuffix: ".relay", LocalRecipients: true}
	relay := &mail.ConnInfo{Proto: "QMTP", RelayClient: true}
	if r, st := p.Accept(relay, "", "a@other.org"); !st.IsAccept() || r != "a@other.org.relay" {
		t.Fatalf("%q %v", r, st)
	}
	if r, st := p.Accept(relay, "", "postmaster"); !st.IsAccept() || r != "postmaster.relay" {
		t.Fatalf("a local name for a qmail-queue program: %q %v", r, st)
	}
	stranger := &mail.ConnInfo{Proto: "QMTP"}
	if r, st := p.Accept(stranger, "", "a@example.net"); !st.IsAccept() || r != "a@example.net" {
		t.Fatalf("a stranger's recipient changed: %q %v", r, st)
	}
}

func TestUnixPolicy(t *testing.T) {
	alice := &Peer{UID: 1000, GID: 1000, User: "alice"}
	bob := &Peer{UID: 1001, GID: 1001, User: "bob"}
	u := &UnixPolicy{Users: []string{"alice"}, Senders: map[string][]string{
		"alice": {"alice@example.net", "@lists.example.net", "<>"},
		"*":     {"@example.org"},
	}}
	if !u.Allowed(alice) || u.Allowed(bob) {
		t.Fatal("unix_allow not applied")
	}
	for from, want := range map[string]bool{
		"alice@example.net": true, "ALICE@Example.NET": true, "x@lists.example.net": true, "": true,
		"bob@example.net": false, "alice@example.org": false, "\u212Alice@example.net": false,
		"x@LISTS.example.net": true, "x@sub.lists.example.net": false,
	} {
		if got := u.SenderAllowed(alice, from); got != want {
			t.Errorf("alice as %q: %v", from, got)
		}
	}
	if !u.SenderAllowed(bob, "bob@example.org") || u.SenderAllowed(bob, "bob@example.net") || u.SenderAllowed(bob, "") {
		t.Error("the * entry is not applied to users not named")
	}
	if !(&UnixPolicy{}).Allowed(bob) || !(&UnixPolicy{}).SenderAllowed(bob, "x@y") {
		t.Error("an empty policy must let everyone in")
	}
}
