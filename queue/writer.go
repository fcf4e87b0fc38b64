package queue

import (
	"bufio"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/qmgate/qmgate/mail"
)

// Writer receives one message body, then commits it with its envelope:
// the order QMTP, QMQP and the qmail-queue interface deliver them in.
//
//	w, err := q.NewMessage(ctx)
//	_, err = io.Copy(w, body)        // or w.ReadFrom(body)
//	id, err := w.Commit(ctx, env)    // durable when it returns nil
//	w.Abort()                        // after a failure; a no-op after Commit
//
// A body of up to Options.InlineMax bytes is buffered and written into the
// journal with the envelope; a larger one streams to its own file. Nothing
// becomes visible before Commit returns. A Writer is for one goroutine.
type Writer struct {
	q    *Queue
	id   string
	buf  []byte
	bp   *[]byte // buf's pool entry
	big  bool    // bp came from q.bodyBufs, not bufPool
	f    file
	bw   *bufio.Writer
	n    int64
	crc  uint32
	err  error
	done bool
	// counted is what Write added to the space guard's count of body
	// bytes; Abort gives it back.
	counted int64

	prefix string // SetPrefix
}

// MaxPrefixBytes bounds a message's prefix (Writer.SetPrefix): room for a
// few DKIM signatures and a Received line, small enough for the index to
// hold in memory.
const MaxPrefixBytes = 16 << 10

// ErrPrefixTooLarge is SetPrefix's error for a prefix over MaxPrefixBytes.
var ErrPrefixTooLarge = errors.New("queue: message prefix larger than the limit")

// SetPrefix sets header bytes (whole header lines, such as DKIM-Signature
// fields computed while the body streamed) that go in front of the body
// whenever a delivery reads it back: Delivery.Open and Delivery.Size see
// prefix and body as one message. It is stored in the message's journal
// record, committed with the envelope. Call it before Commit; the last
// call wins.
func (w *Writer) SetPrefix(p []byte) error {
	if len(p) > MaxPrefixBytes {
		return ErrPrefixTooLarge
	}
	w.prefix = string(p)
	return nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

const maxPooledBuf = 64 << 10

// NewMessage starts a message. The ID is fixed now, so it can be logged
// while the body arrives.
func (q *Queue) NewMessage(ctx context.Context) (*Writer, error) {
	w := new(Writer)
	if err := q.startMessage(ctx, w); err != nil {
		return nil, err
	}
	return w, nil
}

// startMessage sets up w for a new message.
func (q *Queue) startMessage(ctx context.Context, w *Writer) error {
	if err := ctx.Err(); err != nil {
		return &Error{Op: "write", Err: err}
	}
	if q.closedFlag.Load() { // Commit checks again under the lock
		return &Error{Op: "write", Err: errClosed}
	}
	if q.lowSpace() {
		return &Error{Op: "write", Err: ErrLowSpace}
	}
	bp := bufPool.Get().(*[]byte)
	*w = Writer{q: q, id: q.ids.next(q.now()), buf: (*bp)[:0], bp: bp}
	return nil
}

// ID returns the message's queue ID.
func (w *Writer) ID() string { return w.id }

// Size returns the body bytes written so far.
func (w *Writer) Size() int64 { return w.n }

// Write adds body bytes. Errors are *Error (temporary) and sticky.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.done {
		return 0, &Error{Op: "write", Err: errors.New("message already committed or aborted")}
	}
	if w.q.opt.MinFreeBytes >= 0 {
		// The bytes count against the reserve before they are written,
		// so concurrent messages cannot all pass a check made before any
		// of them wrote.
		w.q.space.written.Add(int64(len(p)))
		w.counted += int64(len(p))
		if w.q.lowSpace() {
			w.err = &Error{Op: "write", Err: ErrLowSpace}
			return 0, w.err
		}
	}
	if w.f == nil && int64(len(w.buf)+len(p)) <= w.q.opt.InlineMax {
		if len(w.buf)+len(p) > cap(w.buf) {
			w.grow()
		}
		w.buf = append(w.buf, p...)
		w.n += int64(len(p))
		w.crc = crc32.Update(w.crc, castagnoli, p)
		return len(p), nil
	}
	if w.f == nil {
		if err := w.spill(); err != nil {
			w.err = &Error{Op: "write", Err: err}
			return 0, w.err
		}
	}
	n, err := w.bw.Write(p)
	w.n += int64(n)
	w.crc = crc32.Update(w.crc, castagnoli, p[:n])
	if err != nil {
		w.err = &Error{Op: "write", Err: err}
		return n, w.err
	}
	return n, nil
}

