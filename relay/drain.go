package relay

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/queue"
)

// Ready reports whether the hub wants new connections: its listeners are
// serving, it is not draining, and its queue can take mail (open, writable,
// above the free-space reserve). It answers /readyz, which a load balancer
// or orchestrator asks before sending connections; /healthz says only that
// the process is alive.
func (h *Hub) Ready() error {
	switch {
	case h.draining.Load():
		return errors.New("draining")
	case !h.started.Load() || h.queue == nil:
		return errors.New("not started")
	}
	if err := h.queue.Ready(); err != nil {
		return errors.New(plainQueueError(err))
	}
	return nil
}

// plainQueueError words a queue readiness error for a person.
func plainQueueError(err error) string {
	switch {
	case errors.Is(err, queue.ErrLowSpace):
		return "queue file system below its free-space reserve"
	case errors.Is(err, queue.ErrClosed):
		return "queue closed"
	}
	return "queue not writable"
}

// drainPoll is how often Drain looks whether the queue has emptied.
const drainPoll = 100 * time.Millisecond

// DrainResult says how a drain ended.
type DrainResult struct {
	Handoff HandoffResult
	// Remaining counts what is still queued when the hub stops: messages,
	// and recipients still to deliver (held messages included), and the
	// held messages among them.
	Remaining, RemainingRecipients, RemainingHeld int
}

// drainState lets a drain happen once, whoever asks first (SIGTERM or
// `qmgate drain` over the control socket), and lets the others wait for
// its result. The delivery engine has its own stop, so that a drain can
// stop it before the hand-off while the control socket and /readyz keep
// answering.
type drainState struct {
	once       sync.Once
	initOnce   sync.Once
	reported   chan struct{} // closed once res and err are set, before the hub shuts down
	done       chan struct{} // closed once the hub is shut down
	res        DrainResult
	err        error
	stopEngine context.CancelFunc
	engineDone chan struct{}
}

func (d *drainState) init() {
	d.initOnce.Do(func() {
		d.reported, d.done = make(chan struct{}), make(chan struct{})
	})
}

// engineContext derives the delivery engine's context from ctx.
func (d *drainState) engineContext(ctx context.Context) context.Context {
	ctx, d.stopEngine = context.WithCancel(ctx)
	d.engineDone = make(chan struct{})
	return ctx
}

// engineStopped is called when the engine's Run returns.
func (d *drainState) engineStopped() { close(d.engineDone) }

// Drained is closed when a drain (however started) has finished and the
// hub is shut down: the daemon then exits with DrainOutcome's verdict.
func (h *Hub) Drained() <-chan struct{} {
	h.drain.init()
	return h.drain.done
}

// DrainOutcome is the result of the drain once Drained is closed.
func (h *Hub) DrainOutcome() (DrainResult, error) {
	h.drain.init()
	<-h.drain.reported
	return h.drain.res, h.drain.err
}

// Drain takes the hub away without stranding its queue: /readyz fails at
// once, after [shutdown] ready_grace the listeners close and the sessions
// under way finish, deliveries
// go on until the queue is empty or timeout passes, then the delivery
// engine stops and whatever is left (held messages excepted) is handed to
// the first of peers that answers over QMTP or QMTPS (none: no hand-off).
// The hub is shut down when Drain returns; the queue stays on disk with
// what could not be moved, which Remaining counts. A second Drain (a
// SIGTERM during `qmgate drain`, say) waits for the first one's result.
func (h *Hub) Drain(ctx context.Context, timeout time.Duration, peers []string) (DrainResult, error) {
	h.startDrain(ctx, timeout, peers)
	<-h.drain.done
	return h.drain.res, h.drain.err
}

// startDrain starts the drain unless one is under way, and returns at once.
func (h *Hub) startDrain(ctx context.Context, timeout time.Duration, peers []string) {
	h.drain.init()
	h.drain.once.Do(func() {
		go func() {
			defer close(h.drain.done)
			h.drain.res, h.drain.err = h.drainQueue(ctx, timeout, peers)
			close(h.drain.reported)
			if err := h.Shutdown(ctx); h.drain.err == nil && err != nil {
				h.log.Error("shutdown after the drain", "err", err)
			}
		}()
	})
}

