package config

import (
	"fmt"
	"strings"

	"github.com/qmgate/qmgate/internal/rewrite"
)

// DKIM is one [[dkim]] section: a key that signs mail from Domain. Several
// sections may name one domain, one per selector: every key of a domain
// signs (an RSA and an Ed25519 key give RFC 8463's dual signature; two keys
// carry a rotation).
type DKIM struct {
	Domain     string `toml:"domain"`
	Selector   string `toml:"selector"`
	KeyFile    string `toml:"key_file"`
	Algorithm  string `toml:"algorithm"`
	Subdomains bool   `toml:"subdomains"`
}

// Rewrite is the [rewrite] section: masquerading of the app servers'
// senders (rewrite.Rules). Off unless configured.
type Rewrite struct {
	Hosts       []RewriteHost `toml:"hosts"`
	Users       []RewriteUser `toml:"users"`
	Admin       RewriteAdmin  `toml:"admin"`
	AllMailFrom string        `toml:"all_mail_from"`
	Headers     bool          `toml:"headers"`
}

// RewriteHost rewrites sender domains matching Match ("*.internal",
// "app17.example.net") to Domain.
type RewriteHost struct {
	Match  string `toml:"match"`
	Domain string `toml:"domain"`
}

// RewriteUser rewrites senders matching Match ("root@*") to Address.
type RewriteUser struct {
	Match   string `toml:"match"`
	Address string `toml:"address"`
}

// RewriteAdmin sends mail for the app servers' users (Users of Hosts;
// every user when Users is empty) to Address.
type RewriteAdmin struct {
	Address string   `toml:"address"`
	Hosts   []string `toml:"hosts"`
	Users   []string `toml:"users"`
}

// Rules returns the rewrite rules.
func (r *Rewrite) Rules() rewrite.Rules {
	rr := rewrite.Rules{AllMailFrom: r.AllMailFrom, Headers: r.Headers,
		Admin: rewrite.AdminRule{Address: r.Admin.Address, Hosts: r.Admin.Hosts, Users: r.Admin.Users}}
	for _, h := range r.Hosts {
		rr.Hosts = append(rr.Hosts, rewrite.HostRule{Match: h.Match, Domain: h.Domain})
	}
	for _, u := range r.Users {
		rr.Users = append(rr.Users, rewrite.UserRule{Match: u.Match, Address: u.Address})
	}
	return rr
}

// Enabled reports whether any rewrite rule is configured.
func (r *Rewrite) Enabled() bool {
	return len(r.Hosts) > 0 || len(r.Users) > 0 || r.Admin.Address != "" || r.AllMailFrom != ""
}

// validateIdentity checks the [[dkim]] and [rewrite] sections. Keys are
// loaded by the hub, which refuses unreadable or group/other-readable ones.
func (c *Config) validateIdentity(bad func(key, format string, args ...any)) {
	sub := map[string]bool{}
	seen := map[string]bool{}
	for i, d := range c.DKIM {
		key := fmt.Sprintf("dkim[%d]", i)
		dom := strings.ToLower(strings.TrimSuffix(d.Domain, "."))
		if dom == "" || !strings.Contains(dom, ".") || strings.ContainsAny(dom, " @\t*") {
			bad(key+".domain", "%q is not a domain name", d.Domain)
		}
		if d.Selector == "" || strings.ContainsAny(d.Selector, " @\t*;=") {
			bad(key+".selector", "%q is not a selector", d.Selector)
		}
		if d.KeyFile == "" {
			bad(key+".key_file", "missing (make one with: qmgate dkim keygen)")
		}
		switch d.Algorithm {
		case "", "ed25519", "rsa":
		default:
			bad(key+".algorithm", "%q: use ed25519 or rsa", d.Algorithm)
		}
		if seen[dom+" "+d.Selector] {
			bad(key+".selector", "selector %s of %s configured twice", d.Selector, dom)
		}
		seen[dom+" "+d.Selector] = true
		if s, ok := sub[dom]; ok && s != d.Subdomains {
			bad(key+".subdomains", "every section of %s must set subdomains alike", dom)
		}
		sub[dom] = d.Subdomains
	}
	if c.Rewrite.Enabled() || c.Rewrite.Headers {
		if _, err := rewrite.Compile(c.Rewrite.Rules()); err != nil {
			bad("rewrite", "%s", strings.TrimPrefix(err.Error(), "rewrite: "))
		}
	}
}
