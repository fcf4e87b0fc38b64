// Package rewrite masquerades app servers' addresses at the hub: it rewrites
// the envelope sender and, when asked, the From:, Sender: and Reply-To:
// header fields (host names to the domain, local users to one address, or
// every sender to one address, as nullmailer's allmailfrom), and sends mail
// for root and postmaster of the app servers to the admin address
// (nullmailer's adminaddr).
//
// A Rewriter is compiled once from plain Rules and applied once per message,
// at acceptance; each call returns what it changed, for the Received line's
// comment. Header rewriting changes only the address bytes of the fields it
// rewrites and keeps the rest of the header byte for byte. The package knows
// nothing of the queue, the protocols or configuration files.
package rewrite

import (
	"fmt"
	"strings"

	"github.com/qmgate/qmgate/mail"
)

// HostRule rewrites the domain of sender addresses whose domain matches
// Match: "app17.example.net" (that host), "*.internal" (every host under
// internal, as does ".internal") or "*" (every domain).
type HostRule struct {
	Match  string
	Domain string
}

// UserRule rewrites a whole sender address: Match is "user@HOSTPATTERN"
// (host patterns as in HostRule), e.g. "root@*"; Address replaces it.
type UserRule struct {
	Match   string
	Address string
}

// AdminRule sends mail for the app servers' own users to one address, as
// nullmailer's adminaddr: a recipient whose domain matches one of Hosts and
// whose local part is one of Users (every local part when Users is empty)
// becomes Address.
type AdminRule struct {
	Address string
	Hosts   []string
	Users   []string // e.g. root, postmaster; empty means every user
}

// Rules is what to rewrite. The zero value rewrites nothing.
type Rules struct {
	Users []UserRule // tried first, the first match wins
	Hosts []HostRule // tried when no user rule matched, the first match wins
	Admin AdminRule  // recipients; off when Address is empty
	// AllMailFrom replaces every sender, the envelope's and the From: and
	// Sender: fields' (when Headers is on), as nullmailer's allmailfrom
	// does for the envelope. Bounces (the null sender) keep theirs.
	AllMailFrom string
	// Headers also applies the sender rules to the From:, Sender: and
	// Reply-To: fields (AllMailFrom to From: and Sender: only: replies
	// still go where the author asked).
	Headers        bool
	MaxHeaderBytes int // header bytes examined; 0 means DefaultMaxHeaderBytes
}

// DefaultMaxHeaderBytes bounds the header a Reader holds and rewrites; a
// longer header passes through unchanged.
const DefaultMaxHeaderBytes = 256 << 10

// Rewriter applies compiled Rules. It is immutable and safe for concurrent use.
type Rewriter struct {
	users     []userRule
	hosts     []HostRule
	admin     AdminRule
	adminUser map[string]bool
	all       string
	headers   bool
	maxHeader int
}

type userRule struct {
	local, host string
	to          string
}

// Compile checks r and builds a Rewriter.
func Compile(r Rules) (*Rewriter, error) {
	rw := &Rewriter{all: r.AllMailFrom, headers: r.Headers, admin: r.Admin, maxHeader: r.MaxHeaderBytes}
	if rw.maxHeader <= 0 {
		rw.maxHeader = DefaultMaxHeaderBytes
	}
	if rw.all != "" {
		if err := checkAddress(rw.all); err != nil {
			return nil, fmt.Errorf("rewrite: all mail from: %w", err)
		}
	}
	for _, u := range r.Users {
		local, host, ok := strings.Cut(u.Match, "@")
		if !ok || local == "" || strings.Contains(host, "@") {
			return nil, fmt.Errorf("rewrite: user rule %q: the match must be user@host, e.g. root@*", u.Match)
		}
		h, err := hostPattern(host)
		if err != nil {
			return nil, fmt.Errorf("rewrite: user rule %q: %w", u.Match, err)
		}
		if err := checkAddress(u.Address); err != nil {
			return nil, fmt.Errorf("rewrite: user rule %q: %w", u.Match, err)
		}
		rw.users = append(rw.users, userRule{local: local, host: h, to: u.Address})
	}
	for _, h := range r.Hosts {
		p, err := hostPattern(h.Match)
		if err != nil {
			return nil, fmt.Errorf("rewrite: host rule %q: %w", h.Match, err)
		}
		if !isDomain(h.Domain) {
			return nil, fmt.Errorf("rewrite: host rule %q: %q is not a domain", h.Match, h.Domain)
		}
		rw.hosts = append(rw.hosts, HostRule{Match: p, Domain: h.Domain})
	}
	if r.Admin.Address != "" {
		if err := checkAddress(r.Admin.Address); err != nil {
			return nil, fmt.Errorf("rewrite: admin address: %w", err)
		}
		if len(r.Admin.Hosts) == 0 {
			return nil, fmt.Errorf("rewrite: admin address %s: no hosts whose users it receives", r.Admin.Address)
		}
		rw.admin.Hosts = nil
		for _, h := range r.Admin.Hosts {
			p, err := hostPattern(h)
			if err != nil {
				return nil, fmt.Errorf("rewrite: admin host %q: %w", h, err)
			}
			rw.admin.Hosts = append(rw.admin.Hosts, p)
		}
		rw.adminUser = map[string]bool{}
		for _, u := range r.Admin.Users {
			rw.adminUser[strings.ToLower(u)] = true
		}
	}
	return rw, nil
}

