package relay

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/qmgate/qmgate/internal/workers"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
	"github.com/qmgate/qmgate/relay/transport"
)

// Engine defaults.
const (
	// DefaultMaxInFlight bounds the deliveries claimed from the queue and not
	// yet recorded, across all routes.
	DefaultMaxInFlight = 4096
	// DefaultMaxBatch bounds how many queued messages one transport call
	// gets: QMTP pipelines them over one connection, SMTP reuses one
	// connection for them.
	DefaultMaxBatch = 64
	// leaseMargin: a delivery whose lease ends sooner than this (or than
	// a quarter of its lease, for a short one) is not started, because the
	// queue may hand its recipients out again.
	leaseMargin = time.Minute
)

// Engine moves mail from the queue to the transports: it claims due work,
// routes each recipient (the queue groups recipients by next hop, but two
// routes may share one with different TLS, credentials or headers, so a
// claimed delivery is split by route, never sent whole through the route
// of its first recipient), runs each part on its route's workers (at most
// the route's concurrency at once, batching messages that wait for the
// same route), and records the per-recipient results of a delivery in the
// queue once all its parts are done; the queue reschedules, backs off per
// destination and bounces.
type Engine struct {
	Queue *queue.Queue
	// Routes returns the current route table; a reload swaps it.
	Routes func() *Router
	Log    *slog.Logger
	// Metrics may be nil.
	Metrics     *Metrics
	MaxInFlight int
	MaxBatch    int
	// PacedHold bounds the claimed parts a paced route keeps pending with
	// an in-flight slot; default DefaultPacedHold.
	PacedHold int
	// Grace is how long deliveries under way may continue after Run's ctx
	// ends (a stop), before their own context is cancelled. Default 30s.
	Grace time.Duration

	mu      sync.Mutex
	workers map[*Route]*routeWorkers
	// tokens holds one entry per claimed delivery not yet recorded.
	tokens chan struct{}
	wg     sync.WaitGroup
	// recorders run the Records of finished deliveries on reused
	// goroutines; records counts those not yet done.
	recorders workers.Pool
	records   sync.WaitGroup
}

// claimed is one delivery claimed from the queue on its way through one
// or more routes. It is recorded once, when its last part is done: a
// Record releases the lease of every recipient of the delivery, and one
// still being delivered by another route must not be handed out again.
type claimed struct {
	d       *queue.Delivery
	mu      sync.Mutex
	results []queue.Result // one per recipient, valid where has is set
	has     []bool
	left    int  // parts not yet done
	tried   bool // some part reached its transport or was given a status
	// slot: the delivery still holds its place in the engine's in-flight
	// bound (a part parked by a paced route gives it up early).
	slot bool
	// leaseUntil is the end of the delivery's lease, which a paced route
	// renews while the delivery waits (parts of one delivery may wait on
	// several routes); leaseLen is the lease's length.
	leaseUntil time.Time
	leaseLen   time.Duration
}

func newClaimed(d *queue.Delivery) *claimed {
	return &claimed{d: d, results: make([]queue.Result, len(d.Recipients)), has: make([]bool, len(d.Recipients)), slot: true,
		leaseUntil: d.LeaseUntil, leaseLen: max(time.Until(d.LeaseUntil), time.Second)}
}

// expiring reports whether c's lease ends too soon to start a delivery.
func (c *claimed) expiring(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaseUntil.Sub(now) < min(leaseMargin, c.leaseLen/4)
}

// renew extends c's lease when less than three quarters of it is left
// and returns when it should next be looked at: once half of it is left.
// A lease the queue no longer honours (it ran out and the recipients were
// handed out again) counts as ended, so the delivery is let go unattempted
// when its turn comes, and is not looked at again (the zero time).
func (c *claimed) renew(now time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leaseUntil.IsZero() {
		return time.Time{}
	}
	if c.leaseUntil.Sub(now) < c.leaseLen*3/4 {
		until, ok := c.d.Renew()
		if !ok {
			c.leaseUntil = time.Time{}
			return time.Time{}
		}
		c.leaseUntil = until
	}
	return c.leaseUntil.Add(-c.leaseLen / 2)
}

// orDefault sets *v to def when it is zero or negative, the meaning of
// the engine's limit fields.
func orDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// releaseSlot gives c's in-flight slot back, once.
func (e *Engine) releaseSlot(c *claimed) {
	c.mu.Lock()
	had := c.slot
	c.slot = false
	c.mu.Unlock()
	if had {
		<-e.tokens
	}
}

