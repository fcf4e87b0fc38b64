package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/smtp"
)

// SMTP delivers to one smarthost over SMTP (smtp:// with STARTTLS as the
// route says, smtps:// with implicit TLS), reusing connections for the
// messages of a batch, with per-recipient results.
type SMTP struct {
	URL  string // smtp://host[:port] or smtps://host[:port]
	pool connPool[*smtp.Conn]
}

// NewSMTP returns an SMTP transport to url keeping up to maxIdle idle
// connections; a pooled connection is reset (RSET) before reuse.
func NewSMTP(url string, c *smtp.Client, maxIdle int) *SMTP {
	return &SMTP{URL: url, pool: connPool[*smtp.Conn]{
		dial:    func(ctx context.Context) (*smtp.Conn, error) { return c.Dial(ctx, url) },
		revive:  func(c *smtp.Conn) bool { return c.Reset() == nil },
		maxIdle: maxIdle,
	}}
}

func newSMTPTransport(cfg *config.Config, rc *config.Route, log *slog.Logger) (Transport, error) {
	c, err := smtpClient(cfg, rc, log)
	if err != nil {
		return nil, err
	}
	switch rc.TLS {
	case "", "required":
		c.TLS = smtp.TLSRequired
	case "opportunistic":
		c.TLS = smtp.TLSOpportunistic
	case "none":
		c.TLS = smtp.TLSNone
	}
	return NewSMTP(rc.Parsed.Scheme+"://"+rc.Parsed.Host, c, rc.Concurrency), nil
}

func smtpClient(cfg *config.Config, rc *config.Route, log *slog.Logger) (*smtp.Client, error) {
	c := &smtp.Client{
		LocalName:      cfg.Hostname,
		ConnectTimeout: cfg.Delivery.ConnectTimeout.D(),
		CommandTimeout: min(cfg.Delivery.Timeout.D(), 5*time.Minute),
		DataTimeout:    cfg.Delivery.Timeout.D(),
		ErrorLog:       log.With("transport", "smtp"),
		Username:       rc.Username,
		Password:       rc.Password,
	}
	if rc.PasswordFile != "" {
		b, err := os.ReadFile(rc.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("password_file: %w", err)
		}
		c.Password = strings.TrimRight(string(b), "\r\n")
	}
	if rc.CAFile != "" {
		tc, err := routeTLS(rc, "")
		if err != nil {
			return nil, err
		}
		c.TLSConfig = tc
	}
	return c, nil
}

// Deliver implements Transport.
func (t *SMTP) Deliver(ctx context.Context, jobs []*Job) {
	host := t.URL
	for len(jobs) > 0 {
		conn, err := t.pool.get(ctx)
		if err != nil {
			st := mail.StatusOf(err)
			for _, j := range jobs {
				j.setAll(st, host)
			}
			return
		}
		done := deliverSMTP(ctx, conn, jobs, host)
		t.pool.put(conn)
		jobs = jobs[done:]
	}
}

// deliverSMTP sends jobs one after the other over conn and returns how many
// it finished; it stops early only when the connection broke, leaving the
// rest for a new connection. A VERP sender is expanded here, one
// transaction per recipient.
func deliverSMTP(ctx context.Context, conn *smtp.Conn, jobs []*Job, host string) int {
	for n, j := range jobs {
		if conn.Broken() {
			return n
		}
		j.Results = make([]Result, len(j.Envelope.Recipients))
		groups := [][]int{}
		if mail.IsVERP(j.Envelope.Sender) {
			for i := range j.Envelope.Recipients {
				groups = append(groups, []int{i})
			}
		} else {
			all := make([]int, len(j.Envelope.Recipients))
			for i := range all {
				all[i] = i
			}
			groups = append(groups, all)
		}
		for _, g := range groups {
			env := mail.Envelope{Sender: j.Envelope.Sender}
			for _, i := range g {
				env.Recipients = append(env.Recipients, j.Envelope.Recipients[i])
			}
			if len(g) == 1 {
				env.Sender = mail.ExpandVERP(env.Sender, env.Recipients[0])
			}
			var sts []mail.Status
			if conn.Broken() {
				sts = nil
			} else if body, err := j.Open(); err != nil {
				sts = nil
			} else {
				sts, _ = conn.Send(ctx, env, body)
				body.Close()
			}
			for k, i := range g {
				st := mail.StatusNoReply
				if k < len(sts) {
					st = sts[k]
				}
				j.Results[i] = Result{Status: st, Host: host}
			}
		}
		j.Done()
	}
	return len(jobs)
}