// drainQueue is Drain up to the shutdown.
func (h *Hub) drainQueue(ctx context.Context, timeout time.Duration, peers []string) (DrainResult, error) {
	var res DrainResult
	h.draining.Store(true)
	// /readyz fails first; the listeners close after the grace, so that a
	// load balancer stops sending before connections are refused.
	if g := h.state.Load().cfg.Shutdown.ReadyGrace; g != nil && g.D() > 0 {
		h.log.Info("draining: /readyz fails, listeners close after the grace", "ready_grace", g.D())
		select {
		case <-time.After(g.D()):
		case <-ctx.Done():
		}
	}
	h.log.Info("draining: no new connections", "deliveries_for", timeout, "handoff", peers)
	h.shutdownServers(ctx)
	if h.queue == nil {
		return res, nil
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
wait:
	for {
		if m := h.queue.Metrics(); m.Messages == m.Held {
			break
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	// Stop the engine before the hand-off, so no delivery races it for
	// the same recipients; the control socket and /readyz go on.
	if h.drain.stopEngine != nil {
		h.drain.stopEngine()
		<-h.drain.engineDone
	}
	var err error
	if len(peers) > 0 && h.queue.Metrics().PendingRecipients > 0 {
		res.Handoff, err = Handoff(ctx, h.queue, h.handoffOptions(peers, false))
		h.log.Info("hand-off done", "messages", res.Handoff.Messages, "recipients", res.Handoff.Recipients,
			"refused", res.Handoff.Refused)
		if err != nil {
			h.log.Error("hand-off stopped", "err", err)
		}
	}
	m := h.queue.Metrics()
	res.Remaining, res.RemainingRecipients, res.RemainingHeld = m.Messages, m.PendingRecipients, m.Held
	return res, err
}

// controlDrain is the hub's queue.Drainer: `qmgate drain` and `qmgate
// queue handoff` while the daemon runs.
func (h *Hub) controlDrain(ctx context.Context, op string, req queue.DrainRequest) queue.DrainReport {
	sd := h.state.Load().cfg.Shutdown
	peers := req.Peers
	if len(peers) == 0 {
		peers = sd.Handoff
	}
	var rep queue.DrainReport
	report := func(hr HandoffResult, err error) queue.DrainReport {
		rep.HandedOffMessages, rep.HandedOffRecipients, rep.Refused = hr.Messages, hr.Recipients, hr.Refused
		if err != nil {
			rep.Problem = plainHandoffError(err)
		}
		return rep
	}
	if op == "handoff" {
		if len(peers) == 0 {
			rep.Problem = "no peer named, and none configured in [shutdown] handoff"
			return rep
		}
		hr, err := Handoff(ctx, h.queue, h.handoffOptions(peers, req.Held))
		m := h.queue.Metrics()
		rep.Remaining, rep.RemainingRecipients, rep.RemainingHeld = m.Messages, m.PendingRecipients, m.Held
		return report(hr, err)
	}
	timeout := sd.DrainTimeout.D()
	if req.TimeoutMS > 0 {
		timeout = time.Duration(req.TimeoutMS) * time.Millisecond
	}
	// The drain has its own time, not the client's: a preStop hook that
	// is killed must not stop it half-way.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout+DrainHandoffGrace)
	h.startDrain(dctx, timeout, peers)
	go func() { <-h.drain.done; cancel() }()
	res, err := h.DrainOutcome()
	rep.Remaining, rep.RemainingRecipients, rep.RemainingHeld = res.Remaining, res.RemainingRecipients, res.RemainingHeld
	return report(res.Handoff, err)
}

// DrainHandoffGrace bounds the hand-off after a drain's deliveries.
const DrainHandoffGrace = 10 * time.Minute

// plainHandoffError words a hand-off's error for the person who asked.
func plainHandoffError(err error) string {
	var de *qmtp.DialError
	switch {
	case errors.As(err, &de):
		return "no peer could be reached: " + de.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "the hand-off ran out of time"
	}
	return err.Error()
}

// shutdownServers closes every listener at once and waits until the
// sessions under way have finished or ctx ends: the first step of both a
// drain and a shutdown.
func (h *Hub) shutdownServers(ctx context.Context) {
	var wg sync.WaitGroup
	for _, s := range []interface{ Shutdown(context.Context) error }{h.qmtpSrv, h.qmqpSrv, h.smtpSrv, h.subSrv} {
		if s == nil {
			continue
		}
		wg.Go(func() { s.Shutdown(ctx) })
	}
	wg.Wait()
}

// handoffOptions hands off to peers with the TLS of [shutdown] in force.
func (h *Hub) handoffOptions(peers []string, held bool) HandoffOptions {
	sd := h.state.Load().cfg.Shutdown
	return HandoffOptions{Peers: peers, Held: held, CAFile: sd.CAFile, CertFile: sd.CertFile, KeyFile: sd.KeyFile, Log: h.log}
}
