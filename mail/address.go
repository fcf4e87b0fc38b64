package mail

import (
	"strings"
)

// MaxAddressLen is qmail's address bound: an address of this many bytes or more
// is refused (qmail-qmtpd and qmail-qmqpd refuse len >= 1000).
const MaxAddressLen = 1000

// Envelope is the SMTP-level envelope of a message: the return path and the
// recipients, as raw addresses in the qmail sense (no SMTP quoting, no angle
// brackets). An empty Sender is the null return path of bounces.
type Envelope struct {
	Sender     string
	Recipients []string
}

// DoubleBounceSender is qmail's sender for double bounces, which are never
// bounced again.
const DoubleBounceSender = "#@[]"

// ValidAddress reports whether a is acceptable at all on the wire: shorter
// than MaxAddressLen and free of NUL bytes (qmail-qmtpd.c refuses a NUL in an address).
func ValidAddress(a string) bool {
	return len(a) < MaxAddressLen && strings.IndexByte(a, 0) < 0
}

// Split splits an address at its last '@' into local part and domain. An
// address with no '@' has an empty domain.
func Split(addr string) (local, domain string) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr, ""
	}
	return addr[:i], addr[i+1:]
}

// Domain returns the domain of addr (after the last '@') with ASCII letters
// lower-cased, or "". Only ASCII is folded, as DNS does: Unicode lower-casing
// would turn "\u212Aernel.org" (KELVIN SIGN, a foreign IDN domain) into
// "kernel.org".
func Domain(addr string) string {
	_, d := Split(addr)
	return LowerASCII(d)
}

// IsBounceSender reports whether mail from sender must never be bounced: the
// null sender and qmail's double-bounce sender #@[].
func IsBounceSender(sender string) bool {
	return sender == "" || sender == DoubleBounceSender
}

// IsVERP reports whether sender has qmail's VERP form pre@host-@[]
// (qmail-send(8), "VARIABLE ENVELOPE RETURN PATHS").
func IsVERP(sender string) bool {
	return strings.HasSuffix(sender, "-@[]") && strings.IndexByte(sender, '@') < len(sender)-4
}

// ExpandVERP returns the sender to use for one recipient. A VERP sender
// pre@host-@[] becomes pre<box>=<dom>@host for recipient box@dom, as
// qmail-send does; any other sender is returned unchanged.
func ExpandVERP(sender, rcpt string) string {
	if !IsVERP(sender) {
		return sender
	}
	// "owner-@list.example-@[]" less "-@[]" is "owner-@list.example".
	pre, host := Split(sender[:len(sender)-4])
	box, dom := Split(rcpt)
	if dom == "" && strings.IndexByte(rcpt, '@') < 0 {
		return pre + box + "@" + host
	}
	return pre + box + "=" + dom + "@" + host
}

// BounceAddress returns where bounces for sender go: the sender itself, or for
// a VERP sender pre@host-@[] the unexpanded pre@host.
func BounceAddress(sender string) string {
	if IsVERP(sender) {
		return sender[:len(sender)-4]
	}
	return sender
}

// HostList is a list of domain patterns with qmail's rcpthosts semantics
// (qmail-smtpd(8), control/rcpthosts): an entry matches the domain exactly, and an entry that
// starts with "." matches every subdomain. The entry "*" matches every
// domain (used by route tables; never put it in rcpthosts unless you mean an
// open relay). An empty entry matches nothing.
//
// Matching ignores the case of ASCII letters only, and one trailing dot (the
// DNS root) on either side. An internationalized domain matches whether it
// is written with U-labels or A-labels ("bücher.example" and
// "xn--bcher-kva.example" are the same entry); no other Unicode folding or
// mapping is done, so a look-alike name never matches (see DomainToASCII).
type HostList []string

// MatchDomain reports whether a single pattern matches domain.
func MatchDomain(pattern, domain string) bool {
	if pattern == "*" {
		return true
	}
	pattern = strings.TrimSuffix(pattern, ".")
	domain = strings.TrimSuffix(domain, ".")
	if pattern == "" || pattern == "." || domain == "" {
		return false
	}
	if !isASCII(pattern) || !isASCII(domain) {
		pattern, domain = domainKey(pattern), domainKey(domain)
	}
	if pattern[0] == '.' {
		return len(domain) > len(pattern) && equalFoldASCII(domain[len(domain)-len(pattern):], pattern)
	}
	return equalFoldASCII(pattern, domain)
}

// Match reports whether any entry matches domain.
func (h HostList) Match(domain string) bool {
	for _, p := range h {
		if MatchDomain(p, domain) {
			return true
		}
	}
	return false
}

// RecipientAllowed applies rcpthosts to a recipient address as qmail-smtpd and
// qmail-qmtpd do, with one deliberate difference: an address with no '@' is
// refused here, because a gateway has no local users to qualify it for
// (qmail lets it through). Forms that route elsewhere once a later hop
// reinterprets them (the '%' hack, '!' paths, source routes) are refused
// unless the whole address, as a later hop would read it, stays inside
// rcpthosts.
func (h HostList) RecipientAllowed(addr string) bool {
	local, domain := Split(addr)
	if domain == "" || local == "" {
		return false
	}
	if strings.HasPrefix(addr, "@") || strings.ContainsAny(local, "%!@:") && !localPartHarmless(local, h) {
		return false
	}
	// An address literal such as [192.0.2.1] is allowed only when it is
	// listed literally, like any other entry.
	return h.Match(domain)
}

// localPartHarmless reports whether the routing characters in local can only
// lead back into hosts: every '%' or '@' target and every '!' source host must
// itself be in rcpthosts.
func localPartHarmless(local string, h HostList) bool {
	l := strings.Trim(local, "\"")
	if strings.ContainsAny(l, "!:") {
		return false
	}
	for {
		i := strings.LastIndexAny(l, "%@")
		if i < 0 {
			return true
		}
		if !h.Match(l[i+1:]) {
			return false
		}
		l = l[:i]
	}
}
