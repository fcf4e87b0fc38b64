package queue

import (
	"cmp"
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// Delivery is work claimed from the queue: the due recipients of one
// message that share one destination. The relay may put several
// Deliveries with the same Destination on one connection. Until Record
// (or the lease's end) nobody else is handed these recipients.
type Delivery struct {
	ID          string
	Sender      string   // as queued: may be a VERP sender; see SenderFor
	Recipients  []string // the claimed recipients, in envelope order
	Destination string   // the destination key the recipients share
	Size        int64    // message bytes: the prefix (Writer.SetPrefix) and the body
	Received    time.Time
	Attempts    int       // most attempts made so far for any of Recipients
	LeaseUntil  time.Time // after this the recipients may be handed out again

	q     *Queue
	m     *message
	idx   []int
	lease uint64
}

// Envelope returns the sender and the claimed recipients.
func (d *Delivery) Envelope() mail.Envelope {
	return mail.Envelope{Sender: d.Sender, Recipients: d.Recipients}
}

// SenderFor returns the envelope sender to use on the wire for rcpt: the
// sender itself, or a VERP sender pre@host-@[] expanded for rcpt
// (qmail-send(8), "VARIABLE ENVELOPE RETURN PATHS"). A VERP sender must never leave unexpanded.
func (d *Delivery) SenderFor(rcpt string) string { return mail.ExpandVERP(d.Sender, rcpt) }

// Open returns the message exactly as committed: its prefix, if any, then
// the body. The reader checks the
// body's CRC as it goes and returns an error instead of io.EOF if the
// bytes are not the ones committed, so a transport that streams to EOF
// before finishing the transaction never passes corrupt data on. A
// message removed meanwhile gives an error wrapping ErrNotFound.
func (d *Delivery) Open() (io.ReadCloser, error) { return d.q.openMessage(d.m) }

// openMessage opens m as committed: its prefix, if any, then its body. It
// is what deliveries send, and what bounces and `queue show` quote.
func (q *Queue) openMessage(m *message) (io.ReadCloser, error) {
	rc, err := q.openBody(m)
	if err != nil || m.body.prefix == "" {
		return rc, err
	}
	return prefixed{Reader: io.MultiReader(strings.NewReader(m.body.prefix), rc), c: rc}, nil
}

// prefixed reads a message's prefix, then its body.
type prefixed struct {
	io.Reader
	c io.Closer
}

func (p prefixed) Close() error { return p.c.Close() }

// Result is the outcome of delivering to one recipient of a Delivery.
type Result struct {
	Recipient string
	// Status is the outcome: accept (delivered), temporary (retry) or
	// permanent (bounce). Its Text is the remote reply, quoted in bounces.
	Status mail.Status
	// Route names the route used (such as "qmtp://hub2.example.net").
	Route string
	// Host is the remote host that answered (Remote-MTA in bounces).
	Host string
	// Destination keys the per-destination backoff (the next hop). Empty
	// means the Delivery's Destination.
	Destination string
	// TLSPolicy names the TLS policy the attempt was made under ("none",
	// "opportunistic", "mta-sts-enforce"...), kept with the attempt; empty
	// where none applies.
	TLSPolicy string
}

// An attempt's TLS policy is kept in its route field, after " tls=" (route
// names hold no spaces), so that journals stay readable by versions that
// do not know it: they show it as part of the route.
const attemptTLSSep = " tls="

// attemptRoute is the route field of an attempt under a TLS policy.
func attemptRoute(route, tlsPolicy string) string {
	route = sanitizeField(route, maxAttemptField)
	if tlsPolicy == "" {
		return route
	}
	return route + attemptTLSSep + sanitizeField(strings.ReplaceAll(tlsPolicy, " ", "-"), 32)
}

// splitAttemptRoute undoes attemptRoute.
func splitAttemptRoute(s string) (route, tlsPolicy string) {
	route, tlsPolicy, _ = strings.Cut(s, attemptTLSSep)
	return route, tlsPolicy
}

// Claim hands out up to n Deliveries that are due now, each leased for
// Options.LeaseTime. It never blocks; use Wait to learn when to call it.
// Recipients whose destination is backing off stay in the queue untouched.
// The result is ordered by destination.
func (q *Queue) Claim(n int) []*Delivery {
	now := q.now()
	nowNS := now.UnixNano()
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []*Delivery
	for len(out) < n {
		at, ok := q.nextDueLocked()
		if !ok || at > nowNS {
			break
		}
		e := q.sched.pop()
		m := e.m
		var order []string
		groups := map[string][]int{}
		for i := range m.rcpts {
			r := &m.rcpts[i]
			if r.state != Pending || r.leased(now) || r.next.After(now) {
				continue
			}
			if ds := q.dests[r.dest]; ds != nil && ds.next.After(now) {
				ds.blocked[m] = struct{}{}
				continue
			}
			if _, ok := groups[r.dest]; !ok {
				order = append(order, r.dest)
			}
			groups[r.dest] = append(groups[r.dest], i)
		}
		for _, dest := range order {
			if len(out) >= n {
				break
			}
			out = append(out, q.leaseLocked(m, dest, groups[dest], now))
		}
		q.scheduleLocked(m, now)
	}
	slices.SortStableFunc(out, func(a, b *Delivery) int { return cmp.Compare(a.Destination, b.Destination) })
	return out
}

// leaseLocked leases m's recipients idx, which share destination dest,
// as a new Delivery.
func (q *Queue) leaseLocked(m *message, dest string, idx []int, now time.Time) *Delivery {
	q.leaseSeq++
	d := &Delivery{ID: m.id, Sender: m.sender, Destination: dest, Size: m.size(),
		Received: m.received, LeaseUntil: now.Add(q.opt.LeaseTime),
		q: q, m: m, idx: idx, lease: q.leaseSeq}
	for _, i := range idx {
		r := &m.rcpts[i]
		r.lease, r.leaseUntil = d.lease, d.LeaseUntil
		d.Recipients = append(d.Recipients, r.addr)
		d.Attempts = max(d.Attempts, int(r.attempts))
	}
	return d
}

// Renew extends the lease of d's recipients to Options.LeaseTime from now
// and returns its new end, for work that waits in the relay longer than a
// lease (a paced route's backlog keeps its place, and so its order, that
// way). It reports false when the lease is lost: the recipients were
// handed out again after it ran out, or the message is gone; the holder
// must then let d go unattempted (Record with no results). Delivery's
// LeaseUntil keeps the first lease's end.
func (d *Delivery) Renew() (time.Time, bool) {
	q := d.q
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	m := d.m
	if m.dead || q.msgs.get(m.id) != m {
		return time.Time{}, false
	}
	until := now.Add(q.opt.LeaseTime)
	for _, i := range d.idx {
		if m.rcpts[i].lease != d.lease {
			return time.Time{}, false
		}
	}
	for _, i := range d.idx {
		m.rcpts[i].leaseUntil = until
	}
	q.scheduleLocked(m, now)
	return until, true
}

// Wait blocks until Claim may have work: a message was committed,
// released or flushed, a retry or a lease came due, or a destination
// recovered. It returns ctx.Err() when ctx ends and an error once the
// queue is closed. Time is read from Options.Clock, but the wait itself
// runs on the real clock.
func (q *Queue) Wait(ctx context.Context) error {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return errClosed
		}
		if q.wake == nil {
			q.wake = make(chan struct{})
		}
		ch := q.wake
		at, ok := q.nextDueLocked()
		q.mu.Unlock()
		var timer *time.Timer
		var tc <-chan time.Time
		if ok {
			d := time.Duration(at - q.now().UnixNano())
			if d <= 0 {
				return nil
			}
			timer = time.NewTimer(d)
			tc = timer.C
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return ctx.Err()
		case <-ch:
		case <-tc:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// Record stores the results of a Delivery and releases its lease. Each
// recipient with a result becomes delivered, failed (a bounce follows) or
// pending with its next attempt set; a temporary failure past
// Options.Lifetime becomes permanent. Recipients without a result go back
// untouched. The results are durable when Record returns nil; a delivered
// recipient is never handed out again in any case, so an error only means
// that a crash before the next flush could repeat it.
func (q *Queue) Record(ctx context.Context, d *Delivery, results []Result) error {
	now := q.now()
	q.mu.Lock()
	m := d.m
	if m.dead || q.msgs.get(m.id) != m {
		q.mu.Unlock()
		return nil // removed while it was out: nothing to record
	}
	byAddr := make(map[string]*Result, len(results))
	for i := range results {
		byAddr[results[i].Recipient] = &results[i]
	}
	ups := make([]rcptUpdate, 0, len(results))
	logs := make([]deliveryLog, 0, len(results))
	alive := map[string]bool{}
	scheduled := map[string]bool{} // a destination failed an attempt no flush forced
	for _, i := range d.idx {
		r := &m.rcpts[i]
		if r.lease == d.lease {
			r.lease, r.leaseUntil = 0, time.Time{}
		}
		res := byAddr[r.addr]
		if res == nil || r.state != Pending {
			continue
		}
		dest := cmp.Or(res.Destination, d.Destination)
		st := res.Status
		if len(st.Text) > mail.MaxStatusText {
			st.Text = st.Text[:mail.MaxStatusText]
		}
		a := attempt{at: now, route: attemptRoute(res.Route, res.TLSPolicy),
			host: sanitizeField(res.Host, maxAttemptField), status: st}
		u := r.update(i)
		u.attempts++
		u.attempt = &a
		u.dest = dest
		switch st.Class {
		case mail.Accept:
			u.state, u.next = Delivered, time.Time{}
		case mail.Permanent:
			u.state, u.next, u.final = Failed, time.Time{}, st
			u.notified = q.noticeSettled(m, r.addr, st)
		default:
			if now.Sub(m.received) >= q.opt.Lifetime {
				u.state, u.next, u.final = Failed, time.Time{}, statusExpired
				u.notified = q.noticeSettled(m, r.addr, statusExpired)
			} else {
				scheduled[dest] = scheduled[dest] || r.flushedFrom == 0
				u.next = q.retryAfterLocked(r, u.attempts, now)
			}
		}
		r.flushedFrom = 0
		alive[dest] = alive[dest] || st.Class != mail.Temporary
		r.apply(&u, q.opt.MaxHistory)
		ups = append(ups, u)
		logs = append(logs, deliveryLog{rcpt: r.addr, route: sanitizeField(res.Route, maxAttemptField), host: a.host,
			tlsPolicy: res.TLSPolicy, status: st, state: u.state})
	}
	// Logged once the lock is released: a log write is a system call,
	// and every commit and claim waits for q.mu.
	defer q.logDeliveries(m.id, now.Sub(m.received), logs)
	for dest, ok := range alive {
		if ok {
			q.destSuccessLocked(dest, now)
		} else if scheduled[dest] {
			// Only failures of attempts the schedule made back the
			// destination off; a flush's forced attempt leaves it be.
			q.destFailureLocked(dest, now)
		}
	}
	if len(ups) == 0 {
		q.scheduleLocked(m, now)
		q.mu.Unlock()
		return nil
	}
	b, err := q.appendStateLocked(m, recUpdate, encodeUpdate(make([]byte, 0, updateSizeHint(m.id, ups)), m.id, ups))
	if err != nil {
		q.scheduleLocked(m, now)
		q.mu.Unlock()
		return &Error{Op: "record", Err: err}
	}
	q.joinLocked(b)
	notice := q.noticeDueLocked(m, now)
	if m.done() {
		q.dropLocked(m, b)
	} else {
		q.scheduleLocked(m, now)
	}
	q.mu.Unlock()
	if err := b.waitJoined(ctx.Done()); err != nil {
		return err
	}
	if notice {
		q.sendNotices(ctx, m)
	}
	return nil
}

// retryAfterLocked schedules r's next attempt after a temporary failure,
// its attempts-th. An attempt a flush pulled forward does not punish the
// destination: it keeps the schedule the flush replaced, and the backoff
// counts only the scheduled attempts, so one round of failures counts once
// however often an operator flushes.
func (q *Queue) retryAfterLocked(r *rcpt, attempts int, now time.Time) time.Time {
	if r.flushedFrom != 0 {
		r.forced++
		return time.Unix(0, r.flushedFrom)
	}
	return now.Add(q.opt.Retry.Delay(attempts-int(r.forced), q.opt.Rand.Float64()))
}

// deliveryLog is one recipient's "queue: delivery" log line, kept until
// Record has released the queue's lock.
type deliveryLog struct {
	rcpt, route, host string
	tlsPolicy         string
	status            mail.Status
	state             State
}

func (q *Queue) logDeliveries(id string, delay time.Duration, logs []deliveryLog) {
	for _, l := range logs {
		attrs := []slog.Attr{slog.String("id", id),
			slog.String("rcpt", l.rcpt), slog.String("route", l.route), slog.String("host", l.host),
			slog.String("status", l.status.SMTPText()), slog.String("result", l.status.Class.DeliveryResult()),
			slog.String("code", l.status.EnhancedCode()), slog.String("state", l.state.String()),
			slog.Duration("delay", delay.Round(time.Millisecond))}
		if l.tlsPolicy != "" {
			attrs = append(attrs, slog.String("tls_policy", l.tlsPolicy))
		}
		q.log.LogAttrs(context.Background(), slog.LevelInfo, "queue: delivery", attrs...)
	}
}

// statusExpired is the final status of a recipient still failing
// temporarily when the message outlives Options.Lifetime (RFC 3463 5.4.7:
// delivery time expired).
var statusExpired = mail.Status{Class: mail.Permanent, Code: "5.4.7",
	Text: "I'm not going to try again; this message has been in the queue too long"}
