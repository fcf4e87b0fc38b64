package queue

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// noticeTarget says where a notice about mail from sender goes, and from
// which sender: to mail.BounceAddress(sender) from <> (for a VERP sender
// the unexpanded pre@host, as qmail does); a bounce that fails goes to the
// postmaster from #@[] (a double bounce); mail from #@[] is never bounced.
func (q *Queue) noticeTarget(sender string) (to, from string, ok bool) {
	switch sender {
	case mail.DoubleBounceSender:
		return "", "", false
	case "":
		pm := q.opt.Postmaster
		if pm == "" || pm == "@" {
			return "", "", false
		}
		return pm, mail.DoubleBounceSender, true
	}
	return mail.BounceAddress(sender), "", true
}

// noticeSettled decides, as a recipient fails, whether a bounce will
// follow. When none can (a failed double bounce), the failure is logged
// and dropped, as qmail does.
func (q *Queue) noticeSettled(m *message, rcpt string, st mail.Status) bool {
	if _, _, ok := q.noticeTarget(m.sender); ok {
		return false
	}
	q.log.Warn("queue: failure dropped: a double bounce cannot bounce", "id", m.id, "rcpt", rcpt,
		"sender", m.sender, "status", st.Describe())
	return true
}

// failuresDueLocked: recipients failed, no bounce yet, and no delivery of
// the message still out, so one DSN can report them all.
func (q *Queue) failuresDueLocked(m *message, now time.Time) bool {
	if m.anyLeased(now) {
		return false
	}
	for i := range m.rcpts {
		if r := &m.rcpts[i]; r.state == Failed && !r.notified {
			return true
		}
	}
	return false
}

// delayDueLocked: a delay notice is enabled, not yet sent, and due for a
// message with a deferred recipient. Never for bounces.
func (q *Queue) delayDueLocked(m *message, now time.Time) bool {
	if q.opt.DelayNotice < 0 || m.delayNotified || mail.IsBounceSender(m.sender) ||
		now.Sub(m.received) < q.opt.DelayNotice {
		return false
	}
	for i := range m.rcpts {
		if r := &m.rcpts[i]; r.state == Pending && r.attempts > 0 {
			return true
		}
	}
	return false
}

func (q *Queue) noticeDueLocked(m *message, now time.Time) bool {
	return !m.dead && !m.noticeBusy && (q.failuresDueLocked(m, now) || q.delayDueLocked(m, now))
}

// sendNotices writes the DSN that m is due, if any: one per message for
// every failed recipient not yet reported, plus the delayed ones when a
// delay notice is due. The DSN is committed (durably) before the
// recipients are marked as reported, so a crash in between can repeat a
// bounce but never lose one: qmail's bounce note, in journal form.
func (q *Queue) sendNotices(ctx context.Context, m *message) error {
	now := q.now()
	q.mu.Lock()
	if !q.noticeDueLocked(m, now) {
		q.mu.Unlock()
		return nil
	}
	to, from, ok := q.noticeTarget(m.sender)
	if !ok {
		q.mu.Unlock()
		return nil
	}
	d := &dsn{hostname: q.opt.Hostname, origID: m.id, to: to, origSender: m.sender,
		arrival: m.received, now: now, retryUntil: m.received.Add(q.opt.Lifetime), double: m.sender == ""}
	var failed []int
	if q.failuresDueLocked(m, now) {
		for i := range m.rcpts {
			if r := &m.rcpts[i]; r.state == Failed && !r.notified {
				failed = append(failed, i)
				d.rcpts = append(d.rcpts, dsnRcpt{addr: r.addr, action: actionFailed, status: r.finalStatus(), last: copyAttempt(r.lastAttempt())})
			}
		}
	}
	delay := q.delayDueLocked(m, now)
	if delay {
		for i := range m.rcpts {
			if r := &m.rcpts[i]; r.state == Pending && r.attempts > 0 {
				last := copyAttempt(r.lastAttempt())
				st := mail.StatusTempFailure
				if last != nil {
					st = last.status
				}
				d.rcpts = append(d.rcpts, dsnRcpt{addr: r.addr, action: actionDelayed, status: st, last: last})
			}
		}
	}
	m.noticeBusy = true
	q.mu.Unlock()

	id, err := q.putNotice(ctx, m, d, from, to)

	q.mu.Lock()
	m.noticeBusy = false
	if err != nil {
		q.mu.Unlock()
		q.log.Error("queue: cannot queue bounce; will retry", "id", m.id, "err", err)
		return err
	}
	kind := "bounce"
	if len(failed) == 0 {
		kind = "delay notice"
	} else if d.double {
		kind = "double bounce"
	}
	q.log.Info("queue: "+kind+" queued", "id", m.id, "notice", id, "rcpt", to, "failed", len(failed))
	if m.dead {
		q.mu.Unlock()
		return nil
	}
	var waits []*batch
	if len(failed) > 0 {
		ups := make([]rcptUpdate, 0, len(failed))
		for _, i := range failed {
			m.rcpts[i].notified = true
			ups = append(ups, m.rcpts[i].update(i))
		}
		if b, err := q.appendStateLocked(m, recUpdate, encodeUpdate(nil, m.id, ups)); err == nil {
			waits = append(waits, b)
		}
	}
	if delay {
		m.delayNotified = true
		if b, err := q.appendStateLocked(m, recFlags, encodeFlags(nil, m.id, m.flags())); err == nil {
			waits = append(waits, b)
		}
	}
	if m.done() && len(waits) > 0 {
		q.dropLocked(m, waits[len(waits)-1])
	}
	q.mu.Unlock()
	for _, b := range waits {
		if err := b.wait(ctx.Done()); err != nil {
			return err
		}
	}
	return nil
}

func copyAttempt(a *attempt) *attempt {
	if a == nil {
		return nil
	}
	c := *a
	return &c
}

// putNotice renders d with m's header attached and commits it.
func (q *Queue) putNotice(ctx context.Context, m *message, d *dsn, from, to string) (string, error) {
	hdr, err := q.readHeader(m)
	if err != nil {
		q.log.Warn("queue: bounce without the original header: body unreadable", "id", m.id, "err", err)
	}
	d.header = hdr
	w, err := q.NewMessage(ctx)
	if err != nil {
		return "", err
	}
	d.id = w.ID()
	if _, err := w.Write(d.render()); err != nil {
		w.Abort()
		return "", err
	}
	return w.Commit(ctx, mail.Envelope{Sender: from, Recipients: []string{to}})
}

// readHeader returns m's header (up to the first empty line), cut at
// Options.MaxBounceHeader on a line boundary.
func (q *Queue) readHeader(m *message) ([]byte, error) {
	rc, err := q.openMessage(m)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 4096)
	var out []byte
	start := true // at the start of a line
	for {
		line, err := br.ReadSlice('\n')
		if start && (string(line) == "\n" || string(line) == "\r\n") {
			break
		}
		if len(out)+len(line) > q.opt.MaxBounceHeader {
			out = out[:bytes.LastIndexByte(out, '\n')+1]
			break
		}
		out = append(out, line...)
		start = err == nil
		switch err {
		case nil, bufio.ErrBufferFull:
		case io.EOF:
			return out, nil
		default:
			return out, err
		}
	}
	return out, nil
}