// Close implements Transport.
func (t *SMTP) Close() error {
	t.pool.close()
	return nil
}

// MX delivers to each recipient domain's mail exchangers, found in DNS, in
// preference order. MXPS (PROTOCOLS.md 4): an exchanger with a preference in
// QMTP's slice (12801, 12817, ...) is tried over QMTP first, and over SMTP
// on the same host only if the QMTP connection cannot be made. SMTP uses
// STARTTLS opportunistically: when offered, unverified, falling back to
// plain text only if the TLS handshake fails (that is the smtp package's
// TLSOpportunistic). The next exchanger is tried only when a connection
// cannot be made; once an exchanger answered, its answers stand.
//
// DNS: a domain with neither MX nor address records fails permanently
// (5.1.2), a null MX (RFC 7505) too (5.1.10); every other DNS problem is
// temporary.
type MX struct {
	Resolver *net.Resolver
	QMTP     *qmtp.Client
	SMTP     *smtp.Client
	QMTPPort int
	SMTPPort int
}

func newMXTransport(cfg *config.Config, rc *config.Route, log *slog.Logger) (Transport, error) {
	r := net.DefaultResolver
	if cfg.Delivery.Resolver != "" {
		addr := cfg.Delivery.Resolver
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	}
	c, err := smtpClient(cfg, rc, log)
	if err != nil {
		return nil, err
	}
	c.TLS = smtp.TLSOpportunistic
	if rc.TLS == "required" {
		c.TLS = smtp.TLSRequired
	} else if rc.TLS == "none" {
		c.TLS = smtp.TLSNone
	}
	dialer := &net.Dialer{Resolver: r}
	c.DialContext = dialer.DialContext
	return &MX{
		Resolver: r,
		QMTP:     &qmtp.Client{Dialer: dialer, ConnectTimeout: cfg.Delivery.ConnectTimeout.D(), IOTimeout: cfg.Delivery.Timeout.D()},
		SMTP:     c,
		QMTPPort: cfg.Delivery.QMTPPort,
		SMTPPort: cfg.Delivery.SMTPPort,
	}, nil
}

// Deliver implements Transport.
func (t *MX) Deliver(ctx context.Context, jobs []*Job) {
	byDomain := map[string][]*Job{}
	var order []string
	for _, j := range jobs {
		// The queue groups a delivery's recipients by destination, which
		// for mx routes is the domain; split defensively all the same.
		for _, sub := range splitByDomain(j) {
			d := mail.Domain(sub.Envelope.Recipients[0])
			if _, ok := byDomain[d]; !ok {
				order = append(order, d)
			}
			byDomain[d] = append(byDomain[d], sub)
		}
	}
	for _, d := range order {
		t.deliverDomain(ctx, d, byDomain[d])
	}
	for _, j := range jobs {
		j.mergeSplit()
	}
}

// splitByDomain returns j itself when all its recipients share a domain, or
// one sub-job per domain that mergeSplit folds back.
func splitByDomain(j *Job) []*Job {
	first := mail.Domain(j.Envelope.Recipients[0])
	same := true
	for _, r := range j.Envelope.Recipients[1:] {
		if mail.Domain(r) != first {
			same = false
			break
		}
	}
	if same {
		return []*Job{j}
	}
	idx := map[string][]int{}
	var order []string
	for i, r := range j.Envelope.Recipients {
		d := mail.Domain(r)
		if _, ok := idx[d]; !ok {
			order = append(order, d)
		}
		idx[d] = append(idx[d], i)
	}
	var out []*Job
	for _, d := range order {
		sub := &Job{ID: j.ID, Size: j.Size, Open: j.Open, Envelope: mail.Envelope{Sender: j.Envelope.Sender}}
		for _, i := range idx[d] {
			sub.Envelope.Recipients = append(sub.Envelope.Recipients, j.Envelope.Recipients[i])
		}
		sub.parent, sub.parentIdx = j, idx[d]
		j.subs = append(j.subs, sub)
		out = append(out, sub)
	}
	return out
}

