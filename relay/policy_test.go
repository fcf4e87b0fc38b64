package relay

import (
	"log/slog"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"net"
	"net/netip"
	"testing"

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
		if got := r.Lookup(rcpt); got == nil || got.Name != want {
			t.Errorf("%s: got %v want %s", rcpt, got, want)
		}
	}
	r.Routes = r.Routes[:2]
	if r.Lookup("u@other.org") != nil {
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
		if st := p.Recipient(stranger, rcpt); st.IsAccept() {
			t.Errorf("open relay: %q accepted from a stranger", rcpt)
		}
	}
	for _, rcpt := range []string{"user@example.net", "User@Example.NET", "user@mx.example.net", "user-ext@example.net", "user@example.net."} {
		if st := p.Recipient(stranger, rcpt); !st.IsAccept() {
			t.Errorf("%q refused from a stranger: %v", rcpt, st)
		}
	}
	relay := &mail.ConnInfo{Proto: "QMTP", RelayClient: true}
	auth := &mail.ConnInfo{Proto: "ESMTPSA", AuthUser: "joe"}
	for _, c := range []*mail.ConnInfo{relay, auth} {
		if st := p.Recipient(c, "victim@other.org"); !st.IsAccept() {
			t.Errorf("%+v may relay, got %v", c, st)
		}
		if st := p.Recipient(c, "victim"); st.IsAccept() {
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
