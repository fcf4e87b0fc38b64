package ratelimit

import (
	"container/list"
	"sync"
	"time"
)

// DefaultMaxKeys bounds the keys a Limiter remembers when MaxKeys is 0.
// Each costs about a hundred bytes per rate.
const DefaultMaxKeys = 100_000

// A Limiter counts events per key against one or more rates (say 100/m,
// 1000/h and 5000/d for one client) with a sliding window: the estimate
// for a window is the current fixed window's count plus the previous one's,
// weighted by how much of it still overlaps. Allow refuses an event that
// would take any rate over its limit, and counts nothing then.
//
// Keys are kept in least-recently-used order up to MaxKeys; the oldest is
// forgotten first, and with it its counts. It is safe for concurrent use.
type Limiter struct {
	Rates   []Rate
	MaxKeys int // 0: DefaultMaxKeys

	mu   sync.Mutex
	keys map[string]*list.Element
	lru  list.List // of *entry, most recent at the front
}

type entry struct {
	key string
	win []window // one per rate
}

type window struct {
	start     time.Time
	cur, prev int64
}

// estimate returns the sliding count at now, rolling the window forward.
func (w *window) estimate(per time.Duration, now time.Time) float64 {
	if w.start.IsZero() || now.Sub(w.start) >= 2*per {
		*w = window{start: now.Truncate(per)}
	} else if now.Sub(w.start) >= per {
		*w = window{start: w.start.Add(per), prev: w.cur}
	}
	overlap := 1 - float64(now.Sub(w.start))/float64(per)
	return float64(w.prev)*max(overlap, 0) + float64(w.cur)
}

// Allow reports whether n more events for key fit every rate at now; if so
// they are counted. When one does not fit, over is the first rate it would
// exceed, for the refusal's text and the metric.
func (l *Limiter) Allow(key string, n int, now time.Time) (ok bool, over Rate) {
	if len(l.Rates) == 0 {
		return true, Rate{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entry(key)
	for i, r := range l.Rates {
		if e.win[i].estimate(r.Per, now)+float64(n) > float64(r.N) {
			return false, r
		}
	}
	for i := range l.Rates {
		e.win[i].cur += int64(n)
	}
	return true, Rate{}
}

// Room returns how many more events key may have at now before a rate
// would refuse one, and the rate that bounds it. It counts nothing, and
// remembers no key it did not know: callers that must check several keys
// before counting any (a message is refused if any of its limits is
// reached) use Room, then Add.
func (l *Limiter) Room(key string, now time.Time) (n int, by Rate) {
	if len(l.Rates) == 0 {
		return MaxRateN, Rate{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	el, ok := l.keys[key]
	n = MaxRateN + 1
	for i, r := range l.Rates {
		left := r.N
		if ok {
			left = int(float64(r.N) - el.Value.(*entry).win[i].estimate(r.Per, now))
		}
		if left < n {
			n, by = max(left, 0), r
		}
	}
	return n, by
}

// Add counts n events for key at now, whether they fit or not.
func (l *Limiter) Add(key string, n int, now time.Time) {
	if len(l.Rates) == 0 || n <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entry(key)
	for i, r := range l.Rates {
		e.win[i].estimate(r.Per, now) // roll the window forward first
		e.win[i].cur += int64(n)
	}
}

// Len is the number of keys remembered.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

func (l *Limiter) entry(key string) *entry {
	if l.keys == nil {
		l.keys = map[string]*list.Element{}
	}
	if el, ok := l.keys[key]; ok {
		l.lru.MoveToFront(el)
		return el.Value.(*entry)
	}
	limit := l.MaxKeys
	if limit <= 0 {
		limit = DefaultMaxKeys
	}
	for len(l.keys) >= limit {
		old := l.lru.Back()
		delete(l.keys, old.Value.(*entry).key)
		l.lru.Remove(old)
	}
	e := &entry{key: key, win: make([]window, len(l.Rates))}
	l.keys[key] = l.lru.PushFront(e)
	return e
}
