package testpeer

import (
	"runtime"
	"testing"
	"time"
)

// Poll calls cond every interval until it holds or timeout has passed, and
// reports whether it held. It waits for an outcome (a file appearing, a
// queue emptying); it never stands in for synchronisation.
func Poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
	return true
}

// WaitFor fails t when cond does not hold within timeout; what names the
// outcome in the failure.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	if !Poll(timeout, 20*time.Millisecond, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// Recv returns the next value ch delivers, failing t when none comes
// within timeout, so that code which never answers fails the test in
// bounded time instead of hanging it; what names the event in the failure.
func Recv[T any](t testing.TB, what string, timeout time.Duration, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(timeout):
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
		panic("unreachable")
	}
}

// Wait returns once wg.Wait does (wg: a sync.WaitGroup, an exec.Cmd's
// process, anything whose Wait blocks until work ends), failing t when it
// has not within timeout; what names the work in the failure. The
// goroutine that waits outlives a failed test, which is about to end.
func Wait(t testing.TB, what string, timeout time.Duration, wg interface{ Wait() }) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		wg.Wait()
	}()
	Recv(t, what, timeout, done)
}

// CheckGoroutines records how many goroutines run now and, when the test
// ends, waits up to settle for the count to come back down, failing the
// test with every goroutine's stack if it does not: a goroutine started
// during the test outlived it.
func CheckGoroutines(t testing.TB, settle time.Duration) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		if Poll(settle, 10*time.Millisecond, func() bool { return runtime.NumGoroutine() <= before }) {
			return
		}
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("goroutines leaked: %d before the test, %d after\n%s", before, runtime.NumGoroutine(), buf)
	})
}
