package relay

import (
	"bytes"
	"cmp"
	"context"
	"io"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/relay/transport"
)

// requeue queues a message again into the hub's queue: a forward made by
// a local route's control file (dot-qmail(5)), or a bounce to an SRS
// address returned to the original sender. The message is prefix (its
// Delivered-To line) followed by body, and its hops are counted as the
// servers count them, so a forwarding loop that LoopCheck does not catch
// still ends at max_hops, with a bounce.
func (h *Hub) requeue(ctx context.Context, env mail.Envelope, prefix []byte, body io.Reader) error {
	q := h.queue
	if q == nil {
		return mail.Temp("4.3.0", "the queue is not open")
	}
	w, err := q.NewMessage(ctx)
	if err != nil {
		return err
	}
	// No size limit: the message was accepted already, and a forward adds
	// only its Delivered-To line.
	hops := cmp.Or(h.cfg.MaxHops, mail.DefaultMaxHops)
	br := mail.NewBodyReader(io.MultiReader(bytes.NewReader(prefix), body), 0, hops)
	if _, err := w.ReadFrom(br); err != nil {
		w.Abort()
		return err
	}
	id, err := w.Commit(ctx, env)
	if err != nil {
		return err
	}
	h.log.Info("message queued again", "id", id, "sender", env.Sender, "recipients", env.Recipients)
	return nil
}

// wireRequeue gives the routes that forward (maildir and mbox routes,
// whose users' control files may forward) the hub's queue.
func (h *Hub) wireRequeue(r *Router) {
	for _, rt := range r.Routes {
		if t, ok := rt.Transport.(transport.Requeuer); ok {
			t.SetRequeue(h.requeue)
		}
	}
}
