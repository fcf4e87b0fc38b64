package queue

import (
	"context"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"time"
)

// maintLoop runs the background work of a daemon's queue: deleting and
// compacting journal segments, retrying bounces that could not be queued,
// and the janitor.
func (q *Queue) maintLoop() {
	defer q.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-q.stop
		cancel()
	}()
	tick := time.NewTicker(DefaultMaintenanceTick)
	defer tick.Stop()
	q.maintain(ctx, true)
	lastJanitor := time.Now()
	q.janitor()
	for {
		select {
		case <-q.stop:
			return
		case <-q.maintKick:
			q.maintain(ctx, false)
		case <-tick.C:
			q.maintain(ctx, true)
			if time.Since(lastJanitor) >= q.opt.JanitorInterval {
				q.janitor()
				lastJanitor = time.Now()
			}
		}
	}
}

// maintain deletes and compacts segments; with notices it also retries
// any bounce or delay notice that is due.
func (q *Queue) maintain(ctx context.Context, notices bool) {
	q.deletePrefix()
	q.mu.Lock()
	n := len(q.segs)
	q.mu.Unlock()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		if !q.compact(ctx) {
			break
		}
		q.deletePrefix()
	}
	if notices {
		q.pruneDests()
		q.retryNotices(ctx)
	}
}

// pruneDests forgets destinations that have not failed for longer than the
// backoff cap, so the table holds only destinations that are failing now.
func (q *Queue) pruneDests() {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	for dest, ds := range q.dests {
		if now.After(ds.next.Add(q.opt.DestinationBackoff.Cap)) {
			q.destSuccessLocked(dest, now)
		}
	}
}

// deletePrefix deletes unused segments from the oldest on, and stops at
// the first one still in use. Deleting only a prefix, with a directory
// sync after each unlink, keeps the journal's meaning: a record that ends
// a message (delivered, removed) is never deleted while an older record
// that it cancels survives.
func (q *Queue) deletePrefix() {
	for {
		q.mu.Lock()
		if len(q.segs) == 0 {
			q.mu.Unlock()
			return
		}
		s := q.segs[0]
		if s == q.cur || s.pending > 0 || s.refs > 0 {
			q.mu.Unlock()
			return
		}
		if s.f != nil { // sealed with nothing queued: the committer is done with it
			s.f.Close()
			s.f = nil
		}
		q.segs = q.segs[1:]
		delete(q.segBySeq, s.seq)
		q.mu.Unlock()
		err := q.fs.Remove(q.segPath(s.seq))
		if err == nil || errors.Is(err, os.ErrNotExist) {
			err = q.fs.SyncDir(q.journalDir)
		}
		if err != nil {
			q.log.Warn("queue: cannot delete journal segment; will retry", "segment", s.seq, "err", err)
			q.mu.Lock()
			q.segs = append([]*segment{s}, q.segs...)
			q.segBySeq[s.seq] = s
			q.mu.Unlock()
			return
		}
	}
}

// compact rewrites the live messages of the oldest segment into the
// current one (as snapshot records) when that segment holds little live
// data, or when the journal is more than about twice the live data, so
// that long-deferred mail does not pin old segments forever. It reports
// whether it moved anything.
func (q *Queue) compact(ctx context.Context) bool {
	q.mu.Lock()
	if len(q.segs) < 2 {
		q.mu.Unlock()
		return false
	}
	oldest := q.segs[0]
	if oldest == q.cur || oldest.pending > 0 {
		q.mu.Unlock()
		return false
	}
	var total, live int64
	sealed := 0
	for _, s := range q.segs {
		total += s.size
		live += s.live
		if s != q.cur {
			sealed++
		}
	}
	if !(oldest.live*4 <= oldest.size || total > 2*live+2*q.opt.SegmentSize || sealed > maxSealedSegments) {
		q.mu.Unlock()
		return false
	}
	var victims []*message
	for _, m := range q.msgs {
		for _, u := range m.segs {
			if u.seq == oldest.seq {
				victims = append(victims, m)
				break
			}
		}
	}
	q.mu.Unlock()
	moved := false
	for _, m := range victims {
		if ctx.Err() != nil {
			break
		}
		if err := q.snapshot(ctx, m); err != nil {
			q.log.Error("queue: compaction failed", "id", m.id, "segment", oldest.seq, "err", err)
			break
		}
		moved = true
	}
	return moved
}

// snapshot writes m's whole state, with a copy of an inline body, into the
// current segment; once that is durable m no longer needs its older
// records.
func (q *Queue) snapshot(ctx context.Context, m *message) error {
	q.mu.Lock()
	if m.dead {
		q.mu.Unlock()
		return nil
	}
	ref := m.body
	q.mu.Unlock()
	var data []byte
	if !ref.external {
		var err error
		if data, err = q.readInline(ref); err != nil {
			return err
		}
	}
	q.mu.Lock()
	if m.dead || m.body != ref {
		q.mu.Unlock()
		return nil
	}
	meta := encodeSnapshot(nil, m)
	h := recordHeader(recSnapshot, len(meta), len(data))
	seq, off, b, err := q.appendLocked(recSnapshot, meta, data, partialCRC(&h, meta, data))
	if err != nil {
		q.mu.Unlock()
		return err
	}
	q.useLocked(m, seq, int64(recHeaderLen+len(meta)+len(data)))
	bodyOff := off + int64(recHeaderLen+len(meta))
	b.onDone = append(b.onDone, func() {
		if m.dead {
			return
		}
		if !m.body.external {
			m.body.seq, m.body.off = seq, bodyOff
		}
		q.releaseLocked(m, func(s uint64) bool { return s < seq })
	})
	q.mu.Unlock()
	return b.wait(ctx.Done())
}

// readInline reads an inline body (at most InlineMax bytes) and checks it.
func (q *Queue) readInline(ref bodyRef) ([]byte, error) {
	f, err := q.fs.OpenFile(q.segPath(ref.seq), os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data := make([]byte, ref.size)
	if _, err := io.ReadFull(io.NewSectionReader(f, ref.off, ref.size), data); err != nil {
		return nil, err
	}
	if crc32.Checksum(data, castagnoli) != ref.crc {
		return nil, ErrCorrupt
	}
	return data, nil
}

// retryNotices sends the bounces and delay notices that are due and were
// not sent at Record time (queue trouble, a restart in between, leases
// that expired).
func (q *Queue) retryNotices(ctx context.Context) {
	now := q.now()
	q.mu.Lock()
	var due []*message
	for _, m := range q.msgs {
		if q.noticeDueLocked(m, now) {
			due = append(due, m)
		}
	}
	q.mu.Unlock()
	for _, m := range due {
		if ctx.Err() != nil || q.sendNotices(ctx, m) != nil {
			return
		}
	}
}

// janitor removes body files that no message references, left by writers
// that crashed or were abandoned, once they are older than
// Options.JanitorCutoff (longer than any writer's deadline).
func (q *Queue) janitor() {
	ents, err := q.fs.ReadDir(q.bodyDir)
	if err != nil {
		q.log.Warn("queue: janitor cannot read body directory", "err", err)
		return
	}
	for _, e := range ents {
		id := e.Name()
		if !ValidID(id) {
			continue
		}
		q.mu.Lock()
		m := q.msgs.get(id)
		busy := m != nil && m.body.external || q.inflight[id]
		q.mu.Unlock()
		if busy {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < q.opt.JanitorCutoff {
			continue
		}
		if err := q.fs.Remove(q.bodyPath(id)); err == nil {
			q.log.Info("queue: janitor removed a stale body file", "id", id)
		}
	}
}
