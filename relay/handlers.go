package relay

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/qmgate/qmgate/internal/qmail"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
)

// Handlers are the hub's protocol handlers: each message streams into a
// Sink message, its recipients pass the Policy, and only the accepted ones
// are committed; the client hears K or 250 only after the commit. `qmgate
// serve` commits to the durable queue (QueueSink), the tcpserver drop-ins
// to $QMAILQUEUE's program (qmail.ProgramSink) or to the daemon's QMQP
// socket (QMQPSink).
type Handlers struct {
	Sink qmail.Sink
	// Policy returns the policy in force (it changes on reload).
	Policy func() *Policy
	Log    *slog.Logger
	// Metrics counts accepted and refused messages; nil counts nothing.
	Metrics *Metrics
	// Identity returns the masquerading and DKIM signing in force for
	// trusted submitters' mail (it changes on reload); nil, or a nil
	// result, does neither. It needs a sink whose messages take a prefix
	// (QueueSink).
	Identity func() *Identity
}

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

// counter counts the body bytes on their way into a sink message.
type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// copyBufBytes is the buffer a message's body is copied through into its
// sink message. Below the trace filter's small header buffer the reads go
// straight to the connection, so the buffer's size is the most one read
// system call takes in: 64 KiB brings a 256 KiB body in with four reads
// (loopback and a fast network deliver that much at once) where io.Copy's
// 32 KiB takes eight.
const copyBufBytes = 64 << 10

// copyBufs and traceReaders recycle each message's copy buffer and the
// trace filter's line buffer: allocated per message they were most of the
// garbage of small messages (36 KiB each), and a cost of large ones.
var (
	copyBufs     = sync.Pool{New: func() any { b := make([]byte, copyBufBytes); return &b }}
	traceReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, traceBufBytes) }}
)

// copyBody copies body into w through a pooled buffer. Neither side's
// ReadFrom or WriteTo is used: they would bring their own smaller buffers.
func copyBody(w io.Writer, body io.Reader) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// begin starts a sink message and streams body into it, through the
// Identity's rewriting and signing when c is a trusted submitter. A nil
// message comes with the error to answer with.
func (h *Handlers) begin(ctx context.Context, c *mail.ConnInfo, body io.Reader) (qmail.Message, *counter, *stamp, error) {
	msg, err := h.Sink.Begin(ctx)
	if err != nil {
		io.Copy(io.Discard, body)
		return nil, nil, nil, err
	}
	cn := &counter{w: msg}
	// The hand-off trace header never passes; only a trusted peer's
	// continues the message (handoff_trace.go).
	br := traceReaders.Get().(*bufio.Reader)
	br.Reset(body)
	defer func() {
		br.Reset(nil) // the body is read to its end or given up on
		traceReaders.Put(br)
	}()
	tf := &traceFilter{br: br, inHeader: true, lineStart: true}
	body = tf
	var w io.Writer = cn
	var st *stamp
	if id := h.identity(c); id != nil {
		if _, ok := msg.(prefixer); ok {
			st, body, err = id.start(body)
			if err != nil {
				st.abort()
				msg.Abort()
				return nil, nil, nil, err
			}
			if st.dw != nil {
				w = io.MultiWriter(cn, st)
			}
		}
	}
	if err := copyBody(w, body); err != nil {
		st.abort()
		msg.Abort()
		return nil, nil, nil, err
	}
	if cont, ok := tf.continuation(); ok && handoffTrusted(c) {
		if cm, ok := msg.(continuer); ok {
			cm.SetContinuation(cont)
		}
	}
	return msg, cn, st, nil
}

// identity returns the Identity that applies to mail from c, or nil.
func (h *Handlers) identity(c *mail.ConnInfo) *Identity {
	if h.Identity == nil || !Trusted(c) {
		return nil
	}
	return h.Identity()
}

// commit ends a sink message, logs and counts the outcome.
func (h *Handlers) commit(ctx context.Context, proto string, c *mail.ConnInfo, msg qmail.Message, st *stamp, size int64, env mail.Envelope, lim *Tally) mail.Status {
	if s := lim.Message(); !s.IsAccept() {
		st.abort()
		msg.Abort()
		h.refuse(ctx, proto, c, env.Sender, env.Recipients, s)
		return s
	}
	if st != nil {
		if err := st.finish(ctx, h.Log, msg, &env); err != nil {
			msg.Abort()
			h.Log.LogAttrs(ctx, slog.LevelError, "cannot store the message's signatures", slog.String("err", err.Error()))
			h.refuse(ctx, proto, c, env.Sender, env.Recipients, mail.StatusQueueTrouble)
			return mail.StatusQueueTrouble
		}
	}
	res := msg.Commit(ctx, env)
	if !res.Status.IsAccept() {
		if res.Problem != "" {
			// The sink's own reason (the daemon not running, say) is for
			// the operator; the client gets only the status.
			h.Log.Warn("not queued", "problem", res.Problem)
		}
		h.refuse(ctx, proto, c, env.Sender, env.Recipients, res.Status)
		return res.Status
	}
	lim.Count()
	o := originOf(ctx, proto, c)
	if h.Metrics != nil {
		h.Metrics.Accepted.WithLabelValues(o.proto).Inc()
	}
	attrs := append([]slog.Attr{slog.String("id", res.ID)}, o.attrs()...)
	attrs = append(attrs, slog.Int64("size", size), slog.String("from", env.Sender), slog.Int("rcpts", len(env.Recipients)))
	if c.AuthUser != "" {
		attrs = append(attrs, slog.String("auth", c.AuthUser))
	}
	h.Log.LogAttrs(ctx, slog.LevelInfo, "accepted", attrs...)
	return res.Status
}

