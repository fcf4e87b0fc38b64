package transport

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/qmgate/qmgate/internal/mtasts"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/smtp"
)

// MX delivers to each recipient domain's mail exchangers, found in DNS, in
// preference order. MXPS (cr.yp.to/proto/mxps.txt): an exchanger with a
// preference in QMTP's slice (12801, 12817, ...) is tried over QMTP first,
// and over SMTP on the same host only if the QMTP connection cannot be made. SMTP uses
// STARTTLS opportunistically: when offered, unverified, falling back to
// plain text only if the TLS handshake fails (that is the smtp package's
// TLSOpportunistic). The next exchanger is tried only when a connection
// cannot be made; once an exchanger answered, its answers stand.
//
// DNS: a domain with neither MX nor address records fails permanently
// (5.1.2), a null MX (RFC 7505) too (5.1.10); every other DNS problem is
// temporary.
//
// MTA-STS (RFC 8461), when STS is set: a domain whose policy is in enforce
// mode gets its mail only from the exchangers the policy names, over SMTP
// with STARTTLS and a certificate valid for the exchanger's name (checked
// against SMTP's TLSConfig.RootCAs, the system's roots when nil); when none
// can be reached so, the mail waits (temporary). In testing mode delivery
// goes on as without a policy and what enforcement would have refused is
// logged. Each result names the TLS policy it was made under.
type MX struct {
	Resolver *net.Resolver
	QMTP     *qmtp.Client
	SMTP     *smtp.Client
	QMTPPort int
	SMTPPort int

	// STS finds the domains' MTA-STS policies; nil turns MTA-STS off.
	STS *mtasts.Cache
	// STSRefresh is how often cached policies are renewed in the
	// background; 0 means DefaultSTSRefresh.
	STSRefresh time.Duration
	// Log receives the MTA-STS log lines; slog.Default() when nil.
	Log *slog.Logger

	mu      sync.Mutex
	enforce *smtp.Client
	cancel  context.CancelFunc
	done    chan struct{}
	closed  bool
}

// DefaultSTSRefresh is how often an MX transport renews the cached MTA-STS
// policies that are past half their max_age.
const DefaultSTSRefresh = time.Hour

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
		s.Fill(mail.Temp("4.3.0", "transport gave no result"), "")
		for k, i := range s.parentIdx {
			j.Results[i] = s.Results[k]
		}
	}
	j.subs = nil
}

func (t *MX) deliverDomain(ctx context.Context, domain string, jobs []*Job) {
	// Every result names the TLS policy it was reached under, set before
	// the engine records a job (Done) and for the rest when done here.
	policy := ""
	for _, j := range jobs {
		if j.parent == nil && j.OnDone != nil {
			j, done := j, j.OnDone
			j.OnDone = func() { j.SetTLSPolicy(policy); done() }
		}
	}
	defer func() {
		for _, j := range jobs {
			if !j.finished {
				j.SetTLSPolicy(policy)
			}
		}
	}()

	hops, st := t.plan(ctx, domain)
	if !st.IsAccept() {
		for _, j := range jobs {
			j.SetAll(st, domain)
		}
		return
	}
	sts := t.stsPolicy(ctx, domain)
	client := t.SMTP
	policy = smtpTLSPolicy(client.TLS, false)
	switch sts.Mode {
	case mtasts.ModeEnforce:
		// RFC 8461 section 5: only the exchangers the policy names, over
		// SMTP with a certificate valid for the exchanger's name (QMTP
		// has no TLS, so MXPS gives way).
		policy = TLSPolicyMTASTSEnforce
		client = t.enforceClient()
		var allowed []qmtp.Hop
		for _, h := range hops {
			if sts.Allows(h.Host) {
				h.QMTP = false
				allowed = append(allowed, h)
			} else {
				t.logger().Info("MTA-STS enforce: skipping a mail exchanger the policy does not name",
					"domain", domain, "host", strings.TrimSuffix(h.Host, "."), "policy_id", sts.ID)
			}
		}
		if len(allowed) == 0 {
			t.logger().Warn("MTA-STS enforce: no mail exchanger is named by the policy; mail waits",
				"domain", domain, "policy_id", sts.ID)
			for _, j := range jobs {
				j.SetAll(mail.Temp("4.7.5", "no mail exchanger of "+domain+" is allowed by its MTA-STS policy; will try again"), domain)
			}
			return
		}
		hops = allowed
	case mtasts.ModeTesting:
		policy = TLSPolicyMTASTSTesting
	}
	timeouts := 0
	var last mail.Status
	for _, hop := range hops {
		host := strings.TrimSuffix(hop.Host, ".")
		if hop.QMTP {
			conn, err := t.QMTP.Dial(ctx, net.JoinHostPort(host, fmt.Sprint(t.QMTPPort)))
			if err == nil {
				if sts.Mode == mtasts.ModeTesting {
					t.wouldRefuse(sts, host, errors.New("QMTP carries no TLS"))
				} else {
					policy = TLSPolicyNone
				}
				deliverQMTP(ctx, conn, jobs, host)
				conn.Close()
				return
			}
			// MXPS: the QMTP connection could not be made, so SMTP on the
			// same host is safe (nothing was sent).
		}
		conn, err := client.Dial(ctx, net.JoinHostPort(host, fmt.Sprint(t.SMTPPort)))
		if err != nil {
			var status mail.Status
			if errors.As(err, &status) && status.IsPermanent() {
				for _, j := range jobs {
					j.SetAll(status, host)
				}
				return
			}
			if status == smtp.StatusConnectTimedOut {
				timeouts++
			}
			last = status
			if sts.Mode == mtasts.ModeEnforce {
				t.logger().Info("MTA-STS enforce: no verified TLS session with a mail exchanger",
					"domain", domain, "host", host, "err", err)
			}
			continue
		}
		if sts.Mode == mtasts.ModeTesting {
			if !sts.Allows(host) {
				t.wouldRefuse(sts, host, errors.New("the policy does not name this mail exchanger"))
			} else if err := t.verifyPeer(conn.TLS(), host); err != nil {
				t.wouldRefuse(sts, host, err)
			}
		}
		rest := jobs
		for len(rest) > 0 {
			done := deliverSMTP(ctx, conn, rest, host, policy)
			conn.Close()
			rest = rest[done:]
			if len(rest) > 0 {
				if conn, err = client.Dial(ctx, net.JoinHostPort(host, fmt.Sprint(t.SMTPPort))); err != nil {
					for _, j := range rest {
						j.SetAll(mail.StatusOf(err), host)
					}
					return
				}
			}
		}
		return
	}
	failure := FailureConnect
	if timeouts == len(hops) {
		failure = FailureConnectTimeout
	}
	st = mail.Temp("4.4.1", "could not connect to any mail exchanger of "+domain)
	if sts.Mode == mtasts.ModeEnforce && last.Text != "" {
		// Say why: a certificate the policy does not accept is not a
		// host that is down.
		st = mail.Temp(cmp.Or(last.Code, "4.4.1"), "no mail exchanger of "+domain+" could be reached with the verified TLS its MTA-STS policy demands (last: "+last.Text+")")
	}
	for _, j := range jobs {
		j.SetAll(st, domain)
		for i := range j.Results {
			j.Results[i].Failure = failure
		}
	}
}