// part is the share of a claimed delivery that one route serves: the
// indexes of its recipients in the delivery.
type part struct {
	c   *claimed
	idx []int
}

// routeWorkers is the FIFO of parts waiting for one route. A paced route
// keeps at most hold parts pending; later ones wait parked, in order,
// without an in-flight slot, still leased.
type routeWorkers struct {
	route   *Route
	pace    *Pacing
	hold    int
	mu      sync.Mutex
	cond    *sync.Cond
	pending []*part
	parked  []*part
	closed  bool
	// renewAt is when the leases of the parts waiting on a paced route
	// are next looked at (see renewLeases).
	renewAt time.Time
}

// Run delivers until ctx ends, then waits for deliveries under way to be
// recorded (they are bounded by the transports' own timeouts and ctx).
func (e *Engine) Run(ctx context.Context) error {
	orDefault(&e.MaxInFlight, DefaultMaxInFlight)
	orDefault(&e.MaxBatch, DefaultMaxBatch)
	orDefault(&e.PacedHold, DefaultPacedHold)
	orDefault(&e.Grace, 30*time.Second)
	e.tokens = make(chan struct{}, e.MaxInFlight)
	e.workers = map[*Route]*routeWorkers{}
	// Deliveries run on their own context: a stop ends claiming at once but
	// lets transactions under way finish (cutting one mid-DATA risks a
	// duplicate), up to Grace.
	dctx, dcancel := context.WithCancel(context.WithoutCancel(ctx))
	stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(e.Grace, dcancel) })
	defer stopGrace()
	defer dcancel()
	defer func() {
		e.mu.Lock()
		for _, w := range e.workers {
			w.close()
		}
		e.mu.Unlock()
		e.wg.Wait()
		e.records.Wait()
		e.recorders.Close()
	}()
	for {
		free := e.MaxInFlight - len(e.tokens)
		if free == 0 {
			// Wait for one slot rather than spinning.
			select {
			case e.tokens <- struct{}{}:
				<-e.tokens
			case <-ctx.Done():
				return nil
			}
			continue
		}
		ds := e.Queue.Claim(free)
		if len(ds) == 0 {
			if err := e.Queue.Wait(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			continue
		}
		router := e.Routes()
		for _, d := range ds {
			e.tokens <- struct{}{}
			e.dispatch(dctx, router, d)
		}
	}
}

// dispatch splits d by the route of each recipient and hands each part to
// its route's workers. Recipients no route serves (a reload removed their
// route after acceptance) keep their mail with a temporary failure that
// says why; the administrator can add a route.
func (e *Engine) dispatch(ctx context.Context, router *Router, d *queue.Delivery) {
	c := newClaimed(d)
	var routes []*Route
	var idx [][]int
	var none []int
	for i, rcpt := range d.Recipients {
		rt := router.Lookup(d.SenderFor(rcpt), rcpt)
		if rt == nil {
			none = append(none, i)
			continue
		}
		if f := rt.Fallback; f != nil && f.After > 0 && d.Attempts >= f.After {
			if fb := router.byName(f.Route); fb != nil {
				rt = fb
			}
		}
		k := slices.Index(routes, rt)
		if k < 0 {
			k = len(routes)
			routes = append(routes, rt)
			idx = append(idx, nil)
		}
		idx[k] = append(idx[k], i)
	}
	c.left = len(routes)
	if len(none) > 0 {
		c.left++
	}
	for k, rt := range routes {
		if e.worker(ctx, rt).push(&part{c: c, idx: idx[k]}) {
			e.releaseSlot(c)
		}
	}
	if len(none) > 0 {
		st := mail.Temp("4.4.4", "no route for this domain")
		rs := make([]transport.Result, len(none))
		for i := range rs {
			rs[i] = transport.Result{Status: st}
		}
		e.finish(ctx, nil, &part{c: c, idx: none}, rs)
	}
}

// worker returns the FIFO of rt, starting it on first use. Workers of routes
// that a reload replaced drain their FIFO and stop.
func (e *Engine) worker(ctx context.Context, rt *Route) *routeWorkers {
	e.mu.Lock()
	defer e.mu.Unlock()
	w := e.workers[rt]
	if w != nil {
		return w
	}
	cur := e.Routes()
	for old, ow := range e.workers {
		if !slices.Contains(cur.Routes, old) {
			ow.close()
			delete(e.workers, old)
		}
	}
	w = &routeWorkers{route: rt, pace: rt.Pacing, hold: max(e.PacedHold, 1)}
	w.cond = sync.NewCond(&w.mu)
	e.workers[rt] = w
	n := max(rt.Concurrency, 1)
	for i := 0; i < n; i++ {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.work(ctx, w)
		}()
	}
	return w
}

