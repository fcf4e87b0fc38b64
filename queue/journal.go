package queue

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// segment is one journal file, journal/<seq>.seg.
type segment struct {
	seq     uint64
	size    int64 // bytes appended so far, batches not yet written included
	durable int64 // bytes known to be on stable storage
	refs    int   // live messages with records here
	live    int64 // bytes of those records
	pending int   // batches queued for this segment, and Writers placing records in it
	broken  bool  // a write or sync failed: never append here again
	// opened: f exists and is open, so Writers may place records into it
	// (set under q.mu once the file is made; f never changes while
	// pending > 0).
	opened bool
	f      file // open for writing; owned by the committer
}

// batch is one group commit: records appended by many callers, written
// with one write per run of copied records, made durable with one
// fdatasync. A large record is not copied: its Writer places it into the
// segment itself (placeLocked), and the committer waits for it before the
// flush.
type batch struct {
	seg      *segment
	off      int64
	end      int64 // the segment's size after the batch's last record
	buf      []byte
	runs     []run // where buf's bytes go: consecutive runs of copied records
	placing  int   // Writers still placing records of this batch
	placeErr error // the first failed placement: the batch fails
	create   bool  // the batch creates the segment (and syncs the directory)
	taken    bool  // the committer has it: appends go to a new batch
	waiters  int   // callers that wait for this batch (joinLocked)
	done     chan struct{}
	// returning counts the waiters woken when the batch finished that
	// have not run yet; the last one to run pokes the committer (linger).
	returning atomic.Int32
	poke      chan struct{} // the queue's lingerPoke
	err       error
	inserts   []pendingInsert // new messages, indexed once the batch is durable
	onDone    []func()        // run under q.mu once the batch is durable
	onFail    []func()        // run under q.mu if it fails
}

// run is a stretch of a batch's buffer written at one offset of its
// segment.
type run struct {
	off int64
	n   int
}

// pendingInsert is a message whose record is in a batch: it joins the
// index when the batch is durable.
type pendingInsert struct {
	m   *message
	seq uint64 // its record's segment
	n   int64  // and length
}

// wait returns when the batch is durable (nil) or failed. A caller whose
// context ends first gets a temporary error, and the batch may still
// become durable: the same as a connection that drops after the commit.
func (b *batch) wait(done <-chan struct{}) error {
	select {
	case <-b.done:
		return b.err
	case <-done:
		return errGaveUp
	}
}

// waitJoined is wait for a caller counted by joinLocked: the last of them
// to run after the batch is written tells a lingering committer.
func (b *batch) waitJoined(done <-chan struct{}) error {
	err := b.wait(done)
	if err != errGaveUp && b.returning.Add(-1) == 0 {
		poke(b.poke)
	}
	return err
}

var errGaveUp = errors.New("queue: gave up waiting for the disk")

// poke wakes a lingering committer, which then looks again.
func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func segName(seq uint64) string { return fmt.Sprintf("%016x.seg", seq) }

func parseSegName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, ".seg")
	if !ok || len(hex) != 16 {
		return 0, false
	}
	v, err := strconv.ParseUint(hex, 16, 64)
	return v, err == nil
}

func (q *Queue) segPath(seq uint64) string { return filepath.Join(q.journalDir, segName(seq)) }

// appendLocked adds a record to the batch being gathered for the current
// segment, rotating to a new segment when this one is full or broken. The
// record's place (segment, offset) is fixed here, so callers can point at
// an inline body before the batch is written. partial is partialCRC of the
// record. Caller holds q.mu.
func (q *Queue) appendLocked(typ byte, meta, body []byte, partial uint32) (seq uint64, off int64, b *batch, err error) {
	h, b, err := q.reserveLocked(typ, len(meta), len(body), partial)
	if err != nil {
		return 0, 0, nil, err
	}
	s := b.seg
	off = s.size
	n := recHeaderLen + len(meta) + len(body)
	if k := len(b.runs); k > 0 && b.runs[k-1].off+int64(b.runs[k-1].n) == off {
		b.runs[k-1].n += n
	} else {
		b.runs = append(b.runs, run{off: off, n: n})
	}
	b.buf = append(b.buf, h[:]...)
	b.buf = append(b.buf, meta...)
	b.buf = append(b.buf, body...)
	q.grewLocked(s, int64(n), b)
	return s.seq, off, b, nil
}

