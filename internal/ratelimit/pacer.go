package ratelimit

import (
	"sync"
	"time"
)

// MaxSlowdown bounds how far Throttled stretches a Pacer's interval: at most
// this many times the configured spacing, so a route that was told to slow
// down still moves.
const MaxSlowdown = 64

// recovery is how much of the slowdown one successful delivery takes back:
// after a throttle doubles the spacing, about fourteen deliveries at the
// stretched pace bring it back to half way.
const recovery = 0.95

// A Pacer spaces events to a Rate: the first event may start at once, every
// later one no sooner than one interval after the one before (a generic cell
// rate algorithm with a burst of Burst). Throttled stretches the interval
// when a server says it is being sent too much; each Succeeded eases it
// back. The zero value is not usable; make one with NewPacer. It is safe for
// concurrent use.
type Pacer struct {
	rate  Rate
	burst int

	mu   sync.Mutex
	tat  time.Time // theoretical arrival time of the next event
	slow float64   // interval multiplier, 1 to MaxSlowdown
}

// NewPacer returns a pacer for r that lets burst events through at once
// after an idle spell (burst < 1 means 1). A caller that asks less often
// than once an interval (a delivery loop that wakes every few milliseconds
// at 10,000/m) needs a burst of at least 2 to keep up with the rate; the
// count over any window of length W stays within W/interval + burst.
func NewPacer(r Rate, burst int) *Pacer {
	return &Pacer{rate: r, burst: max(burst, 1), slow: 1}
}

// Rate is the configured rate.
func (p *Pacer) Rate() Rate { return p.rate }

func (p *Pacer) interval() time.Duration {
	return time.Duration(float64(p.rate.Interval()) * p.slow)
}

// Take reports whether an event may start at now, and consumes the slot if
// so; otherwise it returns how long until one is free. Events refused here
// are not counted: the caller keeps them (queued, in order) and asks again.
func (p *Pacer) Take(now time.Time) (ok bool, wait time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	iv := p.interval()
	tat := p.tat
	if tat.Before(now) {
		tat = now
	}
	// With a burst of b, an event may start while the backlog it would
	// join is at most b-1 intervals long.
	allowAt := tat.Add(-time.Duration(p.burst-1) * iv)
	if now.Before(allowAt) {
		return false, allowAt.Sub(now)
	}
	p.tat = tat.Add(iv)
	return true, 0
}

// Throttled records that the next hop refused or deferred an event because
// of its own rate limit: the spacing doubles, up to MaxSlowdown times the
// configured one, and the next event waits a full stretched interval.
func (p *Pacer) Throttled(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slow = min(p.slow*2, MaxSlowdown)
	// No burst right after a throttle: the next event waits a whole
	// stretched interval, however long the route was idle.
	if next := now.Add(time.Duration(p.burst) * p.interval()); p.tat.Before(next) {
		p.tat = next
	}
}

// Succeeded records a delivery the next hop took, easing a slowdown back
// towards the configured rate.
func (p *Pacer) Succeeded() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slow = max(p.slow*recovery, 1)
}

// Slowdown is the current interval multiplier (1 when not throttled).
func (p *Pacer) Slowdown() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.slow
}
