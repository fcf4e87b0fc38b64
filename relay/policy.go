package relay

import (
	"net/netip"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/relay/transport"
)

// Route sends the recipients whose domain matches one of its patterns through
// one transport, with at most Concurrency deliveries at once.
type Route struct {
	Name        string // "route[N]" for logs and metrics
	Patterns    mail.HostList
	Via         string
	Transport   Transport
	Concurrency int
	sem         chan struct{}
}

// Router is the ordered route table: the first route with a matching pattern
// wins. Patterns are exact domains, ".suffix" for subdomains and "*".
type Router struct {
	Routes []*Route
}

// Lookup returns the route for a recipient, or nil when no route matches.
func (r *Router) Lookup(rcpt string) *Route {
	d := mail.Domain(rcpt)
	for _, rt := range r.Routes {
		if rt.Patterns.Match(d) {
			return rt
		}
	}
	return nil
}

// Close closes every route's transport.
func (r *Router) Close() {
	for _, rt := range r.Routes {
		if rt.Transport != nil {
			rt.Transport.Close()
		}
	}
}

// Policy decides who may send what where. It is immutable once built; a
// reload builds a new one.
type Policy struct {
	// RcptHosts are accepted from anyone (qmail's rcpthosts).
	RcptHosts mail.HostList
	// QMTPRelay and SMTPRelay are the networks that may relay anywhere.
	QMTPRelay []netip.Prefix
	SMTPRelay []netip.Prefix
	// QMQPAllow are the networks allowed to use QMQP at all.
	QMQPAllow []netip.Prefix
	// Router is consulted so that mail nobody could route is refused at the
	// door rather than bounced later.
	Router *Router
}

// InPrefixes reports whether ip falls in any of the networks.
func InPrefixes(ip netip.Addr, nets []netip.Prefix) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	for _, p := range nets {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Recipient decides whether one recipient is acceptable from this
// connection: relay clients (ConnInfo.RelayClient, set from the listener's
// relay_clients or a verified client certificate) and authenticated SMTP
// users may send anywhere; everyone else only to rcpthosts (qmail's rules,
// PROTOCOLS.md 2.3, minus qmail's open door for a missing rcpthosts and for
// addresses without a domain). QMQP clients passed the allow list and may
// send anywhere, as qmail-qmqpd does.
func (p *Policy) Recipient(c *mail.ConnInfo, rcpt string) mail.Status {
	if !mail.ValidAddress(rcpt) || rcpt == "" {
		return mail.StatusBadRecipient
	}
	relay := c.RelayClient || c.AuthUser != "" || c.Proto == "QMQP"
	if !relay && !p.RcptHosts.RecipientAllowed(rcpt) {
		return mail.StatusNotRcptHost
	}
	if relay && !relayable(rcpt) {
		return mail.Perm("5.1.3", "sorry, that address is not deliverable")
	}
	if p.Router != nil {
		rt := p.Router.Lookup(rcpt)
		if rt == nil {
			return mail.Perm("5.1.2", "sorry, I have no route for that domain")
		}
		if c, ok := rt.Transport.(transport.RecipientChecker); ok {
			return c.CheckRecipient(rcpt)
		}
	}
	return mail.OK("")
}

// relayable refuses, even from relay clients, forms that no transport can put
// on a wire safely: no domain at all, or control characters.
func relayable(rcpt string) bool {
	local, dom := mail.Split(rcpt)
	if local == "" || dom == "" {
		return false
	}
	for i := 0; i < len(rcpt); i++ {
		if rcpt[i] < 0x20 || rcpt[i] == 0x7f {
			return false
		}
	}
	return true
}
