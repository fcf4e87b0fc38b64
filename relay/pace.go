package relay

import (
	"strings"
	"sync"
	"time"

	"github.com/qmgate/qmgate/internal/ratelimit"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/relay/transport"
)

// DefaultPacedHold bounds how many claimed messages a paced route keeps
// waiting in the engine while holding delivery slots; the rest wait parked
// (leased, in arrival order) without a slot, so a long backlog on a slow
// route never keeps other routes from their slots.
const DefaultPacedHold = 64

// ThrottleTexts are the phrases that mark a temporary reply as the next
// hop's rate limit (with 421, 451 or 452), besides any enhanced code 4.7.x.
var ThrottleTexts = []string{"rate limit", "too many", "throttl", "slow down"}

// Pacing spaces a route's deliveries to its rate: the whole route, or for
// mx routes each destination domain. Mail beyond the rate waits in the
// engine, leased and in arrival order, and leaves as the rate allows; no
// attempt is recorded for the wait.
type Pacing struct {
	Rate ratelimit.Rate
	// PerDomain keys the pace by the recipients' domain (mx routes).
	PerDomain bool
	// ThrottleTexts are added to the package's ThrottleTexts.
	ThrottleTexts []string

	mu     sync.Mutex
	pacers map[string]*ratelimit.Pacer
}

// NewPacing returns the pacing of a route at r.
func NewPacing(r ratelimit.Rate, perDomain bool, texts []string) *Pacing {
	return &Pacing{Rate: r, PerDomain: perDomain, ThrottleTexts: texts, pacers: map[string]*ratelimit.Pacer{}}
}

// burst lets a fast route keep up with timers that wake late: a tenth of a
// second's worth of messages, at least one; the count over a minute stays
// within the rate plus this.
func (p *Pacing) burst() int {
	return max(1, int(float64(100*time.Millisecond)/float64(p.Rate.Interval())))
}

func (p *Pacing) key(pt *part) string {
	if !p.PerDomain || len(pt.idx) == 0 {
		return ""
	}
	return strings.ToLower(mail.Domain(pt.c.d.Recipients[pt.idx[0]]))
}

func (p *Pacing) pacer(key string) *ratelimit.Pacer {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.pacers[key]
	if pc == nil {
		pc = ratelimit.NewPacer(p.Rate, p.burst())
		p.pacers[key] = pc
	}
	return pc
}

// Slowdown returns the largest interval multiplier of the route's pacers (1
// when nothing throttled it).
func (p *Pacing) Slowdown() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := 1.0
	for _, pc := range p.pacers {
		s = max(s, pc.Slowdown())
	}
	return s
}

// observe eases or stretches the pace of key from one job's results: a
// reply that documents a rate limit slows the route down, an accepted one
// eases a slowdown back.
func (p *Pacing) observe(key string, rs []transport.Result, now time.Time) {
	pc := p.pacer(key)
	throttled, ok := false, false
	for _, r := range rs {
		switch {
		case r.Status.IsAccept():
			ok = true
		case p.throttling(r.Status):
			throttled = true
		}
	}
	if throttled {
		pc.Throttled(now)
	} else if ok {
		pc.Succeeded()
	}
}

// throttling reports whether st is a next hop's rate limit: 421, 451 or 452
// with an enhanced code 4.7.x (RFC 3463 "security or policy status"), or
// with a text that says so.
func (p *Pacing) throttling(st mail.Status) bool {
	if st.Class != mail.Temporary || st.SMTP != 421 && st.SMTP != 451 && st.SMTP != 452 {
		return false
	}
	if strings.HasPrefix(st.Code, "4.7.") {
		return true
	}
	t := strings.ToLower(st.Text)
	for _, list := range [][]string{ThrottleTexts, p.ThrottleTexts} {
		for _, s := range list {
			if s != "" && strings.Contains(t, strings.ToLower(s)) {
				return true
			}
		}
	}
	return false
}
