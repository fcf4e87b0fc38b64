package relay

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
)

// rejectReason names a refusal for the rejected-messages metric.
func rejectReason(st mail.Status) string {
	switch st.EnhancedCode() {
	case "5.3.4":
		return "size"
	case "5.4.6":
		return "hops"
	case "5.7.1":
		return "relay"
	case "5.1.3", "5.1.7":
		return "address"
	case "5.1.2":
		return "route"
	}
	if st.IsTemporary() {
		return "temporary"
	}
	return "other"
}

// acceptText is the text of a K or 250 reply: the queue ID, where qmail puts
// its qmail-queue pid ("ok 1700000000 qp 4242"), so a sender's log line can
// be matched with ours.
func acceptText(id string) mail.Status {
	return mail.OK("ok " + strconv.FormatInt(time.Now().Unix(), 10) + " qp " + id)
}

func (h *Hub) countReject(proto string, st mail.Status) {
	if h.metrics != nil && !st.IsAccept() {
		h.metrics.Rejected.WithLabelValues(proto, rejectReason(st)).Inc()
	}
}

func (h *Hub) logAccepted(proto string, c *mail.ConnInfo, id string, size int64, env mail.Envelope) {
	if h.metrics != nil {
		h.metrics.Accepted.WithLabelValues(proto).Inc()
	}
	client := ""
	if ip := c.RemoteIP(); ip.IsValid() {
		client = ip.String()
	} else if c.RemoteAddr != nil {
		client = c.RemoteAddr.String()
	}
	h.log.LogAttrs(context.Background(), slog.LevelInfo, "accepted", slog.String("id", id),
		slog.String("client", client), slog.String("proto", c.Proto), slog.Int64("size", size),
		slog.String("from", env.Sender), slog.Int("rcpts", len(env.Recipients)), slog.String("auth", c.AuthUser))
}

// ServeQMTP commits a QMTP package: the body streams into a queue writer, the
// recipients pass policy one by one, and only the accepted ones are
// committed. Every accepted recipient hears K only after the commit.
func (h *Hub) ServeQMTP(ctx context.Context, req *qmtp.Request) []mail.Status {
	pol := h.state.Load().policy
	w, werr := h.queue.NewMessage(ctx)
	var cerr error
	if werr == nil {
		_, cerr = w.ReadFrom(req.Body)
	}
	env, err := req.Envelope()
	if err != nil {
		if w != nil {
			w.Abort()
		}
		return nil // the server answers (or closes) for malformed packages
	}
	out := make([]mail.Status, len(env.Recipients))
	fail := func(st mail.Status) []mail.Status {
		for i := range out {
			out[i] = st
		}
		h.countReject("QMTP", st)
		return out
	}
	if werr != nil {
		h.log.Error("queue: cannot start a message", "err", werr)
		return fail(mail.StatusOf(werr))
	}
	if cerr != nil {
		w.Abort()
		return fail(mail.StatusOf(cerr))
	}
	var accepted []string
	for i, r := range env.Recipients {
		out[i] = pol.Recipient(req.Conn, r)
		if out[i].IsAccept() {
			accepted = append(accepted, r)
		} else {
			h.countReject("QMTP", out[i])
		}
	}
	if len(accepted) == 0 {
		w.Abort()
		return out
	}
	id, err := w.Commit(ctx, mail.Envelope{Sender: env.Sender, Recipients: accepted})
	st := acceptText(id)
	if err != nil {
		h.log.Error("queue: commit failed", "err", err)
		st = mail.StatusOf(err)
		h.countReject("QMTP", st)
	} else {
		h.logAccepted("QMTP", req.Conn, id, w.Size(), mail.Envelope{Sender: env.Sender, Recipients: accepted})
	}
	for i := range out {
		if out[i].IsAccept() {
			out[i] = st
		}
	}
	return out
}

// ServeQMQP commits a QMQP request. QMQP has one reply for the whole
// message, so a recipient refused by policy refuses the message.
func (h *Hub) ServeQMQP(ctx context.Context, req *qmqp.Request) mail.Status {
	pol := h.state.Load().policy
	w, werr := h.queue.NewMessage(ctx)
	var cerr error
	if werr == nil {
		_, cerr = w.ReadFrom(req.Body)
	}
	env, err := req.Envelope()
	switch {
	case err != nil:
		if w != nil {
			w.Abort()
		}
		st := mail.StatusOf(err)
		h.countReject("QMQP", st)
		return st
	case werr != nil:
		h.log.Error("queue: cannot start a message", "err", werr)
		st := mail.StatusOf(werr)
		h.countReject("QMQP", st)
		return st
	case cerr != nil:
		w.Abort()
		st := mail.StatusOf(cerr)
		h.countReject("QMQP", st)
		return st
	}
	for _, r := range env.Recipients {
		if st := pol.Recipient(req.Conn, r); !st.IsAccept() {
			w.Abort()
			h.countReject("QMQP", st)
			return st
		}
	}
	id, err := w.Commit(ctx, env)
	if err != nil {
		h.log.Error("queue: commit failed", "err", err)
		st := mail.StatusOf(err)
		h.countReject("QMQP", st)
		return st
	}
	h.logAccepted("QMQP", req.Conn, id, w.Size(), env)
	return acceptText(id)
}

// smtpHandler is the hub as smtp.Handler.
type smtpHandler struct{ h *Hub }

// Sender accepts any syntactically valid reverse-path: qmgate does no sender
// verification (the recipients' side decides on relaying).
func (s smtpHandler) Sender(ctx context.Context, c *mail.ConnInfo, from string) mail.Status {
	if !mail.ValidAddress(from) {
		return mail.StatusBadSender
	}
	return mail.OK("")
}

// Recipient applies the policy: rcpthosts for everyone, anywhere for relay
// clients and authenticated users.
func (s smtpHandler) Recipient(ctx context.Context, c *mail.ConnInfo, from, rcpt string) mail.Status {
	st := s.h.state.Load().policy.Recipient(c, rcpt)
	s.h.countReject("SMTP", st)
	return st
}

// Deliver commits the message; 250 only once it is durable.
func (s smtpHandler) Deliver(ctx context.Context, c *mail.ConnInfo, env mail.Envelope, body io.Reader) mail.Status {
	w, err := s.h.queue.NewMessage(ctx)
	if err != nil {
		s.h.log.Error("queue: cannot start a message", "err", err)
		io.Copy(io.Discard, body)
		return mail.StatusOf(err)
	}
	if _, err := w.ReadFrom(body); err != nil {
		w.Abort()
		st := mail.StatusOf(err)
		s.h.countReject("SMTP", st)
		return st
	}
	id, err := w.Commit(ctx, env)
	if err != nil {
		s.h.log.Error("queue: commit failed", "err", err)
		st := mail.StatusOf(err)
		s.h.countReject("SMTP", st)
		return st
	}
	s.h.logAccepted("SMTP", c, id, w.Size(), env)
	return acceptText(id)
}
