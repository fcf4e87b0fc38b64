package queue

import (
	"container/heap"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestSchedHeap checks the blocked heap against a sorted list, across
// several blocks, with pushes and pops interleaved, and that it frees the
// blocks it no longer needs.
func TestSchedHeap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h schedHeap
	var ref []int64
	m := &message{}
	check := func() {
		t.Helper()
		if h.len() != len(ref) {
			t.Fatalf("len %d, want %d", h.len(), len(ref))
		}
		if want := (len(ref)+schedBlock-1)/schedBlock + 1; len(h.blocks) > want {
			t.Fatalf("%d blocks for %d entries, want at most %d", len(h.blocks), len(ref), want)
		}
	}
	popMin := func() {
		t.Helper()
		e := h.pop()
		slices.Sort(ref)
		if e.at != ref[0] || e.m != m {
			t.Fatalf("popped %d, want %d", e.at, ref[0])
		}
		ref = ref[1:]
	}
	for round := 0; round < 3; round++ {
		for i := 0; i < 3*schedBlock+17; i++ {
			at := rng.Int64N(1 << 20)
			h.push(schedEntry{at: at, m: m})
			ref = append(ref, at)
			if rng.IntN(4) == 0 {
				popMin()
			}
		}
		check()
		for len(ref) > schedBlock/2 {
			popMin()
		}
		check()
	}
	// A popped entry no longer keeps its message alive.
	for i := h.len(); i < len(h.blocks)*schedBlock; i++ {
		if h.at(i).m != nil {
			t.Fatalf("slot %d past the end still points at a message", i)
		}
	}
	// filter keeps the heap order.
	h.filter(func(e *schedEntry) bool { return e.at%2 == 0 })
	ref = slices.DeleteFunc(ref, func(at int64) bool { return at%2 != 0 })
	check()
	for len(ref) > 0 {
		popMin()
	}
	check()
	if len(h.blocks) > 1 {
		t.Errorf("an empty heap keeps %d blocks", len(h.blocks))
	}
}

// BenchmarkScheduleGrowth pushes a growing schedule of messages due in
// arrival order, as commits do, and reports the slowest single push: the
// stall a commit sees under the queue's lock. "slice" is a plain slice
// under container/heap, which copies itself whenever it doubles.
func BenchmarkScheduleGrowth(b *testing.B) {
	const n = 1 << 20
	m := &message{}
	worstPush := func(b *testing.B, push func(schedEntry)) {
		worst := time.Duration(0)
		for i := range n {
			t0 := time.Now()
			push(schedEntry{at: int64(i), m: m})
			worst = max(worst, time.Since(t0))
		}
		b.ReportMetric(float64(worst.Microseconds()), "worst-push-us")
	}
	b.Run("blocks", func(b *testing.B) {
		for b.Loop() {
			var h schedHeap
			worstPush(b, h.push)
		}
	})
	b.Run("slice", func(b *testing.B) {
		for b.Loop() {
			var h sliceHeap
			worstPush(b, func(e schedEntry) { heap.Push(&h, e) })
		}
	})
}

type sliceHeap []schedEntry

func (h sliceHeap) Len() int           { return len(h) }
func (h sliceHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h sliceHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *sliceHeap) Push(x any)        { *h = append(*h, x.(schedEntry)) }
func (h *sliceHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// BenchmarkIndexGrowth fills the message index as commits do and reports
// the time spent in the inserts that grew it (over 20µs), against the same
// with the IDs as string keys.
func BenchmarkIndexGrowth(b *testing.B) {
	const n = 500_000
	var g idGen
	ids := make([]string, n)
	msgs := make([]*message, n)
	for i := range ids {
		ids[i] = g.next(time.UnixMilli(1_700_000_000_000))
		msgs[i] = &message{id: ids[i]}
	}
	measure := func(b *testing.B, insert func(i int)) {
		var total, growth time.Duration
		for i := range n {
			t0 := time.Now()
			insert(i)
			d := time.Since(t0)
			total += d
			if d > 20*time.Microsecond {
				growth += d
			}
		}
		b.ReportMetric(float64(total.Nanoseconds())/n, "ns/insert")
		b.ReportMetric(float64(growth.Milliseconds()), "growth-ms")
	}
	b.Run("msgKey", func(b *testing.B) {
		for b.Loop() {
			x := make(index)
			measure(b, func(i int) { x.put(msgs[i]) })
		}
	})
	b.Run("string", func(b *testing.B) {
		for b.Loop() {
			x := make(map[string]*message)
			measure(b, func(i int) { x[ids[i]] = msgs[i] })
		}
	})
}
