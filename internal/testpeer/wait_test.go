package testpeer

import (
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

// TestCheckGoroutines: a goroutine that outlives its test is reported; one
// that ends in time is not.
func TestCheckGoroutines(t *testing.T) {
	stop := make(chan struct{})
	rec := &recorder{TB: t}
	func() {
		defer rec.runCleanups()
		CheckGoroutines(rec, 50*time.Millisecond)
		go func() { <-stop }()
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
		<-done
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
func (r *recorder) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}
