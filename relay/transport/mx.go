package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

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
type MX struct {
	Resolver *net.Resolver
	QMTP     *qmtp.Client
	SMTP     *smtp.Client
	QMTPPort int
	SMTPPort int
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
		s.Fill(mail.Temp("4.3.0", "transport gave no result"), "")
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
			j.SetAll(st, domain)
		}
		return
	}
	timeouts := 0
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
					j.SetAll(status, host)
				}
				return
			}
			if status == smtp.StatusConnectTimedOut {
				timeouts++
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
	for _, j := range jobs {
		j.SetAll(mail.Temp("4.4.1", "could not connect to any mail exchanger of "+domain), domain)
		for i := range j.Results {
			j.Results[i].Failure = failure
		}
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
