package relay

import (
	"cmp"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/ratelimit"
	"github.com/qmgate/qmgate/mail"
)

// The hub's inbound rate limits ([limits] client_messages and the rest):
// how many messages and recipients one client address (or network), one
// authenticated SMTP user, one local user of the QMQP socket and one
// envelope sender domain may send per minute, hour or day. They are what
// keeps a compromised app server or a stolen password from sending a
// hundred thousand messages through the hub: past a limit the client hears
// a temporary refusal that names it, and its mail waits on its side.
//
// Recipients are counted as they are accepted (at RCPT for SMTP), messages
// once they are committed; refused mail counts nowhere. Concurrent sessions
// of one client check before they count, so together they may pass a limit
// by at most one message (or recipient) each.

// limitWho is what a limit counts by.
type limitWho int

const (
	byClient limitWho = iota
	byUser
	byUID
	bySenderDomain
	nLimitWho
)

// limitRule is one configured limit: its counts and how it is named.
type limitRule struct {
	name    string // the configuration key, also the metric's label
	what    string // the refusal's text before the rate
	rates   []ratelimit.Rate
	counts  *ratelimit.Limiter
	refused prometheus.Counter
}

// Limits is one configuration's rate limits. A reload builds new Limits and
// carries the counts of every limit whose rates did not change (keep), so
// a SIGHUP neither forgets a client that is over its limit nor keeps
// counting it against a limit that no longer exists. Nil Limits limit
// nothing (the tcpserver drop-ins, one process per connection, keep none).
type Limits struct {
	messages, recipients [nLimitWho]*limitRule
	active               bool
	exempt               []netip.Prefix
	exemptRelay          bool
	limitTrustedConns    bool
	v4Bits, v6Bits       int
	log                  *slog.Logger
	refusals             *prometheus.CounterVec
}

// limitTexts name each limit in a refusal: "too much mail from this
// client: 100/m".
var limitTexts = map[string]string{
	"client_messages":          "too much mail from this client",
	"client_recipients":        "too many recipients from this client",
	"user_messages":            "too much mail from this user",
	"user_recipients":          "too many recipients from this user",
	"uid_messages":             "too much mail from this local user",
	"uid_recipients":           "too many recipients from this local user",
	"sender_domain_messages":   "too much mail from this sender's domain",
	"sender_domain_recipients": "too many recipients from this sender's domain",
}

// newLimits builds the limits of a validated configuration.
func newLimits(c *config.Limits, log *slog.Logger) *Limits {
	l := &Limits{
		exempt:      config.Prefixes(c.Exempt),
		exemptRelay: c.ExemptRelayClients,
		// limitTrustedConns is read by the listeners' connection limits
		// (trustedConnExempt), not by the rate limits.
		limitTrustedConns: c.LimitTrustedConns,
		v4Bits:            cmp.Or(c.ClientIPv4Prefix, 32),
		v6Bits:            cmp.Or(c.ClientIPv6Prefix, 64),
		log:               log,
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qmgate_limit_refusals_total",
			Help: "Messages and recipients refused for a while because a client, user, local user or sender domain reached a rate limit ([limits]), by limit.",
		}, []string{"limit"}),
	}
	for i, rk := range c.RateKeys() {
		if len(rk.Rates) == 0 {
			continue
		}
		r := &limitRule{name: rk.Key, what: limitTexts[rk.Key]}
		for _, s := range rk.Rates {
			if rate, err := ratelimit.ParseRate(s); err == nil {
				r.rates = append(r.rates, rate)
			}
		}
		r.counts = &ratelimit.Limiter{Rates: r.rates}
		r.refused = l.refusals.WithLabelValues(r.name)
		// RateKeys lists messages then recipients for each kind, in
		// limitWho's order.
		if i%2 == 0 {
			l.messages[i/2] = r
		} else {
			l.recipients[i/2] = r
		}
		l.active = true
	}
	return l
}

// rules lists the configured limits.
func (l *Limits) rules() []*limitRule {
	var out []*limitRule
	for w := range nLimitWho {
		for _, r := range []*limitRule{l.messages[w], l.recipients[w]} {
			if r != nil {
				out = append(out, r)
			}
		}
	}
	return out
}

// keep carries over from the limits in force before a reload the counts of
// every limit whose rates (and for client limits, the address grouping)
// are the same, and the refusal counter.
func (l *Limits) keep(old *Limits) {
	if l == nil || old == nil {
		return
	}
	l.refusals = old.refusals
	var kept, reset []string
	for w := range nLimitWho {
		for _, p := range [][2]*limitRule{{l.messages[w], old.messages[w]}, {l.recipients[w], old.recipients[w]}} {
			r, o := p[0], p[1]
			if r == nil {
				continue
			}
			r.refused = l.refusals.WithLabelValues(r.name)
			if o != nil && slices.Equal(r.rates, o.rates) && (w != byClient || l.v4Bits == old.v4Bits && l.v6Bits == old.v6Bits) {
				r.counts = o.counts
				kept = append(kept, r.name)
			} else {
				reset = append(reset, r.name)
			}
		}
	}
	if l.active && l.log != nil {
		l.log.Info("rate limits reloaded", "counts_kept", strings.Join(kept, " "), "counts_reset", strings.Join(reset, " "))
	}
}

// exempted reports whether no limit applies to the client: its address is
// in [limits] exempt, or it is a relay client (or an allowed QMQP client)
// and exempt_relay_clients is set. A local user of the QMQP socket, whom
// the QMQP server marks a relay client too, is never exempted that way.
func (l *Limits) exempted(c *mail.ConnInfo) bool {
	ip := c.RemoteIP()
	if !ip.IsValid() {
		return false
	}
	return InPrefixes(ip, l.exempt) || l.exemptRelay && c.RelayClient
}

