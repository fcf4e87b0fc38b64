package queue

import (
	"cmp"
	"slices"
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
		q.leaseSeq++
		d := &Delivery{ID: m.id, Sender: m.sender, Size: m.body.size,
			Received: m.received, LeaseUntil: now.Add(q.opt.LeaseTime),
			q: q, m: m, idx: idx, lease: q.leaseSeq}
		for _, i := range idx {
			r := &m.rcpts[i]
			r.lease, r.leaseUntil = d.lease, d.LeaseUntil
			d.Recipients = append(d.Recipients, r.addr)
			d.Attempts = max(d.Attempts, int(r.attempts))
		}
		out = append(out, d)
	}
	return out
}
