package relay

import (
	"errors"

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
