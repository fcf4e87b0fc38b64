// Package ratelimit holds the two kinds of rate that the hub applies: an
// outbound Pacer that spaces a route's deliveries to a configured rate
// ("30/m", as Microsoft 365 allows per mailbox) and slows down when a
// server says it is throttling, and an inbound Limiter that counts messages
// or recipients per key (a client address, a user, a sender domain) in a
// sliding window so that one compromised client cannot send without bound.
//
// It knows nothing of mail, configuration or the network: callers pass keys
// and clocks. State is in memory and bounded (Limiter.MaxKeys).
package ratelimit

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rate is N events per Per.
type Rate struct {
	N   int
	Per time.Duration
}

// MaxRateN bounds N in a configured rate, so that intervals never round to
// zero and counters never overflow.
const MaxRateN = 1_000_000_000

// units are the suffixes a rate may use, after the slash.
var units = map[string]time.Duration{
	"s": time.Second, "sec": time.Second, "second": time.Second,
	"m": time.Minute, "min": time.Minute, "minute": time.Minute,
	"h": time.Hour, "hour": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour,
}

// ParseRate reads "N/UNIT" or "N/KUNIT" (for example "30/m", "2000/d",
// "10/5m"), where UNIT is s, m, h or d (or second, minute, hour, day).
func ParseRate(s string) (Rate, error) {
	num, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, fmt.Errorf("rate %q: want N/UNIT, such as 30/m or 2000/d", s)
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 || n > MaxRateN {
		return Rate{}, fmt.Errorf("rate %q: the count must be a whole number from 1 to %d", s, MaxRateN)
	}
	i := 0
	for i < len(per) && per[i] >= '0' && per[i] <= '9' {
		i++
	}
	k := 1
	if i > 0 {
		if k, err = strconv.Atoi(per[:i]); err != nil || k <= 0 || k > 1000 {
			return Rate{}, fmt.Errorf("rate %q: the period's multiple must be from 1 to 1000", s)
		}
	}
	u, ok := units[per[i:]]
	if !ok {
		return Rate{}, fmt.Errorf("rate %q: unknown unit %q (s, m, h or d)", s, per[i:])
	}
	return Rate{N: n, Per: time.Duration(k) * u}, nil
}

// Interval is the spacing between events at this rate.
func (r Rate) Interval() time.Duration {
	if r.N <= 0 {
		return 0
	}
	return r.Per / time.Duration(r.N)
}

// String renders the rate as ParseRate reads it.
func (r Rate) String() string {
	for _, u := range []struct {
		s string
		d time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}} {
		if r.Per%u.d == 0 {
			if k := r.Per / u.d; k != 1 {
				return fmt.Sprintf("%d/%d%s", r.N, k, u.s)
			}
			return fmt.Sprintf("%d/%s", r.N, u.s)
		}
	}
	return fmt.Sprintf("%d/%s", r.N, r.Per)
}
