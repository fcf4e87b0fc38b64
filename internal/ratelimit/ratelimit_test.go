package ratelimit

import (
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]Rate{
		"30/m":      {30, time.Minute},
		"2000/d":    {2000, 24 * time.Hour},
		"10/5m":     {10, 5 * time.Minute},
		" 1/second": {1, time.Second},
		"100/hour":  {100, time.Hour},
	} {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "30", "30/", "0/m", "-1/m", "x/m", "30/w", "30/0m", "30/2000m", "2000000000/s", "30/m/"} {
		if r, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) = %v, want an error", in, r)
		}
	}
	for _, s := range []string{"30/m", "2000/d", "10/5m", "7/s", "3/h", "5/90s"} {
		r, _ := ParseRate(s)
		if r.String() != s {
			t.Errorf("String of %q = %q", s, r.String())
		}
	}
}

// TestPacerHoldsRate: over a simulated minute, a pacer at 30/m lets
// through exactly 30 events (the first at once), never closer than the
// interval, and at 10,000/m 10,000 (within the burst) when the caller asks
// every millisecond or, with a burst of 2, every 7 ms (coarser than the
// 6 ms interval).
func TestPacerHoldsRate(t *testing.T) {
	for _, tc := range []struct {
		rate  string
		step  time.Duration
		burst int
	}{{"30/m", 100 * time.Millisecond, 1}, {"10000/m", time.Millisecond, 1}, {"10000/m", 7 * time.Millisecond, 2}} {
		r, _ := ParseRate(tc.rate)
		p := NewPacer(r, tc.burst)
		t0 := time.Unix(1e9, 0)
		n := 0
		var last time.Time
		for now := t0; now.Before(t0.Add(time.Minute)); now = now.Add(tc.step) {
			for {
				ok, wait := p.Take(now)
				if !ok {
					if wait <= 0 {
						t.Fatalf("%s: refused with no wait", tc.rate)
					}
					break
				}
				if tc.burst == 1 && n > 0 && now.Sub(last) < r.Interval() {
					t.Fatalf("%s: two events %v apart, interval %v", tc.rate, now.Sub(last), r.Interval())
				}
				last = now
				n++
			}
		}
		if n < r.N || n > r.N+tc.burst-1 {
			t.Errorf("%s polled every %v with a burst of %d: %d events in a minute, want %d to %d", tc.rate, tc.step, tc.burst, n, r.N, r.N+tc.burst-1)
		}
	}
}

func TestPacerBurstAndThrottle(t *testing.T) {
	r, _ := ParseRate("60/m") // one a second
	p := NewPacer(r, 3)
	now := time.Unix(1e9, 0)
	for i := range 3 {
		if ok, _ := p.Take(now); !ok {
			t.Fatalf("burst event %d refused", i)
		}
	}
	if ok, wait := p.Take(now); ok || wait != time.Second {
		t.Fatalf("fourth event at once: ok=%v wait=%v, want a refusal for 1s", ok, wait)
	}
	// A throttle doubles the spacing and pushes the next slot out.
	now = now.Add(10 * time.Second)
	p.Throttled(now)
	if p.Slowdown() != 2 {
		t.Fatalf("slowdown %v after one throttle", p.Slowdown())
	}
	if ok, wait := p.Take(now); ok || wait <= 0 {
		t.Fatalf("event right after a throttle: ok=%v wait=%v", ok, wait)
	}
	for range 20 {
		p.Throttled(now)
	}
	if p.Slowdown() != MaxSlowdown {
		t.Fatalf("slowdown %v, want the cap %d", p.Slowdown(), MaxSlowdown)
	}
	for range 200 {
		p.Succeeded()
	}
	if p.Slowdown() != 1 {
		t.Fatalf("slowdown %v after many successes, want 1", p.Slowdown())
	}
}

