package relay

import (
	"context"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/ratelimit"
	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
	"github.com/qmgate/qmgate/relay/transport"
)

// simulateMinute runs a paced sender with a backlog on a simulated clock for
// one minute: it asks the route's pacer, and when refused sleeps the wait it
// was told plus a timer's lateness (0 to 3 ms). It returns the messages that
// started within the minute.
func simulateMinute(p *Pacing, throttleAt time.Duration) int {
	start := time.Unix(1_800_000_000, 0)
	now := start
	pc := p.pacer("")
	n := 0
	late := 0
	throttled := false
	for now.Sub(start) < time.Minute {
		if !throttled && throttleAt > 0 && now.Sub(start) >= throttleAt {
			pc.Throttled(now)
			throttled = true
		}
		ok, wait := pc.Take(now)
		if ok {
			n++
			continue
		}
		late = (late + 1) % 4
		now = now.Add(wait + time.Duration(late)*time.Millisecond)
	}
	return n
}

// TestPacingHoldsRate: over a simulated minute with late timers, a route
// paced at 30/m and at 10,000/m starts its rate's worth of messages within
// 2 %.
func TestPacingHoldsRate(t *testing.T) {
	for _, tc := range []struct {
		rate string
		want float64
	}{{"30/m", 30}, {"10000/m", 10000}, {"2000/d", 2000.0 / 24 / 60}} {
		r, err := ratelimit.ParseRate(tc.rate)
		if err != nil {
			t.Fatal(err)
		}
		got := float64(simulateMinute(NewPacing(r, false, nil), 0))
		// The first message starts at once, so a slow rate starts the
		// next whole number of messages.
		if tc.want < 50 && got != math.Ceil(tc.want) {
			t.Errorf("%s: %v messages in a minute, want %v", tc.rate, got, math.Ceil(tc.want))
		}
		if tc.want >= 50 && math.Abs(got-tc.want)/tc.want > 0.02 {
			t.Errorf("%s: %v messages in a minute, want %v within 2%%", tc.rate, got, tc.want)
		}
	}
	// A throttle half way through (and no success after it) slows the
	// route down.
	r, _ := ratelimit.ParseRate("10000/m")
	if got := simulateMinute(NewPacing(r, false, nil), 30*time.Second); got >= 8000 {
		t.Errorf("throttled at 30 s: %d messages, want fewer than the rate", got)
	}
}

func TestThrottlingReplies(t *testing.T) {
	p := NewPacing(ratelimit.Rate{}, false, []string{"Mailbox busy"})
	for _, tc := range []struct {
		st   mail.Status
		want bool
	}{
		{mail.Status{Class: mail.Temporary, SMTP: 421, Code: "4.7.0", Text: "remote host said: 421 4.7.0 Temporary System Problem"}, true},
		{mail.Status{Class: mail.Temporary, SMTP: 451, Text: "remote host said: 451 Too many messages, slow down"}, true},
		{mail.Status{Class: mail.Temporary, SMTP: 452, Code: "4.3.1", Text: "remote host said: 452 4.3.1 Rate limit exceeded"}, true},
		{mail.Status{Class: mail.Temporary, SMTP: 450, Code: "4.2.1", Text: "remote host said: 450 mailbox busy"}, false},
		{mail.Status{Class: mail.Temporary, SMTP: 451, Code: "4.3.0", Text: "remote host said: 451 4.3.0 Mailbox busy"}, true},
		{mail.Status{Class: mail.Temporary, SMTP: 451, Code: "4.3.0", Text: "remote host said: 451 4.3.0 local error"}, false},
		{mail.Status{Class: mail.Permanent, SMTP: 554, Code: "5.7.1", Text: "too many"}, false},
	} {
		if got := p.throttling(tc.st); got != tc.want {
			t.Errorf("%q: throttling %v, want %v", tc.st.Text, got, tc.want)
		}
	}
}

// orderTransport records the order in which messages reach it.
type orderTransport struct {
	mu  sync.Mutex
	ids []string
}

func (o *orderTransport) Deliver(_ context.Context, jobs []*transport.Job) {
	for _, j := range jobs {
		o.mu.Lock()
		o.ids = append(o.ids, j.ID)
		o.mu.Unlock()
		j.SetAll(mail.OK("taken"), "order:")
	}
}
func (o *orderTransport) Close() error { return nil }

