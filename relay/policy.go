package relay

import (
	"net/netip"
	"strings"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/relay/transport"
)

// Route sends the recipients whose domain matches one of its patterns, of
// mail whose sender matches Senders when it has any, through one
// transport, with at most Concurrency deliveries at once.
type Route struct {
	Name     string // "route[N]" for logs and metrics
	Patterns mail.HostList
	// Senders, when not empty, limits the route to mail from these
	// senders (Postfix's sender_dependent_relayhost_maps): one smarthost
	// and its credentials for one sending domain.
	Senders     SenderList
	Via         string
	Transport   Transport
	Concurrency int
	// Pacing, when set, spaces the route's deliveries (see pace.go).
	Pacing *Pacing
	// Fallback, for mx routes, names the route that takes over.
	Fallback *Fallback
}

// Router is the ordered route table: the first route whose recipient
// patterns match, and whose sender patterns match when it has any, wins.
// Patterns are exact domains, ".suffix" for subdomains and "*".
type Router struct {
	Routes []*Route
}

// Lookup returns the route for a recipient of mail from sender, or nil
// when no route matches. A route with Senders never takes a bounce (the
// null sender): bounces follow the recipient rule.
func (r *Router) Lookup(sender, rcpt string) *Route {
	d := mail.Domain(rcpt)
	for _, rt := range r.Routes {
		if rt.Patterns.Match(d) && (len(rt.Senders) == 0 || rt.Senders.Match(sender)) {
			return rt
		}
	}
	return nil
}

// SenderList holds envelope sender patterns: an address ("billing@example.net"),
// any address at a domain pattern ("*@example.net", "*@.example.net"), a
// domain pattern alone ("example.net", ".example.net", the same as "*@"
// before it), or "*" for every sender but the null one. Local parts and
// domains match without regard to case.
type SenderList []string

