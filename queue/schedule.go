package queue

import "time"

// schedEntry says message m may have work due at time at (Unix ns). Entries
// are never updated in place: rescheduling bumps m.gen and pushes a new
// entry, and entries whose gen is stale are skipped when they surface.
type schedEntry struct {
	at  int64
	m   *message
	gen uint64
}

// schedHeap is a min-heap of entries by time, kept in fixed-size blocks:
// it grows a block at a time and never copies what it holds. (A slice that
// doubled would copy the whole schedule under the queue's lock, stalling
// every commit for milliseconds once hundreds of thousands of messages
// wait; BenchmarkScheduleGrowth.)
type schedHeap struct {
	blocks [][]schedEntry // each schedBlock long
	n      int
}

// schedBlock is the number of entries in one block of the schedule.
const schedBlock = 4096

func (h *schedHeap) len() int { return h.n }

func (h *schedHeap) at(i int) *schedEntry { return &h.blocks[i/schedBlock][i%schedBlock] }

// peek returns the earliest entry; the heap must not be empty.
func (h *schedHeap) peek() *schedEntry { return h.at(0) }

func (h *schedHeap) less(i, j int) bool { return h.at(i).at < h.at(j).at }

func (h *schedHeap) swap(i, j int) {
	a, b := h.at(i), h.at(j)
	*a, *b = *b, *a
}

func (h *schedHeap) push(e schedEntry) {
	if h.n == len(h.blocks)*schedBlock {
		h.blocks = append(h.blocks, make([]schedEntry, schedBlock))
	}
	*h.at(h.n) = e
	h.n++
	h.up(h.n - 1)
}

// pop removes and returns the earliest entry; the heap must not be empty.
func (h *schedHeap) pop() schedEntry {
	top := *h.at(0)
	h.n--
	last := h.at(h.n)
	*h.at(0) = *last
	*last = schedEntry{} // no longer keeps its message alive
	if h.n > 0 {
		h.down(0)
	}
	h.shrink()
	return top
}

// shrink frees blocks no entry uses, keeping one spare so that a heap
// that hovers at a block's edge does not allocate on every push.
func (h *schedHeap) shrink() {
	for k := len(h.blocks); (k-2)*schedBlock >= h.n && k > 1; k-- {
		h.blocks[k-1] = nil
		h.blocks = h.blocks[:k-1]
	}
}

func (h *schedHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

func (h *schedHeap) down(i int) {
	for {
		j := 2*i + 1
		if j >= h.n {
			return
		}
		if r := j + 1; r < h.n && h.less(r, j) {
			j = r
		}
		if !h.less(j, i) {
			return
		}
		h.swap(i, j)
		i = j
	}
}

// filter keeps the entries for which keep is true and restores the heap.
func (h *schedHeap) filter(keep func(*schedEntry) bool) {
	k := 0
	for i := 0; i < h.n; i++ {
		if e := h.at(i); keep(e) {
			*h.at(k) = *e
			k++
		}
	}
	for i := k; i < h.n; i++ {
		*h.at(i) = schedEntry{}
	}
	h.n = k
	h.shrink()
	for i := h.n/2 - 1; i >= 0; i-- {
		h.down(i)
	}
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
	q.sched.push(schedEntry{at: at.UnixNano(), m: m, gen: m.gen})
	if e := q.sched.peek(); !at.After(now) || e.m == m && e.gen == m.gen {
		q.notifyLocked() // due now, or a new earliest time: Wait must re-arm
	}
	if q.sched.len() > 2*len(q.msgs)+1024 {
		q.pruneScheduleLocked()
	}
}

// pruneScheduleLocked drops stale entries so the heap stays proportional
// to the queue.
func (q *Queue) pruneScheduleLocked() {
	q.sched.filter(func(e *schedEntry) bool { return !e.stale() })
}

// nextDueLocked returns the time of the earliest live schedule entry.
func (q *Queue) nextDueLocked() (int64, bool) {
	for q.sched.len() > 0 {
		if e := q.sched.peek(); !e.stale() {
			return e.at, true
		}
		q.sched.pop()
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