// mergeSplit copies sub-job results back into j.
func (j *Job) mergeSplit() {
	if len(j.subs) == 0 {
		return
	}
	j.Results = make([]Result, len(j.Envelope.Recipients))
	for _, s := range j.subs {
		s.fill(mail.Temp("4.3.0", "transport gave no result"), "")
		for k, i := range s.parentIdx {
			j.Results[i] = s.Results[k]
		}
	}
	j.subs = nil
}

func (t *MX) deliverDomain(ctx context.Context, domain string, jobs []*Job) {
	hops, st := t.plan(ctx, domain)
	if !st.IsAccept() {
		for _, j := range jobs {
			j.setAll(st, domain)
		}
		return
	}
	for _, hop := range hops {
		host := strings.TrimSuffix(hop.Host, ".")
		if hop.QMTP {
			conn, err := t.QMTP.Dial(ctx, net.JoinHostPort(host, fmt.Sprint(t.QMTPPort)))
			if err == nil {
				deliverQMTP(ctx, conn, jobs, host)
				conn.Close()
				return
			}
			// MXPS: the QMTP connection could not be made, so SMTP on the
			// same host is safe (nothing was sent).
		}
		conn, err := t.SMTP.Dial(ctx, net.JoinHostPort(host, fmt.Sprint(t.SMTPPort)))
		if err != nil {
			var status mail.Status
			if errors.As(err, &status) && status.IsPermanent() {
				for _, j := range jobs {
					j.setAll(status, host)
				}
				return
			}
			continue
		}
		rest := jobs
		for len(rest) > 0 {
			done := deliverSMTP(ctx, conn, rest, host)
			conn.Close()
			rest = rest[done:]
			if len(rest) > 0 {
				if conn, err = t.SMTP.Dial(ctx, net.JoinHostPort(host, fmt.Sprint(t.SMTPPort))); err != nil {
					for _, j := range rest {
						j.setAll(mail.StatusOf(err), host)
					}
					return
				}
			}
		}
		return
	}
	for _, j := range jobs {
		j.setAll(mail.Temp("4.4.1", "could not connect to any mail exchanger of "+domain), domain)
	}
}

// plan looks up the domain's exchangers. The status is an acceptance when
// there is somewhere to try.
func (t *MX) plan(ctx context.Context, domain string) ([]qmtp.Hop, mail.Status) {
	if domain == "" {
		return nil, mail.Perm("5.1.2", "the address has no domain")
	}
	if strings.HasPrefix(domain, "[") && strings.HasSuffix(domain, "]") {
		// An address literal: deliver to that address, SMTP only.
		return []qmtp.Hop{{Host: strings.TrimPrefix(strings.Trim(domain, "[]"), "IPv6:")}}, mail.OK("")
	}
	mxs, err := t.Resolver.LookupMX(ctx, domain)
	if err == nil && len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == "") {
		return nil, mail.Perm("5.1.10", "the domain accepts no mail (null MX)")
	}
	if err == nil && len(mxs) > 0 {
		return qmtp.PlanMX(mxs), mail.OK("")
	}
	if err != nil && !isNotFound(err) {
		return nil, mail.Temp("4.4.3", "DNS lookup of the mail exchangers failed; will try again")
	}
	// No MX: the domain itself is the exchanger (RFC 5321 5.1), if it has
	// an address.
	if _, aerr := t.Resolver.LookupIPAddr(ctx, domain); aerr != nil {
		if isNotFound(aerr) {
			return nil, mail.Perm("5.1.2", "sorry, I couldn't find a mail exchanger or IP address")
		}
		return nil, mail.Temp("4.4.3", "DNS lookup of the domain failed; will try again")
	}
	return []qmtp.Hop{{Host: domain}}, mail.OK("")
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound && !de.IsTemporary && !de.IsTimeout
}

// Close implements Transport.
func (t *MX) Close() error { return nil }
