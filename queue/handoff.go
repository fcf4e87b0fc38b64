package queue

import (
	"cmp"
	"context"
	"slices"
	"time"
)

// ClaimAll hands out up to n Deliveries of the pending recipients nobody
// holds a lease on, whatever their retry schedule or their destination's
// backoff says, and with held also those of held messages: the work of a
// hand-off to a peer hub. Each Delivery holds the recipients of one
// message (Destination is empty) and is leased as Claim's are; Record
// with only the recipients the peer accepted removes those and gives the
// others back untouched (no attempt counted). Deliveries come oldest
// message first.
func (q *Queue) ClaimAll(n int, held bool) []*Delivery {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	var msgs []*message
	for _, m := range q.msgs {
		if !m.dead && (held || !m.held) {
			msgs = append(msgs, m)
		}
	}
	slices.SortFunc(msgs, func(a, b *message) int {
		return cmp.Or(a.received.Compare(b.received), cmp.Compare(a.id, b.id))
	})
	var out []*Delivery
	for _, m := range msgs {
		if len(out) >= n {
			break
		}
		var idx []int
		for i := range m.rcpts {
			if r := &m.rcpts[i]; r.state == Pending && !r.leased(now) {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 {
			continue
		}
		out = append(out, q.leaseLocked(m, "", idx, now))
	}
	return out
}

// DelayNotified reports whether the message's sender was already told
// that it is delayed: a hand-off passes that on, so the peer does not
// send a second delay notice.
func (d *Delivery) DelayNotified() bool {
	d.q.mu.Lock()
	defer d.q.mu.Unlock()
	return d.m.delayNotified
}

// Continuation is what a hub that handed a message over knew of it: when
// it first arrived, the most attempts made for any of its recipients,
// and whether the sender already had a delay notice.
type Continuation struct {
	Arrival       time.Time
	Attempts      int
	DelayNotified bool
}

// MaxContinuedAttempts bounds the attempts a Continuation may carry, so a
// bad header cannot push the retry backoff past its cap by overflow.
const MaxContinuedAttempts = 1 << 16

// Continue makes the message id, just committed from a peer's hand-off,
// continue where it was on the peer: its arrival time goes back to
// c.Arrival (never forward), each
// pending recipient counts c.Attempts attempts, and a delay notice
// already sent is not sent again. Lifetime and the delay notice then
// count from the original arrival. It writes a snapshot of the message
// and returns once that is durable; a crash before that leaves the
// message queued as a fresh arrival (a later bounce or notice, never a
// loss).
func (q *Queue) Continue(ctx context.Context, id string, c Continuation) error {
	q.mu.Lock()
	m := q.msgs.get(id)
	if m == nil || m.dead {
		q.mu.Unlock()
		return notFound(id)
	}
	if !c.Arrival.IsZero() && c.Arrival.Before(m.received) {
		m.received = c.Arrival
	}
	n := int32(min(max(c.Attempts, 0), MaxContinuedAttempts))
	for i := range m.rcpts {
		if r := &m.rcpts[i]; r.state == Pending && r.attempts < n {
			r.attempts = n
		}
	}
	if c.DelayNotified {
		m.delayNotified = true
	}
	q.mu.Unlock()
	if err := q.snapshot(ctx, m); err != nil {
		return &Error{Op: "continue", Err: err}
	}
	return nil
}
