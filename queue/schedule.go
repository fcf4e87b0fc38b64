package queue

import (
	"container/heap"
	"time"
)

// schedEntry says message m may have work due at time at (Unix ns). Entries
// are never updated in place: rescheduling bumps m.gen and pushes a new
// entry, and entries whose gen is stale are skipped when they surface.
type schedEntry struct {
	at  int64
	m   *message
	gen uint64
}

type schedHeap []schedEntry

func (h schedHeap) Len() int           { return len(h) }
func (h schedHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h schedHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *schedHeap) Push(x any)        { *h = append(*h, x.(schedEntry)) }
func (h *schedHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = schedEntry{}
	*h = old[:len(old)-1]
	return e
}

func (e *schedEntry) stale() bool { return e.gen != e.m.gen || e.m.dead || e.m.held }

// destState is the backoff of one destination that failed temporarily.
// Destinations that work have no state at all.
type destState struct {
	fails   int
	next    time.Time
	blocked map[*message]struct{} // messages waiting for this destination
}

// dueLocked returns when m next has something to do: the earliest of its
// pending recipients' next attempts (held back to the destination's next
// try), or of its leases' expiry. A message held back by a destination is
// noted there, so that the destination's recovery can free it at once.
func (q *Queue) dueLocked(m *message, now time.Time) (time.Time, bool) {
	var best time.Time
	found := false
	for i := range m.rcpts {
		r := &m.rcpts[i]
		if r.state != Pending {
			continue
		}
		var t time.Time
		if r.leased(now) {
			t = r.leaseUntil
		} else {
			t = r.next
			if ds := q.dests[r.dest]; ds != nil && ds.next.After(t) {
				t = ds.next
				ds.blocked[m] = struct{}{}
			}
		}
		if !found || t.Before(best) {
			best, found = t, true
		}
	}
	return best, found
}

// scheduleLocked (re)places m in the schedule.
func (q *Queue) scheduleLocked(m *message, now time.Time) {
	m.gen++
	if m.held || m.dead {
		return
	}
	at, ok := q.dueLocked(m, now)
	if !ok {
		return
	}
	heap.Push(&q.sched, schedEntry{at: at.UnixNano(), m: m, gen: m.gen})
	if !at.After(now) || q.sched[0].m == m && q.sched[0].gen == m.gen {
		q.notifyLocked() // due now, or a new earliest time: Wait must re-arm
	}
	if len(q.sched) > 2*len(q.msgs)+1024 {
		q.pruneScheduleLocked()
	}
}

// pruneScheduleLocked drops stale entries so the heap stays proportional
// to the queue.
func (q *Queue) pruneScheduleLocked() {
	kept := q.sched[:0]
	for _, e := range q.sched {
		if !e.stale() {
			kept = append(kept, e)
		}
	}
	clear(q.sched[len(kept):])
	q.sched = kept
	heap.Init(&q.sched)
}

// nextDueLocked returns the time of the earliest live schedule entry.
func (q *Queue) nextDueLocked() (int64, bool) {
	for len(q.sched) > 0 {
		if e := &q.sched[0]; !e.stale() {
			return e.at, true
		}
		heap.Pop(&q.sched)
	}
	return 0, false
}

// destFailureLocked backs a destination off after a temporary failure.
func (q *Queue) destFailureLocked(dest string, now time.Time) {
	ds := q.dests[dest]
	if ds == nil {
		ds = &destState{blocked: make(map[*message]struct{})}
		q.dests[dest] = ds
	}
	ds.fails++
	ds.next = now.Add(q.opt.DestinationBackoff.Delay(ds.fails, q.opt.Rand.Float64()))
}

// destSuccessLocked forgets a destination's backoff once it answers, and
// lets the messages held back for it go at once.
func (q *Queue) destSuccessLocked(dest string, now time.Time) {
	ds := q.dests[dest]
	if ds == nil {
		return
	}
	delete(q.dests, dest)
	for m := range ds.blocked {
		if m.held || m.dead {
			continue
		}
		q.scheduleLocked(m, now)
	}
}

// unblockLocked forgets a message that is gone from the destinations that
// held it back.
func (q *Queue) unblockLocked(m *message) {
	for i := range m.rcpts {
		if ds := q.dests[m.rcpts[i].dest]; ds != nil {
			delete(ds.blocked, m)
		}
	}
}
