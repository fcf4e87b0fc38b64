package relay

import (
	"context"
	"errors"
	"sync"
	"time"

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
	// and recipients still to deliver (held messages included).
	Remaining, RemainingRecipients int
}

// Drain takes the hub away without stranding its queue: /readyz fails at
// once, the listeners close and the sessions under way finish, deliveries
// go on until the queue is empty or timeout passes, then the delivery
// engine stops and whatever is left (held messages excepted) is handed to
// the first of peers that answers over QMTP (none: no hand-off). The hub
// is shut down when Drain returns; the queue stays on disk with what
// could not be moved, which Remaining counts.
func (h *Hub) Drain(ctx context.Context, timeout time.Duration, peers []string) (DrainResult, error) {
	var res DrainResult
	h.draining.Store(true)
	h.log.Info("draining: no new connections", "deliveries_for", timeout, "handoff", peers)
	h.shutdownServers(ctx)
	if h.queue == nil {
		return res, h.Shutdown(ctx)
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
	// Stop the engine (and the control socket) before the hand-off, so no
	// delivery races it for the same recipients.
	if h.cancel != nil {
		h.cancel()
	}
	h.wg.Wait()
	var err error
	if len(peers) > 0 && h.queue.Metrics().PendingRecipients > 0 {
		res.Handoff, err = Handoff(ctx, h.queue, h.handoffOptions(peers))
		h.log.Info("hand-off done", "messages", res.Handoff.Messages, "recipients", res.Handoff.Recipients,
			"refused", res.Handoff.Refused)
		if err != nil {
			h.log.Error("hand-off stopped", "err", err)
		}
	}
	m := h.queue.Metrics()
	res.Remaining, res.RemainingRecipients = m.Messages, m.PendingRecipients
	if serr := h.Shutdown(ctx); err == nil {
		err = serr
	}
	return res, err
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

// handoffOptions hands off to peers with the TLS of [shutdown].
func (h *Hub) handoffOptions(peers []string) HandoffOptions {
	sd := h.cfg.Shutdown
	return HandoffOptions{Peers: peers, CAFile: sd.CAFile, CertFile: sd.CertFile, KeyFile: sd.KeyFile, Log: h.log}
}