// stsPolicy returns the domain's MTA-STS policy, or no policy when MTA-STS
// is off or the domain is an address literal. A failed lookup leaves the
// cached policy or none (the Cache's rules); it is logged, never a reason
// to hold mail back by itself.
func (t *MX) stsPolicy(ctx context.Context, domain string) mtasts.Policy {
	if t.STS == nil || strings.HasPrefix(domain, "[") {
		return mtasts.Policy{}
	}
	t.startRefresh()
	p, err := t.STS.Policy(ctx, domain)
	if err != nil {
		t.logger().Warn("MTA-STS policy lookup failed", "domain", domain, "mode", string(p.Mode), "err", err)
	}
	return p
}

// wouldRefuse logs what an enforce policy would have refused (RFC 8461
// section 5: testing mode delivers anyway).
func (t *MX) wouldRefuse(p mtasts.Policy, host string, why error) {
	t.logger().Warn("MTA-STS testing: enforcement would have refused this delivery",
		"domain", p.Domain, "host", host, "policy_id", p.ID, "reason", why.Error())
}

// verifyPeer checks, for testing mode, what enforce mode's TLS would have
// checked: a certificate chain to the trust store, valid for host (RFC 8461
// section 4.2).
func (t *MX) verifyPeer(cs *tls.ConnectionState, host string) error {
	if cs == nil {
		return errors.New("the session had no TLS")
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the mail exchanger sent no certificate")
	}
	opts := x509.VerifyOptions{DNSName: host, Roots: t.roots(), Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("certificate not valid for the mail exchanger: %w", err)
	}
	return nil
}

func (t *MX) roots() *x509.CertPool {
	if t.SMTP.TLSConfig != nil {
		return t.SMTP.TLSConfig.RootCAs
	}
	return nil
}

// enforceClient is the SMTP client for enforce mode: the route's client
// with STARTTLS required and the certificate verified against the
// exchanger's name, the one dialled.
func (t *MX) enforceClient() *smtp.Client {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.enforce == nil {
		c := *t.SMTP
		c.TLS = smtp.TLSRequired
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if t.SMTP.TLSConfig != nil {
			cfg = t.SMTP.TLSConfig.Clone()
		}
		cfg.ServerName, cfg.InsecureSkipVerify = "", false
		c.TLSConfig = cfg
		t.enforce = &c
	}
	return t.enforce
}

// startRefresh starts, once, the background renewal of cached policies
// (mtasts.Cache.Refresh every STSRefresh), stopped by Close.
func (t *MX) startRefresh() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cancel != nil || t.closed {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel, t.done = cancel, make(chan struct{})
	every := cmp.Or(t.STSRefresh, DefaultSTSRefresh)
	go func() {
		defer close(t.done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			if n, err := t.STS.Refresh(ctx, 0); err != nil && ctx.Err() == nil {
				t.logger().Warn("MTA-STS policy refresh failed; the cached policy stays", "renewed", n, "err", err)
			} else if n > 0 {
				t.logger().Info("MTA-STS policies renewed", "renewed", n)
			}
		}
	}()
}

func (t *MX) logger() *slog.Logger {
	if t.Log != nil {
		return t.Log
	}
	return slog.Default()
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

// Close implements Transport: it stops the background policy refresh.
func (t *MX) Close() error {
	t.mu.Lock()
	t.closed = true
	cancel, done := t.cancel, t.done
	t.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}