func TestLimiter(t *testing.T) {
	l := &Limiter{Rates: []Rate{{N: 10, Per: time.Minute}, {N: 15, Per: time.Hour}}}
	now := time.Unix(1e9, 0).Truncate(time.Hour)
	for i := range 10 {
		if ok, _ := l.Allow("10.0.0.1", 1, now); !ok {
			t.Fatalf("event %d refused", i)
		}
	}
	ok, over := l.Allow("10.0.0.1", 1, now)
	if ok || over.N != 10 {
		t.Fatalf("eleventh event: ok=%v over=%v, want the 10/m refusal", ok, over)
	}
	if ok, _ := l.Allow("10.0.0.2", 1, now); !ok {
		t.Fatal("another key refused")
	}
	// Half a minute into the next window, half of the previous window still
	// counts: 5 of 10 used, so 5 more fit, and the hour's 15 stops the 6th.
	now = now.Add(90 * time.Second)
	for i := range 5 {
		if ok, _ := l.Allow("10.0.0.1", 1, now); !ok {
			t.Fatalf("event %d in the next window refused", i)
		}
	}
	if ok, over := l.Allow("10.0.0.1", 1, now.Add(time.Minute)); ok || over.N != 15 {
		t.Fatalf("past the hourly limit: ok=%v over=%v", ok, over)
	}
	// A refused batch counts nothing.
	if ok, _ := l.Allow("10.0.0.3", 11, now); ok {
		t.Fatal("a batch over the limit was allowed")
	}
	if ok, _ := l.Allow("10.0.0.3", 10, now); !ok {
		t.Fatal("the refused batch was counted")
	}
}

func TestLimiterForgetsOldest(t *testing.T) {
	l := &Limiter{Rates: []Rate{{N: 1, Per: time.Hour}}, MaxKeys: 2}
	now := time.Unix(1e9, 0)
	l.Allow("a", 1, now)
	l.Allow("b", 1, now)
	l.Allow("a", 0, now) // a is now the most recent
	l.Allow("c", 1, now) // forgets b
	if l.Len() != 2 {
		t.Fatalf("%d keys kept, want 2", l.Len())
	}
	if ok, _ := l.Allow("a", 1, now); ok {
		t.Fatal("a was forgotten instead of b")
	}
	if ok, _ := l.Allow("b", 1, now); !ok {
		t.Fatal("b was not forgotten")
	}
}

func TestLimiterNoRates(t *testing.T) {
	var l Limiter
	if ok, _ := l.Allow("x", 1<<30, time.Now()); !ok || l.Len() != 0 {
		t.Fatal("a limiter with no rates refused or remembered")
	}
}

// TestLimiterRoomAdd: Room counts nothing and remembers no new key; Add
// counts even past the limit; Room agrees with Allow.
func TestLimiterRoomAdd(t *testing.T) {
	l := &Limiter{Rates: []Rate{{N: 10, Per: time.Minute}, {N: 25, Per: time.Hour}}}
	now := time.Unix(1e9, 0).Truncate(time.Hour)
	if n, by := l.Room("a", now); n != 10 || by.N != 10 || l.Len() != 0 {
		t.Fatalf("Room of a new key = %d, %v (keys %d); want 10, 10/m, none remembered", n, by, l.Len())
	}
	l.Add("a", 7, now)
	if n, _ := l.Room("a", now); n != 3 {
		t.Fatalf("Room after 7 = %d, want 3", n)
	}
	if ok, _ := l.Allow("a", 4, now); ok {
		t.Fatal("Allow let 4 through with room for 3")
	}
	if ok, _ := l.Allow("a", 3, now); !ok {
		t.Fatal("Allow refused the 3 that Room promised")
	}
	l.Add("a", 5, now) // past the limit: counted all the same
	if n, by := l.Room("a", now); n != 0 || by.N != 10 {
		t.Fatalf("Room past the limit = %d, %v", n, by)
	}
	// Two minutes on, the minute's window is empty and the hour's 15 of 25
	// bound the room.
	if n, by := l.Room("a", now.Add(2*time.Minute)); n != 10 || by.N != 10 {
		t.Fatalf("Room two minutes on = %d, %v; want 10 by 10/m", n, by)
	}
	l.Add("a", 8, now.Add(2*time.Minute))
	if n, by := l.Room("a", now.Add(4*time.Minute)); n != 2 || by.N != 25 {
		t.Fatalf("Room four minutes on = %d, %v; want 2 by 25/h", n, by)
	}
	var none Limiter
	if n, _ := none.Room("x", now); n != MaxRateN {
		t.Fatalf("Room with no rates = %d", n)
	}
}