// push queues p and reports whether it was parked (it then holds no
// in-flight slot).
func (w *routeWorkers) push(p *part) (parked bool) {
	w.mu.Lock()
	if w.pace != nil && (len(w.pending) >= w.hold || len(w.parked) > 0) {
		w.parked = append(w.parked, p)
		parked = true
	} else {
		w.pending = append(w.pending, p)
	}
	w.mu.Unlock()
	w.cond.Signal()
	return parked
}

// unpark moves parked parts up while there is room; w.mu is held.
func (w *routeWorkers) unpark() {
	n := min(len(w.parked), w.hold-len(w.pending))
	if n <= 0 {
		return
	}
	w.pending = append(w.pending, w.parked[:n]...)
	w.parked = append(w.parked[:0], w.parked[n:]...)
}

func (w *routeWorkers) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cond.Broadcast()
}

// take waits for work and returns up to max parts, or nil once closed and
// drained. On a paced route it returns only parts whose pace allows them
// to start now, the oldest first, and waits for the pace otherwise; once
// the route is closed (a reload replaced it) it returns what is left with
// giveBack set, to be handed back to the queue unattempted.
func (w *routeWorkers) take(max int) (out []*part, giveBack bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for len(w.pending) == 0 && len(w.parked) == 0 {
			if w.closed {
				return nil, false
			}
			w.cond.Wait()
		}
		if w.pace == nil {
			break
		}
		if w.closed {
			out = append(append(out, w.pending...), w.parked...)
			w.pending, w.parked = nil, nil
			return out, true
		}
		w.unpark()
		now := time.Now()
		w.renewLeases(now)
		blocked := map[string]bool{}
		wait := time.Duration(-1)
		rest := make([]*part, 0, len(w.pending))
		for _, p := range w.pending {
			if len(out) < max && p.c != nil && p.c.expiring(now) {
				// Its lease is running out: deliver lets it go back to the
				// queue, which takes no slot of the pace.
				out = append(out, p)
				continue
			}
			if k := w.pace.key(p); len(out) < max && !blocked[k] {
				ok, d := w.pace.pacer(k).Take(now)
				if ok {
					out = append(out, p)
					continue
				}
				blocked[k] = true
				if wait < 0 || d < wait {
					wait = d
				}
			}
			rest = append(rest, p)
		}
		w.pending = rest
		w.unpark()
		if len(out) > 0 {
			if len(w.pending) > 0 {
				w.cond.Signal()
			}
			return out, false
		}
		if r := w.renewAt.Sub(now); !w.renewAt.IsZero() && (wait < 0 || r < wait) {
			wait = r
			if wait < 0 {
				wait = 0
			}
		}
		t := time.AfterFunc(wait, w.cond.Broadcast)
		w.cond.Wait()
		t.Stop()
	}
	n := min(max, len(w.pending))
	out = slices.Clone(w.pending[:n])
	w.pending = slices.Delete(w.pending, 0, n)
	if len(w.pending) > 0 {
		w.cond.Signal()
	}
	return out, false
}

// renewLeases keeps the parts waiting on a paced route leased, however
// long the backlog: a lease that ran out would send a message back to the
// queue and then to the end of the line, and the route would lose its
// arrival order. A pass renews every lease with less than three quarters
// left, so passes come at most every quarter lease; w.mu is held.
func (w *routeWorkers) renewLeases(now time.Time) {
	if now.Before(w.renewAt) {
		return
	}
	w.renewAt = time.Time{}
	for _, list := range [][]*part{w.pending, w.parked} {
		for _, p := range list {
			if p.c == nil {
				continue
			}
			if at := p.c.renew(now); !at.IsZero() && (w.renewAt.IsZero() || at.Before(w.renewAt)) {
				w.renewAt = at
			}
		}
	}
}

func (e *Engine) work(ctx context.Context, w *routeWorkers) {
	for {
		ps, giveBack := w.take(e.MaxBatch)
		if ps == nil {
			return
		}
		if giveBack {
			for _, p := range ps {
				e.finish(ctx, w.route, p, []transport.Result{})
			}
			continue
		}
		e.deliver(ctx, w.route, ps)
	}
}

