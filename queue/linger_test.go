package queue

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lingerFixture is a bare Queue (no committer running) with prev, a
// written batch whose callers were woken, and b, the batch being gathered.
func lingerFixture(woken, joined int) (*Queue, *batch, *batch) {
	q := &Queue{lingerPoke: make(chan struct{}, 1)}
	q.cond = sync.NewCond(&q.mu)
	prev := &batch{done: make(chan struct{}), poke: q.lingerPoke, waiters: woken}
	prev.returning.Store(int32(woken))
	close(prev.done)
	b := &batch{done: make(chan struct{}), poke: q.lingerPoke, waiters: joined}
	q.batches = []*batch{b}
	return q, prev, b
}

// lingerAsync runs q.linger(b, prev, expect) with a deadline far away and
// closes the returned channel when it returns.
func lingerAsync(q *Queue, b, prev *batch, expect int) <-chan struct{} {
	ret := make(chan struct{})
	go func() {
		q.mu.Lock()
		q.linger(b, prev, expect, time.Now().Add(time.Hour))
		q.mu.Unlock()
		close(ret)
	}()
	return ret
}

func TestLingerEndsWhenWokenCallersHaveRun(t *testing.T) {
	q, prev, b := lingerFixture(2, 1)
	ret := lingerAsync(q, b, prev, 3)
	// The two woken callers run and go elsewhere (back to the network):
	// nobody else is coming, so the batch must go now, not in an hour.
	for range 2 {
		if err := prev.waitJoined(nil); err != nil {
			t.Fatal(err)
		}
	}
	<-ret
	if b.waiters != 1 {
		t.Errorf("waiters %d", b.waiters)
	}
}

func TestLingerEndsWhenExpectedCallersJoin(t *testing.T) {
	q, prev, b := lingerFixture(5, 1) // the woken never run
	ret := lingerAsync(q, b, prev, 3)
	for range 2 {
		q.mu.Lock()
		q.joinLocked(b)
		q.mu.Unlock()
	}
	<-ret
	if b.waiters != 3 {
		t.Errorf("waiters %d", b.waiters)
	}
}

func TestLingerWaitsForWritersAtTheLock(t *testing.T) {
	q, prev, b := lingerFixture(0, 1) // everyone woken has run...
	q.committing.Store(1)             // ...and one is about to append
	var appended atomic.Bool
	ret := lingerAsync(q, b, prev, 2)
	go func() {
		q.mu.Lock()
		appended.Store(true)
		q.committing.Add(-1)
		q.joinLocked(b)
		q.mu.Unlock()
	}()
	<-ret
	if !appended.Load() || b.waiters != 2 {
		t.Errorf("batch taken before the writer at the lock appended (waiters %d)", b.waiters)
	}
}

func TestLingerEndsWhenAnotherBatchQueues(t *testing.T) {
	q, prev, b := lingerFixture(5, 1)
	ret := lingerAsync(q, b, prev, 6)
	q.mu.Lock()
	q.newBatchLocked(&segment{})
	q.mu.Unlock()
	<-ret
}

func TestLingerDeadline(t *testing.T) {
	q, prev, b := lingerFixture(5, 1) // callers that never come back
	q.mu.Lock()
	q.linger(b, prev, 6, time.Now().Add(5*time.Millisecond))
	q.mu.Unlock()
	if q.nLingers != 1 || q.lingerTime <= 0 {
		t.Errorf("lingers %d, time %v", q.nLingers, q.lingerTime)
	}
}

func TestLoneWriterIsNeverHeld(t *testing.T) {
	q := openT(t, t.TempDir(), Options{Logger: quietLogger()})
	for range 20 {
		putT(t, q, "a@example.org", []byte("x\n"), "b@example.com")
	}
	if m := q.Metrics(); m.Lingers != 0 {
		t.Errorf("a lone writer's batches were held %d times (%v)", m.Lingers, m.LingerTime)
	}
}

// TestBusyWritersShareFlushes runs writers in a closed loop, with the hold
// on and off, and checks that every commit is acknowledged and indexed. How
// many share a flush depends on the machine; it is measured by BenchmarkPut.
func TestBusyWritersShareFlushes(t *testing.T) {
	for _, linger := range []time.Duration{0, -1} {
		q := openT(t, t.TempDir(), Options{Logger: quietLogger(), Passive: true, CommitLinger: linger})
		const writers, each = 16, 25
		var wg sync.WaitGroup
		for range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if _, err := q.Put(context.Background(), envelope("a@example.org", "b@example.com"), bytes.NewReader([]byte("x\n"))); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		m := q.Metrics()
		if m.Messages != writers*each {
			t.Errorf("linger %v: %d messages indexed, want %d", linger, m.Messages, writers*each)
		}
		if cs := q.CommitStats(); cs.Flushes != m.Batches || cs.Records != m.Records || cs.Holds != m.Lingers || cs.HoldTime != m.LingerTime {
			t.Errorf("CommitStats %+v disagrees with Metrics %+v", cs, m)
		}
		if linger < 0 && m.Lingers != 0 {
			t.Errorf("CommitLinger < 0 but batches were held %d times", m.Lingers)
		}
		t.Logf("linger %v: %d messages in %d flushes, held %d times for %v", linger, m.Messages, m.Batches, m.Lingers, m.LingerTime)
	}
}
