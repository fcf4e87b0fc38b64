package workers

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

func TestRunsEverything(t *testing.T) {
	var p Pool
	var n atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 10000; i++ {
		wg.Add(1)
		p.Go(func() {
			n.Add(1)
			wg.Done()
		})
	}
	testpeer.Wait(t, "10000 functions to run", time.Minute, &wg)
	if got := n.Load(); got != 10000 {
		t.Fatalf("ran %d of 10000", got)
	}
	// A worker parks only after its function returned (and called
	// wg.Done), so the last ones may not be idle yet: wait for one.
	testpeer.Poll(5*time.Second, time.Millisecond, func() bool { return p.Idle() >= 1 })
	if idle := p.Idle(); idle < 1 || idle > DefaultMaxIdle {
		t.Fatalf("idle workers = %d, want 1..%d", idle, DefaultMaxIdle)
	}
}

func TestReusesWorkers(t *testing.T) {
	var p Pool
	done := make(chan struct{})
	for i := 0; i < 100; i++ {
		p.Go(func() { done <- struct{}{} })
		testpeer.Recv(t, "the function to run", 10*time.Second, done)
		waitIdle(t, &p, 1)
	}
	// One call at a time: one worker did all the work. (Counted by the
	// pool: the process's goroutine count also moves with the workers
	// of earlier tests still exiting.)
	if got := p.started.Load(); got != 1 {
		t.Fatalf("%d goroutines started for 100 calls one at a time, want 1", got)
	}
}

func TestNeverBlocks(t *testing.T) {
	var p Pool
	runTogether(t, &p, 300)         // all 300 run at once, beyond MaxIdle
	waitIdle(t, &p, DefaultMaxIdle) // the rest exit instead of parking
}

func TestIdleWorkersExit(t *testing.T) {
	p := Pool{IdleTimeout: 20 * time.Millisecond, MaxIdle: 8}
	before := runtime.NumGoroutine()
	runTogether(t, &p, 8)
	if !testpeer.Poll(5*time.Second, 5*time.Millisecond, func() bool { return runtime.NumGoroutine() <= before && p.Idle() == 0 }) {
		t.Fatalf("%d goroutines and %d idle workers left after the idle timeout", runtime.NumGoroutine()-before, p.Idle())
	}
}

func TestClose(t *testing.T) {
	var p Pool
	before := runtime.NumGoroutine()
	runTogether(t, &p, 10)
	waitIdle(t, &p, 10)
	busy := make(chan struct{})
	p.Go(func() { <-busy }) // on a worker while Close runs
	p.Close()
	close(busy)
	done := make(chan struct{})
	p.Go(func() { close(done) }) // still works after Close
	testpeer.Recv(t, "a function run after Close", 10*time.Second, done)
	if !testpeer.Poll(5*time.Second, time.Millisecond, func() bool { return runtime.NumGoroutine() <= before }) {
		t.Fatalf("%d goroutines left after Close", runtime.NumGoroutine()-before)
	}
	if p.Idle() != 0 {
		t.Fatalf("idle = %d after Close", p.Idle())
	}
}

// TestNoIdle: with MaxIdle < 0 a worker exits once its function returns,
// so the goroutine count comes back down and nothing is ever idle; a worker
// that parked instead would stay, until its idle timer (DefaultIdleTimeout, 10 s) fired,
// and fail the wait.
func TestNoIdle(t *testing.T) {
	before := runtime.NumGoroutine()
	p := Pool{MaxIdle: -1}
	done := make(chan struct{})
	p.Go(func() { close(done) })
	testpeer.Recv(t, "the function to run", 10*time.Second, done)
	testpeer.WaitFor(t, "the worker to exit", 5*time.Second, func() bool { return runtime.NumGoroutine() <= before })
	if p.Idle() != 0 {
		t.Fatalf("idle = %d with MaxIdle < 0", p.Idle())
	}
}

// TestRaceWithTimeout hands work to workers whose idle timer fires at the
// same moment: every function still runs exactly once.
func TestRaceWithTimeout(t *testing.T) {
	p := Pool{IdleTimeout: time.Microsecond, MaxIdle: 4}
	var n atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 20000; i++ {
		wg.Add(1)
		p.Go(func() { n.Add(1); wg.Done() })
		if i%100 == 0 {
			time.Sleep(time.Microsecond)
		}
	}
	testpeer.Wait(t, "20000 functions to run", time.Minute, &wg)
	if got := n.Load(); got != 20000 {
		t.Fatalf("ran %d of 20000", got)
	}
}

// runTogether runs n functions on p that each wait until all n have
// started, so that n workers exist at once, then lets them finish.
func runTogether(t *testing.T, p *Pool, n int) {
	t.Helper()
	var started sync.WaitGroup
	release := make(chan struct{})
	for range n {
		started.Add(1)
		p.Go(func() { started.Done(); <-release })
	}
	testpeer.Wait(t, fmt.Sprintf("%d workers at once", n), time.Minute, &started)
	close(release)
}

func waitIdle(t *testing.T, p *Pool, n int) {
	t.Helper()
	if !testpeer.Poll(5*time.Second, time.Millisecond, func() bool { return p.Idle() == n }) {
		t.Fatalf("idle workers = %d, want %d", p.Idle(), n)
	}
}

func BenchmarkGo(b *testing.B) {
	var p Pool
	var wg sync.WaitGroup
	for b.Loop() {
		wg.Add(1)
		p.Go(deep(&wg))
	}
	wg.Wait()
}

func BenchmarkGoStatement(b *testing.B) {
	var wg sync.WaitGroup
	for b.Loop() {
		wg.Add(1)
		go deep(&wg)()
	}
	wg.Wait()
}

// deep returns work that needs a grown stack, like a server session.
func deep(wg *sync.WaitGroup) func() {
	return func() {
		var buf [16 << 10]byte
		use(buf[:])
		wg.Done()
	}
}

//go:noinline
func use(b []byte) { b[len(b)-1] = 1 }
