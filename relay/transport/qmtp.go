package transport

import (
	"cmp"
	"context"
	"io"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmtp"
)

// DefaultIdleTimeout is how long an unused outgoing connection is kept for
// reuse. It is short on purpose: a server may drop idle clients (qmgate's
// own after its 5-minute read timeout), and a dead pooled connection would
// turn into a needless deferral.
const DefaultIdleTimeout = 20 * time.Second

// lazyBody opens a job's stored message on first read, so a batch of many
// messages holds one file open at a time per connection, not all of them.
type lazyBody struct {
	open func() (io.ReadCloser, error)
	r    io.ReadCloser
	err  error
}

func (b *lazyBody) Read(p []byte) (int, error) {
	if b.r == nil && b.err == nil {
		b.r, b.err = b.open()
	}
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.r.Close()
	}
	return n, err
}

func (b *lazyBody) Close() {
	if b.r != nil {
		b.r.Close()
	}
}

// QMTP delivers over QMTP to one host, reusing connections and pipelining
// every message of a batch over one of them, with per-recipient results.
// The sender goes as it is queued, VERP form included: the next qmail-style
// hub expands it, as qmail does for QMQP from ezmlm.
type QMTP struct {
	Addr string
	pooled[*qmtp.Conn]
}

// NewQMTP returns a QMTP transport to addr (host:port) over connections
// that c dials (nil: a zero qmtp.Client, no TLS), kept as r says.
func NewQMTP(addr string, c *qmtp.Client, r Reuse) *QMTP {
	c = cmp.Or(c, &qmtp.Client{})
	return &QMTP{Addr: addr, pooled: pooled[*qmtp.Conn]{
		host: addr,
		pool: newConnPool(r, func(ctx context.Context) (*qmtp.Conn, error) { return c.Dial(ctx, addr) }, nil),
		send: func(ctx context.Context, conn *qmtp.Conn, jobs []*Job, host string) int {
			deliverQMTP(ctx, conn, jobs, host) // the whole batch, pipelined
			return len(jobs)
		},
		dialFailed: mail.StatusOf, // a *qmtp.DialError names its cause
	}}
}

// deliverQMTP sends jobs over one connection and fills their results.
func deliverQMTP(ctx context.Context, conn *qmtp.Conn, jobs []*Job, host string) {
	msgs := make([]*qmtp.Message, 0, len(jobs))
	bodies := make([]*lazyBody, 0, len(jobs))
	fillJob := func(j *Job, st []mail.Status) {
		j.Results = make([]Result, len(j.Envelope.Recipients))
		for k := range j.Results {
			s := mail.StatusNoReply
			if k < len(st) {
				s = st[k]
			}
			j.Results[k] = Result{Status: s, Host: host}
		}
	}
	for _, j := range jobs {
		b := &lazyBody{open: j.Open}
		bodies = append(bodies, b)
		// Each message is recorded as its last reply arrives, while the
		// rest of the pipelined batch is still under way.
		msgs = append(msgs, &qmtp.Message{Envelope: j.Envelope, Body: b, Size: j.Size, Replied: func(st []mail.Status) {
			fillJob(j, st)
			j.Done()
		}})
	}
	res, _ := conn.Send(ctx, msgs...)
	for _, b := range bodies {
		b.Close()
	}
	for i, j := range jobs {
		if j.Results == nil { // Send reports every message; this is a safety net
			var st []mail.Status
			if i < len(res) {
				st = res[i]
			}
			fillJob(j, st)
		}
	}
}