// deliver runs one batch of parts through the route's transport. Each part
// is done as soon as the transport calls its job's Done (or, for those it
// did not, once Deliver returns), while the transport goes on with the rest
// of the batch: a crash repeats only deliveries not yet recorded, so
// recording a delivery early shrinks that window from a whole batch to one
// message. The records still share journal flushes: those appended while
// one flush runs go in the next.
func (e *Engine) deliver(ctx context.Context, rt *Route, ps []*part) {
	now := time.Now()
	jobs := make([]*transport.Job, 0, len(ps))
	jobParts := make([]*part, 0, len(ps))
	for _, p := range ps {
		d := p.c.d
		if p.c.expiring(now) {
			// Waited too long: the queue may already have handed these
			// recipients to someone else. Leave them to it.
			e.Log.Warn("delivery lease expired before start", "id", d.ID, "route", rt.Name)
			e.finish(ctx, rt, p, nil)
			continue
		}
		if ctx.Err() != nil {
			e.finish(ctx, rt, p, []transport.Result{})
			continue
		}
		env := mail.Envelope{Sender: d.Sender, Recipients: make([]string, len(p.idx))}
		for k, i := range p.idx {
			env.Recipients[k] = d.Recipients[i]
		}
		j := &transport.Job{
			ID:       d.ID,
			Envelope: env,
			Size:     d.Size,
			Open:     func() (io.ReadCloser, error) { return d.Open() },
		}
		j.OnDone = func() {
			if len(j.Results) != len(j.Envelope.Recipients) {
				j.Fill(mail.Temp("4.3.0", "transport gave no result"), "")
			}
			fp, rs := p, j.Results
			if rt.Fallback != nil && len(rt.Fallback.On) > 0 {
				fp, rs = e.fallBack(ctx, rt, p, rs)
			}
			e.finish(ctx, rt, fp, rs)
		}
		jobs = append(jobs, j)
		jobParts = append(jobParts, p)
	}
	if len(jobs) == 0 {
		return
	}
	rt.Transport.Deliver(ctx, jobs)
	for _, j := range jobs {
		j.Done()
	}
	if rt.Pacing != nil {
		now := time.Now()
		for k, j := range jobs {
			rt.Pacing.observe(rt.Pacing.key(jobParts[k]), j.Results, now)
		}
	}
}

// finish files the results of one part (nil: not attempted, a lease that
// ran out; empty: stopped before it started) and, when it was the last
// part of its delivery, records the delivery and frees its slot.
func (e *Engine) finish(ctx context.Context, rt *Route, p *part, results []transport.Result) {
	c := p.c
	name, via := "", ""
	if rt != nil {
		name, via = rt.Name, rt.Via
	}
	debug := e.Log.Enabled(ctx, slog.LevelDebug)
	c.mu.Lock()
	c.tried = c.tried || results != nil
	for k, i := range p.idx {
		if k >= len(results) {
			break
		}
		r, rcpt := results[k], c.d.Recipients[i]
		c.results[i] = queue.Result{Recipient: rcpt, Status: r.Status, Route: cmp.Or(name, via), Host: r.Host, Destination: r.Destination,
			TLSPolicy: r.TLSPolicy}
		c.has[i] = true
		if e.Metrics != nil {
			e.Metrics.Deliveries.WithLabelValues(name, r.Status.Class.String()).Inc()
			if r.TLSPolicy != "" {
				e.Metrics.TLSPolicy.WithLabelValues(r.TLSPolicy, r.Status.Class.String()).Inc()
			}
		}
		if debug {
			e.Log.Debug("delivery", "id", c.d.ID, "rcpt", rcpt, "route", name, "via", via, "host", r.Host,
				"tls_policy", r.TLSPolicy, "status", r.Status.SMTPText(), "result", r.Status.Class.DeliveryResult(),
				"code", r.Status.EnhancedCode(), "delay", time.Since(c.d.Received).Round(time.Millisecond))
		}
	}
	c.left--
	last := c.left == 0
	c.mu.Unlock()
	if !last {
		return
	}
	e.records.Add(1)
	e.recorders.Go(func() {
		defer e.records.Done()
		defer e.releaseSlot(c)
		if !c.tried {
			return // every part's lease ran out: the queue has them back
		}
		qr := make([]queue.Result, 0, len(c.results))
		for i, r := range c.results {
			if c.has[i] {
				qr = append(qr, r)
			}
		}
		// Record even when ctx is ending: a delivered recipient must be
		// marked.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := e.Queue.Record(rctx, c.d, qr); err != nil && !errors.Is(err, context.Canceled) {
			e.Log.Error("cannot record delivery results", "id", c.d.ID, "err", err)
		}
	})
}
