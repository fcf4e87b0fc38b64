package config

import (
	"strings"
	"testing"
)

func TestRouteSenders(t *testing.T) {
	for _, p := range []string{"*", "*@billing.example.net", "ops@example.net", "example.net", ".example.net", "*@.example.net"} {
		if err := ValidSenderPattern(p); err != nil {
			t.Errorf("%q refused: %v", p, err)
		}
	}
	for _, p := range []string{"", "@example.net", "a*@example.net", "*@*", "*.example.net", "a@b@c", "ops@", "<ops@example.net>", "a b@example.net", "..example.net"} {
		if ValidSenderPattern(p) == nil {
			t.Errorf("%q accepted", p)
		}
	}
	_, err := Parse("t.toml", []byte("[[route]]\ndomains = [\"*\"]\nsenders = [\"billing.example.net\", \"a*@x.example\"]\nvia = \"mx\"\n"))
	if err == nil || !strings.Contains(err.Error(), "route[0].senders[1]") || !strings.Contains(err.Error(), "t.toml:3") {
		t.Fatalf("a bad sender pattern: %v", err)
	}
	// A route with senders takes only some of its domains' mail: the route
	// after it is not shadowed, and it does not count as delivering a
	// rcpthosts domain for everyone.
	c, err := Parse("t.toml", []byte(`rcpthosts = ["example.net"]
[[route]]
domains = ["*"]
senders = ["*@billing.example.net"]
via = "smtp://billing-relay.example.net"
[[route]]
domains = ["example.net"]
via = "discard:"
`))
	if err != nil {
		t.Fatal(err)
	}
	if ws := c.Warnings(); len(ws) != 0 {
		t.Fatalf("warnings: %v", ws)
	}
	if c.Routes[0].Senders[0] != "*@billing.example.net" {
		t.Fatalf("senders: %v", c.Routes[0].Senders)
	}
	// One smarthost, two sending domains, each with its own login: the
	// default names tell them apart.
	c, err = Parse("t.toml", []byte(`[[route]]
domains = ["*"]
senders = ["*@billing.example.net"]
via = "smtp://relay.example.net"
[[route]]
domains = ["*"]
senders = ["*@billing.example.net", "shop.example.net"]
via = "smtp://relay.example.net"
[[route]]
domains = ["*"]
senders = [".shop.example.net"]
via = "smtp://relay.example.net"
[[route]]
domains = ["*"]
via = "smtp://relay.example.net"
`))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range c.Routes {
		if seen[r.Name] {
			t.Errorf("two routes named %s", r.Name)
		}
		seen[r.Name] = true
	}
	if n := c.Routes[2].Name; n != "any-from-shop.example.net-smtp" || c.Routes[3].Name != "any-smtp" {
		t.Errorf("names: %s, %s", n, c.Routes[3].Name)
	}
}