// hostPattern turns "*.internal" into mail.HostList's ".internal".
func hostPattern(p string) (string, error) {
	if p == "*" {
		return p, nil
	}
	if strings.HasPrefix(p, "*") && !strings.HasPrefix(p, "*.") {
		return "", fmt.Errorf("%q is not a host pattern (a host, *.domain or *)", p)
	}
	p = strings.TrimPrefix(p, "*")
	if !isDomain(strings.TrimPrefix(p, ".")) {
		return "", fmt.Errorf("%q is not a host pattern (a host, *.domain or *)", p)
	}
	return p, nil
}

func isDomain(d string) bool {
	if d == "" || len(d) > 253 || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") || strings.Contains(d, "..") {
		return false
	}
	for _, c := range []byte(d) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c >= 0x80) {
			return false
		}
	}
	return true
}

// checkAddress accepts a plain local@domain address, safe to put into a
// header and an envelope as it is.
func checkAddress(a string) error {
	local, dom, ok := strings.Cut(a, "@")
	if !ok || local == "" || !isDomain(dom) || strings.ContainsAny(local, " \t\r\n\"<>()[],;:\\@") {
		return fmt.Errorf("%q is not a plain address (user@domain)", a)
	}
	return nil
}

// matchHost matches a domain against a compiled pattern ("*" also matches an
// address without a domain).
func matchHost(pattern, domain string) bool {
	return pattern == "*" || mail.MatchDomain(pattern, domain)
}

// sender applies the user and host rules to one address; all says whether
// AllMailFrom applies.
func (rw *Rewriter) sender(addr string, all bool) (string, bool) {
	if all && rw.all != "" {
		return rw.all, addr != rw.all
	}
	local, dom := mail.Split(addr)
	for _, u := range rw.users {
		if strings.EqualFold(u.local, local) && matchHost(u.host, dom) {
			return u.to, addr != u.to
		}
	}
	if dom == "" || strings.HasPrefix(dom, "[") {
		return addr, false // unqualified, or an address literal: not a host to masquerade
	}
	for _, h := range rw.hosts {
		if matchHost(h.Match, dom) {
			n := local + "@" + h.Domain
			return n, n != addr
		}
	}
	return addr, false
}

// Sender returns the envelope sender rewritten, and whether it changed.
// Bounces (the null sender and #@[]) and VERP senders are kept, except that
// AllMailFrom replaces a VERP sender too.
func (rw *Rewriter) Sender(addr string) (string, bool) {
	if mail.IsBounceSender(addr) {
		return addr, false
	}
	if mail.IsVERP(addr) && rw.all == "" {
		return addr, false
	}
	return rw.sender(addr, true)
}

// Recipient returns a recipient rewritten by the admin rule, and whether it
// changed.
func (rw *Rewriter) Recipient(addr string) (string, bool) {
	if rw.admin.Address == "" {
		return addr, false
	}
	local, dom := mail.Split(addr)
	if len(rw.adminUser) > 0 && !rw.adminUser[strings.ToLower(local)] {
		return addr, false
	}
	for _, h := range rw.admin.Hosts {
		if matchHost(h, dom) {
			return rw.admin.Address, addr != rw.admin.Address
		}
	}
	return addr, false
}

// Envelope rewrites env's sender and recipients in place and returns what
// changed. Recipients that become the same address are merged.
func (rw *Rewriter) Envelope(env *mail.Envelope) Changes {
	var ch Changes
	if n, ok := rw.Sender(env.Sender); ok {
		ch = append(ch, Change{Field: "sender", Old: env.Sender, New: n})
		env.Sender = n
	}
	if rw.admin.Address == "" {
		return ch
	}
	seen := map[string]bool{}
	out := env.Recipients[:0:0]
	for _, r := range env.Recipients {
		n, ok := rw.Recipient(r)
		if ok {
			ch = append(ch, Change{Field: "recipient", Old: r, New: n})
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		out = append(out, n)
	}
	env.Recipients = out
	return ch
}
