// Package workers runs connection handlers on reused goroutines.
//
// A server that takes thousands of connections a second and starts each on
// a fresh goroutine pays, every time, for the goroutine's stack to grow by
// copying to the depth its session needs (a tenth of the QMQP server's CPU
// at 9,000 connections a second, measured with pprof in bench/). A worker
// that has served one connection keeps its grown stack for the next. Idle
// workers are kept up to Pool.MaxIdle and exit after Pool.IdleTimeout, so a
// burst leaves nothing behind; a call never waits for a worker: with none
// idle, it starts a new one.
package workers

import (
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for a zero Pool.
const (
	DefaultMaxIdle     = 128
	DefaultIdleTimeout = 10 * time.Second
)

// Pool starts functions on idle workers or new goroutines. The zero value
// is ready to use; a Pool must not be copied after first use.
type Pool struct {
	// MaxIdle is the number of idle workers kept for later calls (0:
	// DefaultMaxIdle; negative: none, every call starts a goroutine).
	MaxIdle int
	// IdleTimeout is how long an idle worker waits for work before it
	// exits (0: DefaultIdleTimeout).
	IdleTimeout time.Duration

	mu      sync.Mutex
	idle    []*worker // most recently parked last: the warmest stacks are reused first
	closed  bool
	started atomic.Int64 // goroutines started, for tests
}

type worker struct {
	work chan func()
}

// Go runs f on an idle worker, or on a new goroutine if none is idle. It
// never blocks on f. A panic in f is not recovered, as with a go statement.
func (p *Pool) Go(f func()) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.work <- f // buffered: never blocks
		return
	}
	p.mu.Unlock()
	p.started.Add(1)
	go p.run(&worker{work: make(chan func(), 1)}, f)
}

// Close makes idle workers exit now and busy ones once their work is done,
// so that a server that has shut down leaves no goroutine behind. Go still
// works after Close, each call on a goroutine of its own.
func (p *Pool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, w := range idle {
		w.work <- nil
	}
}

// Idle returns the number of idle workers.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

func (p *Pool) maxIdle() int {
	if p.MaxIdle == 0 {
		return DefaultMaxIdle
	}
	return max(p.MaxIdle, 0)
}

func (p *Pool) idleTimeout() time.Duration {
	if p.IdleTimeout <= 0 {
		return DefaultIdleTimeout
	}
	return p.IdleTimeout
}

func (p *Pool) run(w *worker, f func()) {
	var t *time.Timer
	for {
		f()
		f = nil // let the finished work's closure go while idle
		if !p.park(w) {
			return
		}
		if t == nil {
			t = time.NewTimer(p.idleTimeout())
		} else {
			t.Reset(p.idleTimeout())
		}
		select {
		case f = <-w.work:
			t.Stop()
		case <-t.C:
			if p.unpark(w) {
				return
			}
			// Go or Close took this worker just as the timer fired: its
			// work is on the way.
			f = <-w.work
		}
		if f == nil {
			return // Close
		}
	}
}

// park puts w on the idle list, unless it is full.
func (p *Pool) park(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle) >= p.maxIdle() {
		return false
	}
	p.idle = append(p.idle, w)
	return true
}

// unpark takes w off the idle list; false if Go already took it.
func (p *Pool) unpark(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.idle {
		if x == w {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			p.idle = p.idle[:len(p.idle):cap(p.idle)]
			return true
		}
	}
	return false
}
