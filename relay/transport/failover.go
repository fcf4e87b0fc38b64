package transport

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// Health backoff bounds: a next hop that failed is skipped for MinHostBackoff
// after its first failure, twice as long after each further one, up to
// MaxHostBackoff; one success clears it.
const (
	MinHostBackoff = 30 * time.Second
	MaxHostBackoff = 10 * time.Minute
)

// Health is the state of next hops, shared by every route that names the
// same one (by its URL).
type Health struct {
	mu    sync.Mutex
	hosts map[string]*hostState
	now   func() time.Time
}

type hostState struct {
	failures  int
	downUntil time.Time
	reason    string
	// down: the last thing known is a failure (the backoff may be over);
	// since: when the host last went down or came back up.
	down     bool
	since    time.Time
	lastErr  string
	lastErrT time.Time
}

// HostHealth is one next hop's state, for metrics and `queue stat`.
type HostHealth struct {
	Host      string
	Up        bool
	DownUntil time.Time // when Up is false
	Failures  int       // consecutive
	Reason    string    // the last failure, plain words, while it is down
	// Since is when the host went down or came back up (zero: neither
	// since the process started). LastError and LastErrorAt are its last
	// failure, kept after it is up again.
	Since       time.Time
	LastError   string
	LastErrorAt time.Time
}

// Nexthops is the process's next hop health, shared by all routes.
var Nexthops = NewHealth(time.Now)

// NewHealth returns an empty health table on the clock now.
func NewHealth(now func() time.Time) *Health {
	return &Health{hosts: map[string]*hostState{}, now: now}
}

func (h *Health) state(host string) *hostState {
	s := h.hosts[host]
	if s == nil {
		s = &hostState{}
		h.hosts[host] = s
	}
	return s
}

// Up reports whether host is not in its backoff.
func (h *Health) Up(host string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.state(host)
	return !h.now().Before(s.downUntil)
}

// MarkDown records a failed connection to host and starts its backoff.
func (h *Health) MarkDown(host, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.state(host)
	now := h.now()
	s.failures++
	d := MinHostBackoff << min(s.failures-1, 10)
	s.downUntil = now.Add(min(d, MaxHostBackoff))
	s.reason = reason
	if !s.down {
		s.down, s.since = true, now
	}
	s.lastErr, s.lastErrT = reason, now
}

// MarkUp records that host took a connection.
func (h *Health) MarkUp(host string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.state(host)
	s.failures, s.downUntil, s.reason = 0, time.Time{}, ""
	if s.down {
		s.down, s.since = false, h.now()
	}
}

// Snapshot returns every known next hop, by name.
func (h *Health) Snapshot() []HostHealth {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	out := make([]HostHealth, 0, len(h.hosts))
	for host, s := range h.hosts {
		hh := HostHealth{Host: host, Up: !now.Before(s.downUntil), Failures: s.failures, Reason: s.reason,
			Since: s.since, LastError: s.lastErr, LastErrorAt: s.lastErrT}
		if !hh.Up {
			hh.DownUntil = s.downUntil
		}
		out = append(out, hh)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// Hop is one next hop of a Failover.
type Hop struct {
	Host      string // its URL, the key of its health
	Transport Transport
}

// Failover delivers through the first healthy of several next hops, in
// order. A hop whose connection fails (connect, TLS, authentication, a 4xx
// greeting: a Result with HostDown) is marked down for its backoff and the
// next hop takes the same jobs at once. A message goes to one hop only:
// jobs move on only when their hop failed before any transaction started.
// Hops in their backoff are tried last, so mail still leaves when every hop
// is marked down.
type Failover struct {
	Hops []Hop
	// Health is the shared table; nil uses Nexthops.
	Health *Health
}

func (f *Failover) health() *Health {
	if f.Health != nil {
		return f.Health
	}
	return Nexthops
}

// order is the hops to try: the healthy ones, then those in backoff, each
// in the configured order.
func (f *Failover) order() []Hop {
	h := f.health()
	var up, down []Hop
	for _, hop := range f.Hops {
		if h.Up(hop.Host) {
			up = append(up, hop)
		} else {
			down = append(down, hop)
		}
	}
	return append(up, down...)
}

// Deliver implements Transport.
func (f *Failover) Deliver(ctx context.Context, jobs []*Job) {
	h := f.health()
	left := jobs
	for _, hop := range f.order() {
		if len(left) == 0 || ctx.Err() != nil {
			break
		}
		var mu sync.Mutex
		var retry []*Job
		var hostDown, hostUp bool
		clones := make([]*Job, len(left))
		for k, j := range left {
			c := &Job{ID: j.ID, Envelope: j.Envelope, Size: j.Size, Open: j.Open}
			c.OnDone = func() {
				if len(c.Results) != len(c.Envelope.Recipients) {
					c.Fill(mail.Temp("4.3.0", "transport gave no result"), hop.Host)
				}
				mu.Lock()
				defer mu.Unlock()
				if down(c.Results) {
					hostDown = true
					retry = append(retry, j)
					j.Results = c.Results // kept if no other hop answers
					return
				}
				hostUp = true
				j.Results = c.Results
				j.Done()
			}
			clones[k] = c
		}
		hop.Transport.Deliver(ctx, clones)
		for _, c := range clones {
			c.Done()
		}
		if hostUp {
			h.MarkUp(hop.Host)
		} else if hostDown {
			h.MarkDown(hop.Host, firstText(retry))
		}
		left = retry
	}
	for _, j := range left {
		if len(j.Results) == 0 {
			j.Fill(mail.Temp("4.4.1", "no next hop of this route took the connection"), "")
		}
		for i := range j.Results {
			j.Results[i].HostDown = false
		}
	}
}

func down(rs []Result) bool {
	for _, r := range rs {
		if !r.HostDown || routeLevel(r.Status) {
			return false
		}
	}
	return len(rs) > 0
}

// routeLevel reports whether st is the route's own trouble rather than the
// host's: the route has no OAuth2 token (every status of internal/oauthtoken
// starts so). Another host would fail the same way, and this one is not to
// blame.
func routeLevel(st mail.Status) bool {
	return strings.HasPrefix(st.Text, "OAuth2 ")
}

func firstText(js []*Job) string {
	for _, j := range js {
		for _, r := range j.Results {
			return r.Status.Text
		}
	}
	return ""
}

// Close implements Transport.
func (f *Failover) Close() error {
	for _, hop := range f.Hops {
		hop.Transport.Close()
	}
	return nil
}
