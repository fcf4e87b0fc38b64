// Package transport delivers queued mail to its next hop: QMTP (with
// pipelining and per-recipient replies), QMQP (ordered servers, failover),
// SMTP to a smarthost, MX (DNS, with MXPS), Maildir, mbox, HTTP webhooks and
// discard. Each transport is built from plain values (an options struct or
// a client from the protocol packages); none reads a configuration file.
// It knows mail types and the protocol clients, not the queue, policy or
// routing.
package transport

import (
	"context"
	"io"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/smtp"
)

// Job is one queued message for those of its recipients that one route
// serves. A delivery engine builds jobs from the queue's due work; a
// transport delivers them and fills Results.
type Job struct {
	ID string
	// Envelope holds the sender (unexpanded: a VERP sender stays pre@host-@[]
	// and each transport that puts it on a wire expands it per recipient) and
	// the recipients of this job.
	Envelope mail.Envelope
	// Size is the stored message's length in bytes.
	Size int64
	// Open returns the stored message: LF line ends, trace lines included.
	// Each call starts from the beginning, so a transport may retry.
	Open func() (io.ReadCloser, error)
	// Results has one entry per Envelope.Recipients, filled by the transport.
	Results []Result

	// OnDone, set by whoever runs the transport (the delivery engine),
	// records the job; Done calls it once. Transports call Done, never
	// OnDone.
	OnDone func()

	// A transport that must split a job (by domain, say) keeps the parts
	// here and folds their results back with mergeSplit.
	parent    *Job
	parentIdx []int
	subs      []*Job
	finished  bool
}

// Done tells the engine that the job's Results are final, so that it can
// record them while the transport goes on with the rest of the batch.
// Transports that deliver job after job call it after each; Results must
// not change afterwards. The engine calls it for every job Deliver left
// unmarked. It does nothing for the parts of a split job (their parent is
// recorded once merged).
func (j *Job) Done() {
	if j.parent != nil || j.finished || j.OnDone == nil {
		return
	}
	j.finished = true
	j.OnDone()
}

// Result is the outcome of one recipient's delivery attempt.
type Result struct {
	Status mail.Status
	// Host names what answered: a remote host, a mailbox path, a URL.
	Host string
	// Destination, when set, keys the queue's per-destination backoff for
	// this result instead of the route's next hop: a failure that says
	// nothing about the next hop's health must not hold back its other
	// mail.
	Destination string
	// HostDown says the next hop itself failed before any transaction
	// (connect, TLS, authentication, greeting): the same job may go to
	// another next hop at once (see Failover).
	HostDown bool
	// Failure names a failure that a route may act on at once (an mx
	// route's fallback_on): FailureConnectTimeout, FailureConnect, or "".
	Failure string
	// TLSPolicy names the TLS policy the attempt was made under (one of
	// the TLSPolicy constants), for the queue's attempt history, the logs
	// and the metrics; "" where TLS does not apply (Maildir, QMQP...).
	TLSPolicy string
}

// TLS policies of Result.TLSPolicy.
const (
	// TLSPolicyNone: no TLS (route tls = "none", or QMTP to an MXPS
	// exchanger).
	TLSPolicyNone = "none"
	// TLSPolicyOpportunistic: STARTTLS when offered, unverified (an mx
	// route's default; tls = "opportunistic").
	TLSPolicyOpportunistic = "opportunistic"
	// TLSPolicyMTASTSEnforce: the domain's MTA-STS policy in enforce mode:
	// only the MX hosts it names, with verified TLS (RFC 8461 section 5).
	TLSPolicyMTASTSEnforce = "mta-sts-enforce"
	// TLSPolicyMTASTSTesting: the domain's MTA-STS policy in testing mode:
	// delivered as without it, what enforcement would refuse logged.
	TLSPolicyMTASTSTesting = "mta-sts-testing"
	// TLSPolicySmarthostRequired: verified TLS to a smarthost (route tls =
	// "required", the default of smtp:// routes).
	TLSPolicySmarthostRequired = "smarthost-required"
	// TLSPolicyRequired: verified TLS to every exchanger of an mx route
	// with tls = "required".
	TLSPolicyRequired = "required"
)

// TLSPolicies lists the TLS policies, for metrics and documentation.
var TLSPolicies = []string{TLSPolicyNone, TLSPolicyOpportunistic, TLSPolicyMTASTSEnforce,
	TLSPolicyMTASTSTesting, TLSPolicySmarthostRequired, TLSPolicyRequired}

// smtpTLSPolicy names a Client's TLS policy; smarthost tells a smarthost
// (smtp:// route) from an mx route's exchangers.
func smtpTLSPolicy(p smtp.TLSPolicy, smarthost bool) string {
	switch p {
	case smtp.TLSNone:
		return TLSPolicyNone
	case smtp.TLSOpportunistic:
		return TLSPolicyOpportunistic
	}
	if smarthost {
		return TLSPolicySmarthostRequired
	}
	return TLSPolicyRequired
}

// SetTLSPolicy sets the TLS policy of every result of j that has none.
func (j *Job) SetTLSPolicy(policy string) {
	for i := range j.Results {
		if j.Results[i].TLSPolicy == "" {
			j.Results[i].TLSPolicy = policy
		}
	}
}

// Failure names of Result.Failure.
const (
	// FailureConnectTimeout: no next hop answered a connection (every
	// connect timed out: a filtered port).
	FailureConnectTimeout = "connect-timeout"
	// FailureConnect: no next hop took a connection (refused, unreachable
	// or timed out).
	FailureConnect = "connect"
)

// Transport delivers jobs. Deliver must fill every job's Results (the engine
// treats a missing one as a temporary failure), must respect ctx, and must
// never return a permanent failure for a reason that might go away.
type Transport interface {
	Deliver(ctx context.Context, jobs []*Job)
	// Close releases cached connections.
	Close() error
}

// RecipientChecker is implemented by transports that know at once whether
// they can deliver to a recipient (Maildir and Mbox: a safe mailbox name,
// on the route's users list when it has one), so that the hub refuses at
// RCPT what delivery would bounce.
type RecipientChecker interface {
	CheckRecipient(rcpt string) mail.Status
}

// Fill sets every unset result of j to st.
func (j *Job) Fill(st mail.Status, host string) {
	if len(j.Results) != len(j.Envelope.Recipients) {
		j.Results = make([]Result, len(j.Envelope.Recipients))
	}
	for i := range j.Results {
		if j.Results[i] == (Result{}) {
			j.Results[i] = Result{Status: st, Host: host}
		}
	}
}

// SetAll sets every result of j to st.
func (j *Job) SetAll(st mail.Status, host string) {
	j.Results = make([]Result, len(j.Envelope.Recipients))
	for i := range j.Results {
		j.Results[i] = Result{Status: st, Host: host}
	}
}

// Discard accepts everything and stores nothing: for tests and benchmarks,
// where it measures acceptance into the durable queue.
type Discard struct{}

// Deliver implements Transport.
func (Discard) Deliver(_ context.Context, jobs []*Job) {
	for _, j := range jobs {
		j.SetAll(mail.OK("discarded"), "discard:")
	}
}

// Close implements Transport.
func (Discard) Close() error { return nil }