// clientKey is the client's network as a limiter key: 16 bytes of the
// masked address (an IPv4 address in its IPv4-mapped form).
func (l *Limits) clientKey(ip netip.Addr) (string, netip.Prefix) {
	ip = ip.Unmap()
	bits := l.v6Bits
	if ip.Is4() {
		bits = l.v4Bits
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return "", netip.Prefix{}
	}
	a := p.Addr().As16()
	return string(a[:]), p
}

// Tally applies the limits to one message of one client: recipients are
// reserved as they are accepted, and counted with the message once it is
// committed. A nil Tally limits nothing. It belongs to one session.
type Tally struct {
	l     *Limits
	c     *mail.ConnInfo
	from  string
	keys  [nLimitWho]string // "" where a kind does not apply
	rcpts int               // recipients reserved, not yet counted
	now   time.Time         // when the message began: its checks' clock
}

// Start begins the tally of a message from c with envelope sender from; nil
// when no limit applies to it.
func (l *Limits) Start(c *mail.ConnInfo, from string) *Tally {
	if l == nil || !l.active || l.exempted(c) {
		return nil
	}
	t := &Tally{l: l, c: c, from: from, now: time.Now()}
	if ip := c.RemoteIP(); ip.IsValid() && (l.messages[byClient] != nil || l.recipients[byClient] != nil) {
		t.keys[byClient], _ = l.clientKey(ip)
	}
	t.keys[byUser] = c.AuthUser
	if p, ok := c.RemoteAddr.(*Peer); ok {
		t.keys[byUID] = strconv.Itoa(p.UID)
	}
	// mail.Domain folds ASCII case only; the null sender and bare names
	// have no domain and are counted by the other limits alone.
	t.keys[bySenderDomain] = mail.Domain(from)
	return t
}

// Recipients reserves n more recipients of the message if they fit every
// recipient limit with those reserved already; otherwise it refuses them
// (and logs and counts the refusal) and reserves nothing.
func (t *Tally) Recipients(n int) mail.Status {
	if t == nil {
		return mail.OK("")
	}
	st := t.check(t.l.recipients, t.rcpts+n)
	if st.IsAccept() {
		t.rcpts += n
	}
	return st
}

// CountRecipient decides one more recipient and counts it at once, as
// SMTP's RCPT does.
func (t *Tally) CountRecipient() mail.Status {
	st := t.Recipients(1)
	if t != nil && st.IsAccept() {
		t.add(t.l.recipients, t.rcpts, t.now)
		t.rcpts = 0
	}
	return st
}

// Message reports whether one more message fits every message limit; it
// counts nothing.
func (t *Tally) Message() mail.Status {
	if t == nil {
		return mail.OK("")
	}
	return t.check(t.l.messages, 1)
}

// check refuses when a rule of rules has no room for n more now.
func (t *Tally) check(rules [nLimitWho]*limitRule, n int) mail.Status {
	for w, r := range rules {
		if r == nil || t.keys[w] == "" {
			continue
		}
		if room, by := r.counts.Room(t.keys[w], t.now); room < n {
			return t.refuse(limitWho(w), r, by)
		}
	}
	return mail.OK("")
}

// Count counts the message and the recipients reserved for it; it is called
// once the message is committed.
func (t *Tally) Count() {
	if t == nil {
		return
	}
	now := time.Now()
	t.add(t.l.messages, 1, now)
	t.add(t.l.recipients, t.rcpts, now)
	t.rcpts = 0
}

func (t *Tally) add(rules [nLimitWho]*limitRule, n int, now time.Time) {
	if n <= 0 {
		return
	}
	for w, r := range rules {
		if r != nil && t.keys[w] != "" {
			r.counts.Add(t.keys[w], n, now)
		}
	}
}

// refuse makes the temporary refusal that names the limit, logs it once and
// counts it.
func (t *Tally) refuse(w limitWho, r *limitRule, by ratelimit.Rate) mail.Status {
	r.refused.Inc()
	if log := t.l.log; log != nil {
		client := t.c.Client()
		who := t.keys[w]
		switch w {
		case byClient:
			_, p := t.l.clientKey(t.c.RemoteIP())
			who = p.String()
		case byUID:
			who = t.c.RemoteAddr.String()
		}
		args := []any{"client", client, "proto", protoFamily(t.c.Proto), "limit", r.name,
			"rate", by.String(), "counted_as", who, "from", t.from}
		if t.c.AuthUser != "" {
			args = append(args, "auth", t.c.AuthUser)
		}
		log.Warn("refused over a rate limit", args...)
	}
	// RFC 3463 4.7.1: delivery not authorized for now; the client retries.
	return mail.Temp("4.7.1", r.what+": "+by.String())
}

// trustedConnExempt returns the Exempt of a listener's per-address connection
// limit (max_conns_per_ip): the networks of [limits] exempt and the
// listener's trusted networks (trusted picks them from the policy: relay
// clients, the QMQP allow list), read at each connection so a reload
// applies, unless [limits] limit_trusted_conns holds them to it too.
// Postfix exempts mynetworks from its per-client limits the same way.
func (h *Hub) trustedConnExempt(trusted func(*Policy) []netip.Prefix) func(netip.Addr) bool {
	return func(ip netip.Addr) bool {
		pol := h.state.Load().policy
		if l := pol.Limits; l == nil || l.limitTrustedConns {
			return false
		} else if InPrefixes(ip, l.exempt) {
			return true
		}
		return InPrefixes(ip, trusted(pol))
	}
}