// placeLocked reserves room for a record in the batch being gathered, as
// appendLocked does, but leaves writing it to the caller: the caller
// writes hdr, meta and body at off (Placement.write) and then calls
// Placement.done, before which the committer neither writes nor flushes
// the batch. Large bodies are placed so that they are copied once, by
// their own Writer and in parallel, instead of into the batch under the
// lock and then again by the one committer. ok is false when the current
// segment's file is not made yet; the caller appends instead.
func (q *Queue) placeLocked(typ byte, meta, body []byte, partial uint32) (p placement, ok bool, err error) {
	if s := q.cur; s == nil || !s.opened || s.broken {
		return placement{}, false, nil
	}
	n := int64(recHeaderLen + len(meta) + len(body))
	if s := q.cur; s.size > segHeaderLen && s.size+n > q.opt.SegmentSize {
		return placement{}, false, nil // rotation: appendLocked's
	}
	h, b, err := q.reserveLocked(typ, len(meta), len(body), partial)
	if err != nil {
		return placement{}, false, err
	}
	s := b.seg
	p = placement{q: q, b: b, f: s.f, seq: s.seq, off: s.size, hdr: h}
	b.placing++
	s.pending++ // keeps s.f open until done
	q.wg.Add(1) // and Close waits for it
	q.grewLocked(s, n, b)
	return p, true, nil
}

// placement is a record a Writer writes into the journal itself.
type placement struct {
	q   *Queue
	b   *batch
	f   file
	seq uint64
	off int64
	hdr [recHeaderLen]byte
}

// write writes the record at its reserved place, without the lock.
func (p *placement) write(meta, body []byte) error {
	buf := make([]byte, 0, recHeaderLen+len(meta))
	buf = append(append(buf, p.hdr[:]...), meta...)
	if _, err := p.f.WriteAt(buf, p.off); err != nil {
		return err
	}
	_, err := p.f.WriteAt(body, p.off+int64(len(buf)))
	return err
}

// done reports the record written (err nil) or not; a failure fails the
// whole batch, whose records the committer then cuts off. Caller holds
// q.mu.
func (p *placement) doneLocked(err error) {
	q, b := p.q, p.b
	if err != nil && b.placeErr == nil {
		b.placeErr = err
	}
	b.placing--
	s := b.seg
	s.pending--
	if b.placing == 0 && b.taken {
		q.cond.Broadcast() // the committer waits for the last placement
	}
	if s.pending == 0 && s != q.cur && s.f != nil {
		// Its batch failed while this record was being placed: the
		// committer is done with the file and left it to us.
		s.f.Close()
		s.f = nil
	}
	q.wg.Done()
}

// reserveLocked picks the batch for a record of the given sizes (rotating
// to a new segment when the current one is full or broken) and returns its
// header with the CRC filled in.
func (q *Queue) reserveLocked(typ byte, metaLen, bodyLen int, partial uint32) (h [recHeaderLen]byte, b *batch, err error) {
	if q.closed {
		return h, nil, errClosed
	}
	n := int64(recHeaderLen + metaLen + bodyLen)
	if s := q.cur; s == nil || s.broken || s.size > segHeaderLen && s.size+n > q.opt.SegmentSize {
		q.rotateLocked()
	}
	s := q.cur
	if k := len(q.batches); k > 0 && !q.batches[k-1].taken && q.batches[k-1].seg == s {
		b = q.batches[k-1]
	} else {
		b = q.newBatchLocked(s)
	}
	h = recordHeader(typ, metaLen, bodyLen)
	crc := finishCRC(partial, s.seq)
	h[0], h[1], h[2], h[3] = byte(crc), byte(crc>>8), byte(crc>>16), byte(crc>>24)
	return h, b, nil
}

