package transport

import (
	"cmp"
	"context"
	"strings"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/smtp"
)

// SMTP delivers to one smarthost over SMTP (smtp:// with STARTTLS as the
// route says, smtps:// with implicit TLS), reusing connections for the
// messages of a batch, with per-recipient results.
type SMTP struct {
	URL    string // smtp://host[:port] or smtps://host[:port]
	policy string // the TLS policy results name
	pooled[*smtp.Conn]
}

// NewSMTP returns an SMTP transport to url over connections that c dials
// (nil: a zero smtp.Client, TLS required, no AUTH), kept as r says; a
// pooled connection is reset (RSET) before reuse. Its results name the
// client's TLS policy (smarthost-required, opportunistic or none; smtps://
// counts as required).
func NewSMTP(url string, c *smtp.Client, r Reuse) *SMTP {
	c = cmp.Or(c, &smtp.Client{})
	policy := smtpTLSPolicy(c.TLS, true)
	if strings.HasPrefix(url, "smtps://") {
		policy = TLSPolicySmarthostRequired
	}
	return &SMTP{URL: url, policy: policy, pooled: pooled[*smtp.Conn]{
		host: url,
		pool: newConnPool(r, func(ctx context.Context) (*smtp.Conn, error) { return c.Dial(ctx, url) },
			func(c *smtp.Conn) bool { return c.Reset() == nil }),
		send: func(ctx context.Context, conn *smtp.Conn, jobs []*Job, host string) int {
			return deliverSMTP(ctx, conn, jobs, host, policy)
		},
		dialFailed: mail.StatusOf,
	}}
}

// Deliver implements Transport.
func (t *SMTP) Deliver(ctx context.Context, jobs []*Job) {
	t.pooled.Deliver(ctx, jobs)
	for _, j := range jobs {
		if !j.finished {
			j.SetTLSPolicy(t.policy)
		}
	}
}

// deliverSMTP sends jobs one after the other over conn and returns how many
// it finished; it stops early only when the connection broke, leaving the
// rest for a new connection. A VERP sender is expanded here, one
// transaction per recipient. Each result names tlsPolicy.
func deliverSMTP(ctx context.Context, conn *smtp.Conn, jobs []*Job, host, tlsPolicy string) int {
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
				j.Results[i] = Result{Status: st, Host: host, TLSPolicy: tlsPolicy}
			}
		}
		j.Done()
	}
	return len(jobs)
}