// ServeQMTP commits a QMTP package: the recipients pass policy one by one
// (qmail-qmtpd refuses a bad recipient alone), and the accepted ones share
// the commit's one result.
func (h *Handlers) ServeQMTP(ctx context.Context, req *qmtp.Request) []mail.Status {
	pol := h.Policy()
	msg, n, stp, berr := h.begin(ctx, req.Conn, req.Body)
	env, err := req.Envelope()
	if err != nil {
		if msg != nil {
			stp.abort()
			msg.Abort()
		}
		return nil // the server answers (or closes) for limits and broken packages
	}
	out := make([]mail.Status, len(env.Recipients))
	if berr != nil {
		st := mail.StatusOf(berr)
		for i := range out {
			out[i] = st
		}
		h.refuse(ctx, "QMTP", req.Conn, env.Sender, env.Recipients, st)
		return out
	}
	var accepted []string
	lim := pol.Limits.Start(req.Conn, env.Sender)
	for i, r := range env.Recipients {
		if r, out[i] = pol.Accept(req.Conn, env.Sender, r); out[i].IsAccept() {
			out[i] = lim.Recipients(1)
		}
		if out[i].IsAccept() {
			accepted = append(accepted, r)
		} else {
			h.refuse(ctx, "QMTP", req.Conn, env.Sender, env.Recipients[i:i+1], out[i])
		}
	}
	if len(accepted) == 0 {
		stp.abort()
		msg.Abort()
		return out
	}
	st := h.commit(ctx, "QMTP", req.Conn, msg, stp, n.n, mail.Envelope{Sender: env.Sender, Recipients: accepted}, lim)
	for i := range out {
		if out[i].IsAccept() {
			out[i] = st
		}
	}
	return out
}

// ServeQMQP commits a QMQP request. QMQP has one reply for the whole
// message, so a recipient refused by policy refuses the message.
func (h *Handlers) ServeQMQP(ctx context.Context, req *qmqp.Request) mail.Status {
	pol := h.Policy()
	var msg qmail.Message
	var n *counter
	var stp *stamp
	err := pol.Unix.admit(req.Conn)
	body := io.Reader(req.Body)
	if err == nil {
		ctx, body = dropInOrigin(ctx, req.Conn, pol.DropInUsers, body)
		msg, n, stp, err = h.begin(ctx, req.Conn, body)
	}
	env, eerr := req.Envelope()
	var lim *Tally
	if eerr == nil && err == nil {
		if st := pol.Sender(req.Conn, env.Sender); !st.IsAccept() {
			err = st
		}
		for i, r := range env.Recipients {
			if err != nil {
				break
			}
			var st mail.Status
			if env.Recipients[i], st = pol.Accept(req.Conn, env.Sender, r); !st.IsAccept() {
				err = st
			}
		}
		if lim = pol.Limits.Start(req.Conn, env.Sender); err == nil {
			if st := lim.Recipients(len(env.Recipients)); !st.IsAccept() {
				err = st
			}
		}
	}
	if eerr != nil || err != nil {
		if msg != nil {
			stp.abort()
			msg.Abort()
		}
		if eerr != nil {
			err = eerr
		}
		st := mail.StatusOf(err)
		h.refuse(ctx, "QMQP", req.Conn, env.Sender, env.Recipients, st)
		return st
	}
	return h.commit(ctx, "QMQP", req.Conn, msg, stp, n.n, env, lim)
}

// smtpHandler is the hub as smtp.Handler.
type smtpHandler struct{ h *Handlers }

// Sender accepts any syntactically valid reverse-path: qmgate does no sender
// verification (the recipients' side decides on relaying).
func (s smtpHandler) Sender(ctx context.Context, c *mail.ConnInfo, from string) mail.Status {
	st := s.h.Policy().MailFrom(c, from)
	s.h.refuse(ctx, "SMTP", c, from, nil, st)
	return st
}

// Recipient applies the policy: rcpthosts for everyone, anywhere for relay
// clients and authenticated users.
func (s smtpHandler) Recipient(ctx context.Context, c *mail.ConnInfo, from, rcpt string) mail.Status {
	st := s.h.Policy().Rcpt(c, from, rcpt)
	if !st.IsAccept() {
		// Only here: the one-element list would be made for every
		// recipient otherwise, accepted or not.
		s.h.refuse(ctx, "SMTP", c, from, []string{rcpt}, st)
	}
	return st
}

// Deliver commits the message; 250 only once it is durable.
func (s smtpHandler) Deliver(ctx context.Context, c *mail.ConnInfo, env mail.Envelope, body io.Reader) mail.Status {
	msg, n, stp, err := s.h.begin(ctx, c, body)
	if err != nil {
		st := mail.StatusOf(err)
		s.h.refuse(ctx, "SMTP", c, env.Sender, env.Recipients, st)
		return st
	}
	return s.h.commit(ctx, "SMTP", c, msg, stp, n.n, env, s.h.Policy().Limits.Start(c, env.Sender))
}