// grewLocked accounts n bytes just reserved at the end of s for b.
func (q *Queue) grewLocked(s *segment, n int64, b *batch) {
	s.size += n
	b.end = s.size
	q.nRecords++
	if s.size > q.opt.SegmentSize/2 && q.spare == nil && !q.spareBusy && q.opt.SegmentSize >= minSpareSegment {
		q.prepareSpareLocked()
	}
}

// appendStateLocked appends a small state record about m.
func (q *Queue) appendStateLocked(m *message, typ byte, meta []byte) (*batch, error) {
	h := recordHeader(typ, len(meta), 0)
	seq, _, b, err := q.appendLocked(typ, meta, nil, partialCRC(&h, meta, nil))
	if err == nil {
		q.useLocked(m, seq, int64(recHeaderLen+len(meta)))
	}
	return b, err
}

func (q *Queue) newBatchLocked(s *segment) *batch {
	b := &batch{seg: s, off: s.size, end: s.size, done: make(chan struct{}), buf: q.batchBufLocked(), inserts: q.insertsLocked(), poke: q.lingerPoke}
	s.pending++
	q.batches = append(q.batches, b)
	q.cond.Signal()
	if q.lingerB != nil {
		poke(q.lingerPoke) // a batch queues behind the one held open
	}
	return b
}

// joinLocked counts a caller that will wait for b. The committer holds a
// batch open while it expects more of them (see linger).
func (q *Queue) joinLocked(b *batch) {
	b.waiters++
	if b == q.lingerB && q.lingerOverLocked(b, q.lingerPrev, q.lingerFor) {
		poke(q.lingerPoke)
	}
}

// batchBufLocked returns an empty buffer for a batch. Buffers of written
// batches are reused, so a batch's records are copied once, never into a
// growing slice under the lock.
func (q *Queue) batchBufLocked() []byte {
	if n := len(q.freeBufs); n > 0 {
		b := q.freeBufs[n-1]
		q.freeBufs = q.freeBufs[:n-1]
		return b[:0]
	}
	return make([]byte, 0, 64<<10)
}

// insertsLocked returns an empty list for a batch's new messages.
func (q *Queue) insertsLocked() []pendingInsert {
	if n := len(q.freeInserts); n > 0 {
		l := q.freeInserts[n-1]
		q.freeInserts = q.freeInserts[:n-1]
		return l
	}
	return nil
}

// recycleLocked keeps a finished batch's buffers for later batches (huge
// ones, from a burst of big inline bodies, go back to the garbage
// collector) and drops its references.
func (q *Queue) recycleLocked(b *batch) {
	if cap(b.buf) <= maxRecycledBuf && len(q.freeBufs) < 4 {
		q.freeBufs = append(q.freeBufs, b.buf[:0])
	}
	if cap(b.inserts) <= maxRecycledInserts && len(q.freeInserts) < 4 {
		clear(b.inserts)
		q.freeInserts = append(q.freeInserts, b.inserts[:0])
	}
	b.buf, b.runs, b.inserts, b.onDone, b.onFail = nil, nil, nil, nil, nil
}