// TestEnginePacedRoute: a paced route with more mail than it may hold
// delivers every message once, in arrival order, parking what waits, and
// records no attempt for the waits.
func TestEnginePacedRoute(t *testing.T) {
	const n = 6
	q, log := queueOfSteps(t, 0)
	var ids []string
	for i := 0; i < n; i++ {
		env := mail.Envelope{Sender: "s@x.test", Recipients: []string{"r@y.test"}}
		id, err := q.Put(context.Background(), env, strings.NewReader("Subject: paced\n\nx\n"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rate, _ := ratelimit.ParseRate("1200/m") // 50 ms apart
	tr := &orderTransport{}
	rt := &Route{Name: "paced", Via: "order:", Transport: tr, Concurrency: 2, Pacing: NewPacing(rate, false, nil),
		Patterns: mail.HostList([]string{"*"})}
	router := &Router{Routes: []*Route{rt}}
	e := &Engine{Queue: q, Log: log, Routes: func() *Router { return router }, PacedHold: 2, MaxBatch: 1}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	if !waitRecorded(q, 0) {
		t.Fatalf("not all delivered: %d left", q.Metrics().Messages)
	}
	cancel()
	testpeer.Recv(t, "the engine to stop", 30*time.Second, done)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if strings.Join(tr.ids, ",") != strings.Join(ids, ",") {
		t.Errorf("delivered in order %v, want %v", tr.ids, ids)
	}
}

// TestThrottleSlowsRoute: a throttling reply stretches the pace of its key
// (per domain on mx routes), an accepted one eases it back, and a plain
// deferral changes nothing.
func TestThrottleSlowsRoute(t *testing.T) {
	r, _ := ratelimit.ParseRate("60/m")
	p := NewPacing(r, true, nil)
	now := time.Unix(1_800_000_000, 0)
	busy := transport.Result{Status: mail.Status{Class: mail.Temporary, SMTP: 421, Code: "4.7.0", Text: "remote host said: 421 4.7.0 too many messages"}}
	plain := transport.Result{Status: mail.Temp("4.2.1", "remote host said: 450 4.2.1 mailbox busy")}
	p.observe("a.test", []transport.Result{plain}, now)
	if p.pacer("a.test").Slowdown() != 1 {
		t.Fatalf("plain deferral slowed the route")
	}
	p.observe("a.test", []transport.Result{busy}, now)
	if got := p.pacer("a.test").Slowdown(); got != 2 {
		t.Fatalf("slowdown %v after a throttle, want 2", got)
	}
	if p.pacer("b.test").Slowdown() != 1 {
		t.Fatalf("another domain slowed down too")
	}
	p.observe("a.test", []transport.Result{{Status: mail.OK("ok")}}, now)
	if got := p.pacer("a.test").Slowdown(); got >= 2 || got < 1 {
		t.Fatalf("slowdown %v after a success", got)
	}
	if p.Slowdown() < 1.5 {
		t.Fatalf("route slowdown %v", p.Slowdown())
	}
}

// TestEnginePacedBacklogOutlivesLease: a paced backlog that takes several
// leases to leave keeps its arrival order and delivers each message once:
// the engine renews the leases of the parts that wait instead of letting
// them go back to the queue and to the end of the line.
func TestEnginePacedBacklogOutlivesLease(t *testing.T) {
	const n = 80
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	q, err := queue.Open(t.TempDir(), queue.Options{Logger: log, LeaseTime: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	var ids []string
	put := func(k int) {
		for i := 0; i < k; i++ {
			env := mail.Envelope{Sender: "s@x.test", Recipients: []string{"r@y.test"}}
			id, err := q.Put(context.Background(), env, strings.NewReader("Subject: paced\n\nx\n"))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
	}
	put(n)
	// The backlog takes two leases; one connection, so that the order
	// the transport sees is the order the route sends in.
	rate, _ := ratelimit.ParseRate("40/s")
	tr := &orderTransport{}
	rt := &Route{Name: "paced", Via: "order:", Transport: tr, Concurrency: 1, Pacing: NewPacing(rate, false, nil),
		Patterns: mail.HostList([]string{"*"})}
	router := &Router{Routes: []*Route{rt}}
	e := &Engine{Queue: q, Log: log, Routes: func() *Router { return router }, PacedHold: 2, MaxBatch: 1}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	// More mail once the first is on its way: claimed later, its leases
	// run out later than those of the first backlog's rest.
	for delivered := 0; delivered < 3; {
		time.Sleep(10 * time.Millisecond)
		tr.mu.Lock()
		delivered = len(tr.ids)
		tr.mu.Unlock()
	}
	put(n)
	deadline := time.Now().Add(time.Minute)
	for q.Metrics().Messages > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	testpeer.Recv(t, "the engine to stop", 30*time.Second, done)
	if left := q.Metrics().Messages; left > 0 {
		t.Fatalf("not all delivered: %d left", left)
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if strings.Join(tr.ids, ",") != strings.Join(ids, ",") {
		t.Errorf("delivered in order\n%v\nwant\n%v", tr.ids, ids)
	}
}

// A claim the queue no longer honours is not renewed: the part counts as
// expired (let go unattempted when its turn comes) and asks for no more
// renewals, so a paced route does not spin on it.
func TestClaimedRenewLost(t *testing.T) {
	q, _ := queueOfSteps(t, 1)
	ds := q.Claim(1)
	if len(ds) != 1 {
		t.Fatalf("claimed %d", len(ds))
	}
	c := newClaimed(ds[0])
	now := time.Now()
	if at := c.renew(now); at.IsZero() || c.expiring(now) {
		t.Fatalf("a fresh claim: next look %v, expiring %v", at, c.expiring(now))
	}
	if _, ok := ds[0].Renew(); !ok {
		t.Fatal("Renew of a held claim failed")
	}
	q.Record(context.Background(), ds[0], nil) // gives the claim back
	c.leaseUntil = now                         // as if it were running out
	if at := c.renew(now); !at.IsZero() || !c.expiring(now) {
		t.Fatalf("a lost claim: next look %v, expiring %v", at, c.expiring(now))
	}
}