// Match reports whether any pattern matches sender. The null sender of a
// bounce ("" or qmail's "#@[]") matches none.
func (l SenderList) Match(sender string) bool {
	if sender == "" || sender == "#@[]" {
		return false
	}
	local, dom := mail.Split(sender)
	for _, p := range l {
		pl, pd, addr := strings.Cut(p, "@")
		if !addr {
			pl, pd = "*", p
		}
		if pl != "*" && !strings.EqualFold(pl, local) {
			continue
		}
		if mail.MatchDomain(pd, dom) {
			return true
		}
	}
	return false
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
	// Router is consulted so that mail nobody could route, or a mailbox
	// name local delivery would refuse, is refused at the door rather than
	// bounced later. Only its patterns and Via are used; nil: no check.
	Router *Router
	// RelaySuffix is appended to every recipient of a relay client: the
	// value of tcpserver's RELAYCLIENT, as qmail-qmtpd does.
	RelaySuffix string
	// LocalRecipients lets relay clients name recipients without a domain,
	// for a qmail-queue program that qualifies them itself (the drop-ins
	// with $QMAILQUEUE); qmgate's own queue cannot route them.
	LocalRecipients bool
	// Unix governs clients of the QMQP unix-domain socket; nil lets every
	// local user submit with any sender.
	Unix *UnixPolicy
	// Identity is the masquerading that acceptance applies to trusted
	// submitters' mail (Identity.Rewriter), so that the route check sees
	// the sender and recipients as delivery will; nil rewrites nothing.
	Identity *Identity
	// SMTPSenders holds an authenticated SMTP user to the senders
	// [smtp] sender_login names; nil lets them use any.
	SMTPSenders SenderMap
	// Limits are the inbound rate limits; nil limits nothing.
	Limits *Limits
	// DropInUsers are the local users, besides root and the daemon's own
	// user, whose QMQP submissions over the unix socket may state the
	// protocol and client a tcpserver drop-in saw ([qmqp] dropin_users;
	// see origin).
	DropInUsers []string
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

// Recipient decides whether one recipient of mail from the envelope sender
// from is acceptable from this connection (Accept without the rewritten address).
func (p *Policy) Recipient(c *mail.ConnInfo, from, rcpt string) mail.Status {
	_, st := p.Accept(c, from, rcpt)
	return st
}

// Accept decides whether one recipient of mail from the envelope sender from
// is acceptable from this connection and returns it as it is to be
// committed; the sender counts only for routes with senders. The route
// is looked up for the sender and recipient as Identity's masquerading
// rewrites them for this client, as delivery will see them. Relay clients (ConnInfo.RelayClient,
// set from the listener's relay_clients, a verified client certificate or
// tcpserver's RELAYCLIENT) and authenticated SMTP users may send anywhere,
// and get RelaySuffix appended; everyone else only to rcpthosts (qmail's
// rules, see qmail-smtpd(8) and qmail-control(5), minus qmail's open door
// for a missing rcpthosts and for addresses without a domain). QMQP clients
// passed the allow list and may send anywhere, as qmail-qmqpd does. For
// everyone, the address must be safe to put on a wire (no control
// characters), routable, and, where it is delivered locally, name a mailbox
// local delivery accepts (mail.MailboxName).
func (p *Policy) Accept(c *mail.ConnInfo, from, rcpt string) (string, mail.Status) {
	relay := Trusted(c)
	if relay && rcpt != "" {
		rcpt += p.RelaySuffix
	}
	if !mail.ValidAddress(rcpt) || rcpt == "" {
		return rcpt, mail.StatusBadRecipient
	}
	if !relay && !p.RcptHosts.RecipientAllowed(rcpt) {
		return rcpt, mail.StatusNotRcptHost
	}
	if !deliverable(rcpt, relay && p.LocalRecipients) {
		return rcpt, mail.StatusUndeliverable
	}
	if p.Router != nil {
		// Masquerading comes first, then the route: the message is
		// committed, and delivered, with the rewritten addresses.
		rfrom, rrcpt := p.Identity.routed(c, from, rcpt)
		rt := p.Router.Lookup(rfrom, rrcpt)
		if rt == nil {
			return rcpt, mail.Perm("5.1.2", "sorry, I have no route for that domain")
		}
		// Local routes know their mailboxes: a name local delivery would
		// refuse (5.1.3) or a user not on the route's list (5.1.1).
		if chk, ok := rt.Transport.(transport.RecipientChecker); ok {
			if st := chk.CheckRecipient(rrcpt); !st.IsAccept() {
				return rcpt, st
			}
		}
	}
	return rcpt, mail.OK("")
}

// deliverable refuses, from every client, forms that no transport can put on
// a wire or into a file safely: control characters, and no local part or no
// domain (unless bare names are allowed).
func deliverable(rcpt string, bare bool) bool {
	for i := 0; i < len(rcpt); i++ {
		if rcpt[i] < 0x20 || rcpt[i] == 0x7f {
			return false
		}
	}
	if bare && strings.IndexByte(rcpt, '@') < 0 {
		return true
	}
	local, dom := mail.Split(rcpt)
	return local != "" && dom != ""
}

// Sender decides whether a client may use this envelope sender: any
// syntactically valid reverse-path (qmgate does no sender verification),
// except that a local user of the QMQP socket is held to Unix.Senders and
// an authenticated SMTP user to SMTPSenders.
func (p *Policy) Sender(c *mail.ConnInfo, from string) mail.Status {
	if !mail.ValidAddress(from) {
		return mail.StatusBadSender
	}
	if peer, ok := c.RemoteAddr.(*Peer); ok && p.Unix != nil && !p.Unix.SenderAllowed(peer, from) {
		return statusSenderNotOwned
	}
	if c.AuthUser != "" && p.SMTPSenders != nil && !p.SMTPSenders.Allows(c.AuthUser, from) {
		return statusSenderNotOwned
	}
	return mail.OK("")
}

// MailFrom decides SMTP's MAIL FROM: Sender, then whether one more message
// from this client fits its message limits, so that a client over a limit
// hears so before it sends the body (the message is checked, and counted,
// again when it is committed).
func (p *Policy) MailFrom(c *mail.ConnInfo, from string) mail.Status {
	if st := p.Sender(c, from); !st.IsAccept() {
		return st
	}
	return p.Limits.Start(c, from).Message()
}

// Rcpt decides SMTP's RCPT TO: Recipient, then the recipient limits, which
// count an accepted recipient at once.
func (p *Policy) Rcpt(c *mail.ConnInfo, from, rcpt string) mail.Status {
	if st := p.Recipient(c, from, rcpt); !st.IsAccept() {
		return st
	}
	return p.Limits.Start(c, from).CountRecipient()
}

var statusSenderNotOwned = mail.Status{Class: mail.Permanent, Code: "5.7.1", Text: "sorry, that sender is not yours to use", SMTP: 553}