// rotateLocked starts a new segment: the spare one if it is ready, or else
// one whose first batch creates the file.
func (q *Queue) rotateLocked() {
	if old := q.cur; old != nil && old.pending == 0 && old.f != nil {
		old.f.Close() // the committer is done with it
		old.f = nil
	}
	if s := q.spare; s != nil && !q.closing {
		q.spare = nil
		q.segs = append(q.segs, s)
		q.segBySeq[s.seq] = s
		q.cur = s
		q.kickMaint()
		return
	}
	if q.spareBusy {
		q.spareStale = true // its number is now older than the current segment's
	}
	s := &segment{seq: q.nextSeq, size: segHeaderLen}
	q.nextSeq++
	q.segs = append(q.segs, s)
	q.segBySeq[s.seq] = s
	q.cur = s
	b := q.newBatchLocked(s) // the committer takes it only once q.mu is free
	b.off, b.create = 0, true
	b.buf = append(b.buf, segmentHeader(s.seq)...)
	b.runs = append(b.runs, run{off: 0, n: segHeaderLen})
	q.kickMaint()
}

// prepareSpareLocked starts making the next segment file in the background
// while the current one fills: creating it, reserving its blocks, writing
// its header and syncing it and its directory cost a few milliseconds that
// would otherwise stall a whole batch of commits at the rotation. The
// spare takes its sequence number now; if a rotation comes first, the
// spare is older than the new segment and is thrown away unused.
func (q *Queue) prepareSpareLocked() {
	seq := q.nextSeq
	q.nextSeq++
	q.spareBusy = true
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		s, err := q.makeSegment(seq)
		q.mu.Lock()
		if err == nil && !q.spareStale && !q.closing {
			q.spare = s
			q.spareBusy, q.spareStale = false, false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		if err != nil {
			q.log.Warn("queue: cannot prepare the next journal segment; it will be made when needed", "segment", seq, "err", err)
		} else {
			q.dropSpare(s)
		}
		// Busy until a stale spare's file is gone, so that no one sees the
		// spare finished while its file still exists.
		q.mu.Lock()
		q.spareBusy, q.spareStale = false, false
		q.mu.Unlock()
	}()
}

