package testpeer

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	var n atomic.Int32
	if !Poll(10*time.Second, time.Millisecond, func() bool { return n.Add(1) == 3 }) {
		t.Fatal("Poll gave up on a condition that came true")
	}
	if n.Load() != 3 {
		t.Fatalf("cond called %d times, want 3", n.Load())
	}
	if Poll(0, time.Millisecond, func() bool { return false }) {
		t.Fatal("Poll reported a condition that never held")
	}
}

// TestRecv: a value that comes is returned; none coming fails the test.
func TestRecv(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	if v := Recv(t, "a value", 10*time.Second, ch); v != 7 {
		t.Fatalf("Recv = %d, want 7", v)
	}
	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Recv(rec, "nothing", time.Millisecond, make(chan int))
	}()
	Recv(t, "Recv to give up", 10*time.Second, done)
	if !rec.failed {
		t.Fatal("Recv did not fail when nothing came")
	}
}

// TestWait: work that ends returns; work that does not fails the test.
func TestWait(t *testing.T) {
	var wg sync.WaitGroup
	wg.Go(func() {})
	Wait(t, "work that ends", 10*time.Second, &wg)

	// Wait's own goroutine outlives the failed wait until the work ends:
	// end it, and see it gone, before the next test counts goroutines.
	before := runtime.NumGoroutine()
	var stuck sync.WaitGroup
	stuck.Add(1)
	defer WaitFor(t, "Wait's goroutine to end", 10*time.Second, func() bool { return runtime.NumGoroutine() <= before })
	defer stuck.Done()
	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Wait(rec, "work that never ends", time.Millisecond, &stuck)
	}()
	Recv(t, "Wait to give up", 10*time.Second, done)
	if !rec.failed {
		t.Fatal("Wait did not fail when the work never ended")
	}
}

// TestCheckGoroutines: a goroutine that outlives its test is reported; one
// that ends in time is not.
func TestCheckGoroutines(t *testing.T) {
	// Goroutines of earlier tests that are still ending would hide a leak
	// from the count: wait until the count holds still.
	last := -1
	Poll(10*time.Second, 50*time.Millisecond, func() bool {
		n := runtime.NumGoroutine()
		steady := n == last
		last = n
		return steady
	})
	stop := make(chan struct{})
	rec := &recorder{TB: t}
	func() {
		defer rec.runCleanups()
		CheckGoroutines(rec, 50*time.Millisecond)
		for range 3 {
			go func() { <-stop }()
		}
	}()
	close(stop)
	if !rec.failed {
		t.Fatal("a leaked goroutine was not reported")
	}

	rec = &recorder{TB: t}
	func() {
		defer rec.runCleanups()
		CheckGoroutines(rec, 10*time.Second)
		done := make(chan struct{})
		go func() { close(done) }()
		Recv(t, "a goroutine's end", 10*time.Second, done)
	}()
	if rec.failed {
		t.Fatal("a goroutine that ended was reported")
	}
}

// recorder is a testing.TB whose failures and cleanups the test controls.
type recorder struct {
	testing.TB
	failed   bool
	cleanups []func()
}

func (r *recorder) Helper()                           {}
func (r *recorder) Cleanup(f func())                  { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(format string, args ...any) { r.failed = true }
func (r *recorder) Fatalf(format string, args ...any) { r.failed = true; runtime.Goexit() }
func (r *recorder) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}