// spill moves a body that outgrew InlineMax to body/<ID>.
func (w *Writer) spill() error {
	q := w.q
	q.mu.Lock()
	q.inflight[w.id] = true // keep the janitor off it
	q.mu.Unlock()
	f, err := q.fs.OpenFile(q.bodyPath(w.id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		q.mu.Lock()
		delete(q.inflight, w.id)
		q.mu.Unlock()
		return err
	}
	w.f = f
	w.bw = bufio.NewWriterSize(f, 64<<10)
	_, err = w.bw.Write(w.buf)
	w.releaseBuf()
	return err
}

// grow moves the buffered body into a buffer of InlineMax bytes from the
// queue's pool, once it outgrows the small one it started in. Growing by
// doubling instead cost a third of the CPU of a 256 KiB message (copies,
// zeroing, and returning the discarded arrays to the system).
func (w *Writer) grow() {
	q := w.q
	if q.bodyBufs == nil || w.big {
		return // append grows it
	}
	bp := q.bodyBufs.Get().(*[]byte)
	nb := append((*bp)[:0], w.buf...)
	w.releaseBuf()
	w.buf, w.bp, w.big = nb, bp, true
}

func (w *Writer) releaseBuf() {
	if w.big {
		if w.buf != nil && w.bp != nil && int64(cap(w.buf)) == w.q.opt.InlineMax {
			*w.bp = w.buf[:0]
			w.q.bodyBufs.Put(w.bp)
		}
		w.buf, w.bp, w.big = nil, nil, false
		return
	}
	if w.buf != nil && w.bp != nil && cap(w.buf) <= maxPooledBuf {
		*w.bp = w.buf[:0]
		bufPool.Put(w.bp)
	}
	w.buf, w.bp = nil, nil
}

// ReadFrom copies the body from r. An error from r is returned as it is
// (for example mail.StatusTooBig from a mail.BodyReader); a storage error
// is an *Error.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	buf := (*bp)[:cap(*bp)]
	defer bufPool.Put(bp)
	var total int64
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return total, err
			}
			total += int64(n)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// Commit stores the envelope with the body and returns the message's ID
// once both are on stable storage, shared flush and all. Any error means
// the message is not queued (the caller should answer with a temporary
// failure), except that a ctx ending while the flush runs can leave a
// message queued that the caller was told failed: qmail's duplicate, never
// a loss. Invalid envelopes get a permanent mail.Status.
func (w *Writer) Commit(ctx context.Context, env mail.Envelope) (string, error) {
	q := w.q
	if w.done {
		return "", &Error{Op: "commit", Err: errors.New("message already committed or aborted")}
	}
	if w.err != nil {
		err := w.err
		w.Abort()
		return "", err
	}
	if err := q.checkEnvelope(&env); err != nil {
		w.Abort()
		return "", err
	}
	if err := ctx.Err(); err != nil {
		w.Abort()
		return "", &Error{Op: "commit", Err: err}
	}
	body := bodyRef{size: w.n, crc: w.crc, prefix: w.prefix}
	var inline []byte
	if w.f != nil {
		// The body and its name are made durable here, by this Writer
		// and in parallel with other commits, before its record joins a
		// batch: the group commit then carries only the small record,
		// and no one else's commit waits for this body's flush.
		err := w.bw.Flush()
		if err == nil {
			err = w.f.Sync()
		}
		if cerr := w.f.Close(); err == nil {
			err = cerr
		}
		w.f = nil
		if err == nil {
			err = q.bodyDirSync.do(func() error { return q.fs.SyncDir(q.bodyDir) })
		}
		if err != nil {
			w.err = &Error{Op: "write", Err: err}
			w.Abort()
			return "", w.err
		}
		body.external = true
	} else {
		inline = w.buf
	}
	received := q.now()
	mp := bufPool.Get().(*[]byte)
	meta := encodeMessage((*mp)[:0], w.id, received, &env, body)
	defer putMeta(mp, meta)
	if len(meta) > maxMetaLen/2 { // room for its snapshot's recipient states
		w.Abort()
		return "", mail.StatusTooManyRcpts
	}
	h := recordHeader(recMessage, len(meta), len(inline))
	partial := partialCRC(&h, meta, inline)
	m := newMessage(len(env.Recipients))
	m.received, m.body = received, body
	// The ID, sender and recipients the index keeps share one string: one
	// object for the garbage collector instead of one each.
	var sb strings.Builder
	size := len(w.id) + len(env.Sender)
	for _, a := range env.Recipients {
		size += len(a)
	}
	sb.Grow(size)
	sb.WriteString(w.id)
	sb.WriteString(env.Sender)
	for _, a := range env.Recipients {
		sb.WriteString(a)
	}
	all := sb.String()
	m.id, all = all[:len(w.id)], all[len(w.id):]
	m.sender, all = all[:len(env.Sender)], all[len(env.Sender):]
	for i, a := range env.Recipients {
		a, all = all[:len(a)], all[len(a):]
		m.rcpts[i] = rcpt{addr: a, next: received, dest: q.opt.DestinationOf(env.Sender, a)}
	}

	q.committing.Add(1) // a lingering committer waits for this append
	q.mu.Lock()
	var (
		seq    uint64
		off    int64
		b      *batch
		err    error
		place  placement
		placed bool
	)
	if int64(len(inline)) >= q.placeMin {
		place, placed, err = q.placeLocked(recMessage, meta, inline, partial)
		seq, off, b = place.seq, place.off, place.b
	}
	if !placed && err == nil {
		seq, off, b, err = q.appendLocked(recMessage, meta, inline, partial)
	}
	q.committing.Add(-1)
	if err != nil {
		q.mu.Unlock()
		w.Abort()
		return "", &Error{Op: "commit", Err: err}
	}
	n := int64(recHeaderLen + len(meta) + len(inline))
	if !body.external {
		m.body.seq, m.body.off = seq, off+int64(recHeaderLen+len(meta))
	}
	id := w.id
	q.joinLocked(b)
	b.inserts = append(b.inserts, pendingInsert{m: m, seq: seq, n: n})
	if body.external {
		b.onFail = append(b.onFail, func() {
			delete(q.inflight, id)
			q.unlinkLater(q.bodyPath(id))
		})
	}
	q.mu.Unlock()
	w.done = true
	if placed {
		// The committer writes nothing of this batch until it is done.
		werr := place.write(meta, inline)
		q.mu.Lock()
		place.doneLocked(werr)
		q.mu.Unlock()
	}
	w.releaseBuf() // written, or copied by appendLocked

	if err := b.waitJoined(ctx.Done()); err != nil {
		var qe *Error
		if errors.As(err, &qe) {
			return "", err
		}
		return "", &Error{Op: "commit", Err: err}
	}
	return id, nil
}

