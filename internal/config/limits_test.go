package config

import (
	"strings"
	"testing"
)

func TestRateLimits(t *testing.T) {
	c, err := Parse("t.toml", []byte(`
[limits]
max_conns = 10
client_messages = ["100/m", "2000/h"]
user_recipients = ["500/d"]
exempt = ["10.0.0.0/8"]
exempt_relay_clients = true
`))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Limits
	if l.MaxConns != 10 || c.QMTP.MaxConns != 10 {
		t.Fatalf("the connection limits beside the rates: %+v", l.ListenLimit)
	}
	if len(l.ClientMessages) != 2 || l.UserRecipients[0] != "500/d" || !l.ExemptRelayClients || l.Exempt[0] != "10.0.0.0/8" {
		t.Fatalf("limits: %+v", l)
	}
	if l.ClientIPv4Prefix != 32 || l.ClientIPv6Prefix != 64 {
		t.Fatalf("client prefixes %d, %d; want 32, 64", l.ClientIPv4Prefix, l.ClientIPv6Prefix)
	}
	if d, _ := Load(""); d.Limits.ExemptRelayClients || len(d.Limits.ClientMessages) != 0 {
		t.Fatalf("the default limits: %+v", d.Limits)
	}
	for doc, want := range map[string]string{
		"[limits]\nclient_messages = [\"100/m\", \"lots\"]\n": "t.toml:2: limits.client_messages[1]: rate \"lots\"",
		"[limits]\nsender_domain_recipients = [\"5/w\"]\n":    "limits.sender_domain_recipients[0]: rate \"5/w\": unknown unit",
		"[limits]\nclient_ipv6_prefix = 129\n":                "limits.client_ipv6_prefix: 129: want 1 to 128",
		"[limits]\nclient_ipv4_prefix = -1\n":                 "limits.client_ipv4_prefix: -1: want 1 to 32",
		"[limits]\nexempt = [\"ten\"]\n":                      "limits.exempt[0]: \"ten\" is not an address",
		"[limits]\nuid_mesages = [\"1/m\"]\n":                 "limits.uid_mesages",
	} {
		_, err := Parse("t.toml", []byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", doc, err, want)
		}
	}
}
