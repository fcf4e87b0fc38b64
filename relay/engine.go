package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/qmgate/qmgate/internal/workers"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
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
	// leaseMargin: a delivery whose lease ends sooner than this is not
	// started, because the queue may hand its recipients out again.
	leaseMargin = time.Minute
)

// Engine moves mail from the queue to the transports: it claims due work,
// routes each recipient group, runs it on the route's workers (at most the
// route's concurrency at once, batching messages that wait for the same
// route), and records the per-recipient results in the queue, which
// reschedules, backs off per destination and bounces.
type Engine struct {
	Queue *queue.Queue
	// Routes returns the current route table; a reload swaps it.
	Routes func() *Router
	Log    *slog.Logger
	// Metrics may be nil.
	Metrics     *Metrics
	MaxInFlight int
	MaxBatch    int
	// Grace is how long deliveries under way may continue after Run's ctx
	// ends (a stop), before their own context is cancelled. Default 30s.
	Grace time.Duration

	mu      sync.Mutex
	workers map[*Route]*routeWorkers
	tokens  chan struct{}
	wg      sync.WaitGroup
	// recorders run the Records of finished jobs on reused goroutines.
	recorders workers.Pool
}

// routeWorkers is the FIFO of claimed deliveries waiting for one route.
type routeWorkers struct {
	route   *Route
	mu      sync.Mutex
	cond    *sync.Cond
	pending []*queue.Delivery
	closed  bool
	running int
}

// Run delivers until ctx ends, then waits for deliveries under way to be
// recorded (they are bounded by the transports' own timeouts and ctx).
func (e *Engine) Run(ctx context.Context) error {
	if e.MaxInFlight <= 0 {
		e.MaxInFlight = DefaultMaxInFlight
	}
	if e.MaxBatch <= 0 {
		e.MaxBatch = DefaultMaxBatch
	}
	if e.Grace <= 0 {
		e.Grace = 30 * time.Second
	}
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
			rt := router.Lookup(d.Recipients[0])
			if rt == nil {
				// A reload removed the route after acceptance: keep the
				// mail and say why; the administrator can add a route.
				e.record(dctx, nil, d, nil, mail.Temp("4.4.4", "no route for this domain"), "")
				<-e.tokens
				continue
			}
			e.worker(dctx, rt).push(d)
		}
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
		if !containsRoute(cur, old) {
			ow.close()
			delete(e.workers, old)
		}
	}
	w = &routeWorkers{route: rt}
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

func containsRoute(r *Router, rt *Route) bool {
	for _, x := range r.Routes {
		if x == rt {
			return true
		}
	}
	return false
}

func (w *routeWorkers) push(d *queue.Delivery) {
	w.mu.Lock()
	w.pending = append(w.pending, d)
	w.mu.Unlock()
	w.cond.Signal()
}

func (w *routeWorkers) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cond.Broadcast()
}

// take waits for work and returns up to max deliveries, or nil once closed
// and drained.
func (w *routeWorkers) take(max int) []*queue.Delivery {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.pending) == 0 {
		if w.closed {
			return nil
		}
		w.cond.Wait()
	}
	n := min(max, len(w.pending))
	out := make([]*queue.Delivery, n)
	copy(out, w.pending)
	w.pending = append(w.pending[:0], w.pending[n:]...)
	if len(w.pending) > 0 {
		w.cond.Signal()
	}
	return out
}

func (e *Engine) work(ctx context.Context, w *routeWorkers) {
	for {
		ds := w.take(e.MaxBatch)
		if ds == nil {
			return
		}
		e.deliver(ctx, w.route, ds)
		for range ds {
			<-e.tokens
		}
	}
}

// deliver runs one batch through the route's transport and records it.
func (e *Engine) deliver(ctx context.Context, rt *Route, ds []*queue.Delivery) {
	now := time.Now()
	jobs := make([]*Job, 0, len(ds))
	live := make([]*queue.Delivery, 0, len(ds))
	for _, d := range ds {
		if d.LeaseUntil.Sub(now) < leaseMargin {
			// Waited too long: the queue may already have handed these
			// recipients to someone else. Leave them to it.
			e.Log.Warn("delivery lease expired before start", "id", d.ID, "route", rt.Name)
			continue
		}
		if ctx.Err() != nil {
			e.Queue.Record(context.Background(), d, nil)
			continue
		}
		d := d
		jobs = append(jobs, &Job{
			ID:       d.ID,
			Envelope: d.Envelope(),
			Size:     d.Size,
			Open:     func() (io.ReadCloser, error) { return d.Open() },
		})
		live = append(live, d)
	}
	if len(jobs) == 0 {
		return
	}
	// Each job is recorded as soon as the transport calls its Done (or,
	// for those it did not, once Deliver returns), while the transport
	// goes on with the rest of the batch: a crash repeats only deliveries
	// not yet recorded, so recording a job early shrinks that window from
	// a whole batch to one message. The records still share journal
	// flushes: those appended while one flush runs go in the next.
	var wg sync.WaitGroup
	for i, d := range live {
		j := jobs[i]
		j.done = func() {
			if len(j.Results) != len(j.Envelope.Recipients) {
				j.fill(mail.Temp("4.3.0", "transport gave no result"), "")
			}
			wg.Add(1)
			e.recorders.Go(func() {
				defer wg.Done()
				e.record(ctx, rt, d, j.Results, mail.Status{}, "")
			})
		}
	}
	rt.Transport.Deliver(ctx, jobs)
	for _, j := range jobs {
		j.Done()
	}
	wg.Wait()
}

// record turns transport results into queue results, logs one line per
// recipient and counts them. With results nil, every recipient gets st.
func (e *Engine) record(ctx context.Context, rt *Route, d *queue.Delivery, results []Result, st mail.Status, host string) {
	name, via := "", ""
	if rt != nil {
		name, via = rt.Name, rt.Via
	}
	qr := make([]queue.Result, len(d.Recipients))
	debug := e.Log.Enabled(ctx, slog.LevelDebug)
	for i, rcpt := range d.Recipients {
		r := Result{Status: st, Host: host}
		if results != nil {
			r = results[i]
		}
		qr[i] = queue.Result{Recipient: rcpt, Status: r.Status, Route: via, Host: r.Host}
		if e.Metrics != nil {
			e.Metrics.Deliveries.WithLabelValues(name, r.Status.Class.String()).Inc()
		}
		if debug {
			e.Log.Debug("delivery", "id", d.ID, "rcpt", rcpt, "route", via, "host", r.Host,
				"status", string(r.Status.Reply()), "delay", time.Since(d.Received).Round(time.Millisecond))
		}
	}
	// Record even when ctx is ending: a delivered recipient must be marked.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := e.Queue.Record(rctx, d, qr); err != nil && !errors.Is(err, context.Canceled) {
		e.Log.Error("cannot record delivery results", "id", d.ID, "err", err)
	}
}
