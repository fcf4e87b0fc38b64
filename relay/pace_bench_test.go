package relay

import (
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/ratelimit"
)

// BenchmarkPaceRealMinute runs a paced route's take loop on the real clock
// for one minute ($QMGATE_PACE_BENCH_TIME overrides) with a backlog far
// beyond the rate and two workers, as the engine does, and reports the
// messages started against the rate (ratio 1.00 is exact):
//
//	go test -run '^$' -bench PaceRealMinute -benchtime 1x ./relay/
func BenchmarkPaceRealMinute(b *testing.B) {
	span := time.Minute
	if v := os.Getenv("QMGATE_PACE_BENCH_TIME"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			span = d
		}
	}
	for _, rate := range []string{"30/m", "10000/m"} {
		b.Run(rate, func(b *testing.B) {
			r, err := ratelimit.ParseRate(rate)
			if err != nil {
				b.Fatal(err)
			}
			for range b.N {
				want := float64(span) / float64(r.Interval())
				w := &routeWorkers{pace: NewPacing(r, false, nil), hold: DefaultPacedHold}
				w.cond = sync.NewCond(&w.mu)
				backlog := int(want*1.5) + 100
				for range backlog {
					w.push(&part{})
				}
				var n atomic.Int64
				start := time.Now()
				stop := time.AfterFunc(span, w.close)
				var wg sync.WaitGroup
				for range 2 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							ps, giveBack := w.take(1)
							if ps == nil || giveBack {
								return
							}
							if time.Since(start) < span {
								n.Add(int64(len(ps)))
							}
						}
					}()
				}
				wg.Wait()
				stop.Stop()
				b.ReportMetric(float64(n.Load())/want, "of-rate")
				b.ReportMetric(float64(n.Load()), "msgs")
			}
		})
	}
}