// putMeta returns an encoding buffer to bufPool once appendLocked has
// copied it.
func putMeta(p *[]byte, meta []byte) {
	if cap(meta) <= maxPooledBuf {
		*p = meta[:0]
		bufPool.Put(p)
	}
}

// Abort discards the message. It is safe after a failed Write, twice, and
// after Commit (where it does nothing).
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.releaseBuf()
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	// The body is discarded (its file removed below): its bytes no longer
	// count against the reserve.
	w.q.space.written.Add(-w.counted)
	w.counted = 0
	q := w.q
	q.mu.Lock()
	had := q.inflight[w.id]
	delete(q.inflight, w.id)
	q.mu.Unlock()
	if had {
		if err := q.fs.Remove(q.bodyPath(w.id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			q.log.Warn("queue: cannot remove aborted body; the janitor will", "id", w.id, "err", err)
		}
	}
	return nil
}

// checkEnvelope refuses envelopes that can never be queued. The protocol
// servers check first; this is the last line.
func (q *Queue) checkEnvelope(env *mail.Envelope) error {
	if len(env.Recipients) == 0 {
		return mail.StatusNoRecipients
	}
	if len(env.Recipients) > q.opt.MaxRecipients {
		return mail.StatusTooManyRcpts
	}
	if !mail.ValidAddress(env.Sender) {
		return mail.StatusBadAddresses
	}
	for _, r := range env.Recipients {
		if !mail.ValidAddress(r) {
			return mail.StatusBadAddresses
		}
	}
	return nil
}

// Put queues a message whose body is r: NewMessage, ReadFrom, Commit. It
// returns the ID once the message is durable.
func (q *Queue) Put(ctx context.Context, env mail.Envelope, r io.Reader) (string, error) {
	if err := q.checkEnvelope(&env); err != nil {
		return "", err
	}
	var w Writer // on the stack: one allocation less per message
	if err := q.startMessage(ctx, &w); err != nil {
		return "", err
	}
	if _, err := w.ReadFrom(r); err != nil {
		w.Abort()
		return "", err
	}
	return w.Commit(ctx, env)
}

// syncGroup shares one flush among callers that need it at the same time:
// the fsync of body/ after each large body's file is made. A caller joins
// the next round; the first of a round to find no round running performs
// it for all who joined, and everyone of the round gets its result. A
// round starts only after each of its callers has asked, so its fsync
// covers every name they made. Without it, ten Writers of 1 MiB bodies
// made ten directory fsyncs where one would do (BENCHMARKS.md).
type syncGroup struct {
	mu   sync.Mutex
	cond sync.Cond
	busy bool       // a round is running
	next *syncRound // the round being joined
}

type syncRound struct {
	started bool
	done    chan struct{}
	err     error
}

// do runs fn, or waits for a round of fn that starts after this call.
func (g *syncGroup) do(fn func() error) error {
	g.mu.Lock()
	if g.cond.L == nil {
		g.cond.L = &g.mu
	}
	if g.next == nil {
		g.next = &syncRound{done: make(chan struct{})}
	}
	r := g.next
	for g.busy && !r.started {
		g.cond.Wait()
	}
	if r.started {
		g.mu.Unlock()
		<-r.done
		return r.err
	}
	r.started, g.next, g.busy = true, nil, true
	g.mu.Unlock()
	r.err = fn()
	close(r.done)
	g.mu.Lock()
	g.busy = false
	g.cond.Broadcast()
	g.mu.Unlock()
	return r.err
}