// makeSegment creates an empty, durable segment file ready for appends.
func (q *Queue) makeSegment(seq uint64) (*segment, error) {
	f, err := q.fs.OpenFile(q.segPath(seq), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	s := &segment{seq: seq, size: segHeaderLen, durable: segHeaderLen, f: f, opened: true}
	q.preallocate(s)
	_, err = f.WriteAt(segmentHeader(seq), 0)
	if err == nil {
		err = f.Datasync()
	}
	if err == nil {
		err = q.fs.SyncDir(q.journalDir)
	}
	if err != nil {
		q.dropSpare(s)
		return nil, err
	}
	return s, nil
}

// dropSpare closes and removes an unused spare segment. One left behind by
// a crash is harmless: a header and no records.
func (q *Queue) dropSpare(s *segment) {
	s.f.Close()
	if err := q.fs.Remove(q.segPath(s.seq)); err == nil {
		q.fs.SyncDir(q.journalDir)
	}
}

// commitLoop is the group committer: it takes the oldest batch, writes it,
// syncs it, and wakes everyone who appended to it. While it waits for the
// disk, the next batch gathers; so under load every flush carries all the
// commits that arrived during the previous one.
func (q *Queue) commitLoop() {
	defer q.wg.Done()
	var (
		expect int       // callers likely to join the next batch
		prev   *batch    // the batch last written
		freed  time.Time // when it was
	)
	q.mu.Lock()
	for {
		for len(q.batches) == 0 && !q.closing {
			q.cond.Wait()
		}
		if len(q.batches) == 0 {
			q.mu.Unlock()
			return
		}
		b := q.batches[0]
		if prev != nil {
			q.linger(b, prev, expect, freed.Add(q.opt.CommitLinger))
		}
		b.taken = true
		for b.placing > 0 {
			q.cond.Wait() // Writers still placing their records (placeLocked)
		}
		q.mu.Unlock()

		t0 := time.Now()
		err := q.writeBatch(b)
		if err != nil {
			q.abandon(b, err)
		}
		took := time.Since(t0)

		q.mu.Lock()
		if q.flushTimes != nil {
			q.flushTimes = append(q.flushTimes, took)
		}
		q.batches = q.batches[1:]
		s := b.seg
		s.pending--
		if err == nil {
			s.opened = true
			s.durable = b.end
			for _, p := range b.inserts {
				delete(q.inflight, p.m.id)
				q.insertLocked(p.m, p.seq, p.n)
			}
			for _, fn := range b.onDone {
				fn()
			}
		} else {
			err = &Error{Op: "commit", Err: err}
			for _, fn := range b.onFail {
				fn()
			}
			q.failSegmentLocked(s, err)
		}
		var closeF file
		if s != q.cur && s.pending == 0 && s.f != nil {
			closeF, s.f = s.f, nil
		}
		q.nBatches++
		// The callers woken now come back soon if they are in a loop
		// (a busy client, the benchmark); with those already in the
		// next batch, that batch may be held for them (linger).
		expect = b.waiters
		if len(q.batches) > 0 {
			expect += q.batches[0].waiters
		}
		b.returning.Store(int32(b.waiters))
		prev, freed = b, time.Now()
		b.err = err
		q.recycleLocked(b)
		close(b.done)
		unlinks := len(q.unlinks) > 0
		q.mu.Unlock()
		// Let the writers just woken run before the next write and
		// fdatasync: they sit on this goroutine's P, which a blocking
		// system call keeps until the scheduler takes it back, so without
		// this they could wait out the next flush too. Meanwhile more
		// commits gather for the next batch (bench/: 5-10% less CPU per
		// message, more messages per flush).
		runtime.Gosched()
		if closeF != nil {
			closeF.Close()
		}
		if unlinks {
			q.flushUnlinks()
		}
		q.mu.Lock()
	}
}

// linger holds batch b open for callers expected back, so that one flush
// carries them all. Called and returns with q.mu held.
//
// Without it, a steady set of busy callers splits into two cohorts that
// alternate: those woken by one flush are still waiting for a processor
// when the committer takes the next batch, so each waits out that whole
// flush before its own; one the scheduler runs late waits a third. Held
// for them, one batch carries everyone, and a commit waits for at most the
// flush in progress and its own. This is MySQL's
// binlog_group_commit_sync_delay with binlog_group_commit_sync_no_delay_count,
// made adaptive: expect is the number of callers of prev (the batch just
// written) and of b, and the hold ends as soon as lingerOverLocked says
// that no more of them are on their way, or at the deadline
// (Options.CommitLinger after prev was written).
//
// Only callers that are on a processor's run queue or blocked on q.mu are
// waited for, never time: one that has gone back to its network peer does
// not hold the batch, and a lone caller never holds its own. (A timer
// would also be too coarse: Go rounds a short sleep in an idle process up
// to a millisecond.)
func (q *Queue) linger(b, prev *batch, expect int, deadline time.Time) {
	var start time.Time
	for !q.lingerOverLocked(b, prev, expect) {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		if start.IsZero() {
			start = time.Now()
		}
		q.lingerB, q.lingerPrev, q.lingerFor = b, prev, expect
		q.mu.Unlock()
		if q.lingerT == nil {
			q.lingerT = time.NewTimer(wait)
		} else {
			q.lingerT.Reset(wait)
		}
		timedOut := false
		select {
		case <-q.lingerPoke:
		case <-q.lingerT.C:
			timedOut = true
		}
		q.lingerT.Stop()
		q.mu.Lock()
		q.lingerB, q.lingerPrev = nil, nil
		if timedOut {
			break
		}
	}
	if !start.IsZero() {
		q.nLingers++
		q.lingerTime += time.Since(start)
	}
}

// lingerOverLocked reports whether the committer should stop holding b:
// no Writer is waiting for q.mu to append, and either expect callers have
// joined b or all of prev's callers, woken, have run (those that come
// straight back are then appending or have joined); or another batch
// queues behind b; or the queue is closing.
func (q *Queue) lingerOverLocked(b, prev *batch, expect int) bool {
	if len(q.batches) != 1 || q.closing {
		return true
	}
	return q.committing.Load() == 0 && (b.waiters >= expect || prev.returning.Load() <= 0)
}

func (q *Queue) writeBatch(b *batch) error {
	s := b.seg
	if b.create {
		f, err := q.fs.OpenFile(q.segPath(s.seq), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		s.f = f
		q.preallocate(s)
	}
	if s.f == nil {
		return errors.New("journal segment not open")
	}
	if b.placeErr != nil {
		return b.placeErr
	}
	pos := 0
	for _, r := range b.runs {
		if _, err := s.f.WriteAt(b.buf[pos:pos+r.n], r.off); err != nil {
			return err
		}
		pos += r.n
	}
	if err := s.f.Datasync(); err != nil {
		return err
	}
	if b.create {
		if err := q.fs.SyncDir(q.journalDir); err != nil {
			return err
		}
	}
	return nil
}

// preallocate reserves a new segment's blocks up to SegmentSize, so that
// appends never change the file's size or allocate: each batch's fdatasync
// then writes the data and flushes the disk's cache without a commit of
// the file system's own journal for the inode (on ext4 under load, several
// times faster; see BENCHMARKS.md). The file reads as zeros past the
// records, which replay takes as the end. Best effort: where fallocate
// fails (no support, or no room for a whole segment) the segment grows
// with its appends as before.
func (q *Queue) preallocate(s *segment) {
	a, ok := s.f.(allocator)
	if !ok || q.opt.SegmentSize <= segHeaderLen {
		return
	}
	if err := a.Allocate(q.opt.SegmentSize); err != nil {
		q.log.Debug("queue: journal segment not preallocated", "segment", s.seq, "err", err)
		// A failed fallocate may have reserved part of the range; the
		// segment must start empty either way.
		s.f.Truncate(0)
	}
}

// abandon undoes what it can of a failed batch. After a failed fsync Linux
// may have dropped the dirty pages or may still write them, so the records
// are cut off the segment file (or the new file removed): none of them was
// acknowledged, and they must not come back on the next replay. If that
// fails too, they may: the same as a commit whose reply was lost.
func (q *Queue) abandon(b *batch, cause error) {
	s := b.seg
	q.log.Error("queue: journal write failed", "segment", s.seq, "offset", b.off, "bytes", b.end-b.off,
		"disk_full", isNoSpace(cause), "err", cause)
	if s.f == nil {
		if b.create {
			q.fs.Remove(q.segPath(s.seq))
		}
		return
	}
	var err error
	if b.create {
		s.f.Close()
		s.f = nil
		if err = q.fs.Remove(q.segPath(s.seq)); err == nil || errors.Is(err, os.ErrNotExist) {
			err = q.fs.SyncDir(q.journalDir)
		}
	} else if err = s.f.Truncate(b.off); err == nil {
		err = s.f.Sync()
	} else {
		// Second best: zero the first failed record's header, so replay
		// stops right there.
		var zero [recHeaderLen]byte
		if _, err = s.f.WriteAt(zero[:], b.off); err == nil {
			err = s.f.Datasync()
		}
	}
	if err != nil {
		q.log.Error("queue: cannot cut failed records off the journal; they may reappear after a restart",
			"segment", s.seq, "offset", b.off, "err", err)
	}
}

// failSegmentLocked marks s broken and fails every batch still queued for
// it: their offsets assumed the failed bytes were there.
func (q *Queue) failSegmentLocked(s *segment, err error) {
	s.broken = true
	s.size = s.durable
	if q.cur == s {
		q.cur = nil
	}
	kept := q.batches[:0]
	for _, b := range q.batches {
		if b.seg != s {
			kept = append(kept, b)
			continue
		}
		s.pending--
		for _, fn := range b.onFail {
			fn()
		}
		b.err = err
		q.recycleLocked(b)
		close(b.done)
	}
	q.batches = kept
}

// isNoSpace reports whether err is a full disk or quota, for logs.
func isNoSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}
