package queue

import (
	"bufio"
	"errors"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qmgate/qmgate/mail"
)

// Clock tells the queue the time; tests substitute one they can move.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Backoff is an exponential retry schedule: after n failures the wait is
// Floor·2^(n-1), at most Cap, spread by ±Jitter (a fraction, 0.25 = ±25%)
// and then kept within [Floor, Cap].
type Backoff struct {
	Floor  time.Duration
	Cap    time.Duration
	Jitter float64
}

// Delay returns the wait after n consecutive failures (n ≥ 1); r is a
// uniform random number in [0, 1).
func (b Backoff) Delay(n int, r float64) time.Duration {
	d := b.Floor
	for i := 1; i < n && d < b.Cap; i++ {
		d *= 2
	}
	d = min(d, b.Cap)
	if b.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + b.Jitter*(2*r-1)))
	}
	return max(b.Floor, min(d, b.Cap))
}

// Defaults for Options. Every limit has one; every default is safe.
const (
	DefaultLifetime           = 7 * 24 * time.Hour // qmail's queuelifetime
	DefaultDelayNotice        = 4 * time.Hour
	DefaultLeaseTime          = time.Hour
	DefaultInlineMax          = 256 << 10
	DefaultSegmentSize        = 64 << 20
	DefaultMaxBounceHeader    = 64 << 10
	DefaultMaxHistory         = 10
	DefaultMaxRecipients      = 10000
	DefaultJanitorCutoff      = 36 * time.Hour // qmail-clean's tmp cutoff
	DefaultJanitorInterval    = time.Hour
	DefaultMaintenanceTick    = time.Minute
	maxSealedSegments         = 16
	maxRecycledBuf            = 8 << 20
	maxAttemptField           = 255 // bytes of route and host kept per attempt
	defaultPostmasterUserPart = "postmaster"
)

var (
	// DefaultRetry is the per-recipient retry schedule.
	DefaultRetry = Backoff{Floor: 5 * time.Minute, Cap: time.Hour, Jitter: 0.25}
	// DefaultDestinationBackoff is the per-destination schedule after a
	// destination (next hop) fails temporarily.
	DefaultDestinationBackoff = Backoff{Floor: time.Minute, Cap: time.Hour, Jitter: 0.25}
)

// Options configure a Queue. The zero value works: every field has a
// documented default.
type Options struct {
	// Hostname names this MTA in bounces (Reporting-MTA, From:
	// MAILER-DAEMON@Hostname). Default: os.Hostname().
	Hostname string
	// Postmaster receives double bounces. Default "postmaster@" + Hostname.
	// "@" discards double bounces (qmail's doublebounceto convention).
	Postmaster string
	// Lifetime is how long a message may stay queued; after it a temporary
	// failure is permanent, with an explanation. Default 7 days.
	Lifetime time.Duration
	// DelayNotice sends one "still trying" DSN for a message deferred this
	// long. Default 4 hours; negative disables.
	DelayNotice time.Duration
	// Retry is the per-recipient schedule. Default DefaultRetry.
	Retry Backoff
	// DestinationBackoff holds back every recipient for a destination that
	// failed temporarily, so one dead hub costs one attempt per interval
	// instead of one per message. Default DefaultDestinationBackoff.
	DestinationBackoff Backoff
	// DestinationOf gives the destination key of a recipient before the
	// relay has reported one (Result.Destination). Default: the lower-cased
	// domain.
	DestinationOf func(rcpt string) string
	// LeaseTime bounds a claim: work claimed and not recorded within it is
	// handed out again. Default 1 hour; it must exceed any delivery.
	LeaseTime time.Duration
	// InlineMax is the largest body kept inside the journal; larger bodies
	// go to their own file. Default 256 KiB (at most 64 MiB). Each writer
	// buffers up to this much in memory.
	InlineMax int64
	// SegmentSize is the size at which the journal moves to a new segment
	// file. Default 64 MiB.
	SegmentSize int64
	// MaxBounceHeader bounds how much of the original header a bounce
	// attaches (text/rfc822-headers). Default 64 KiB.
	MaxBounceHeader int
	// MaxHistory bounds the attempts remembered per recipient. Default 10.
	MaxHistory int
	// MaxRecipients bounds the recipients of one message. Default 10000.
	MaxRecipients int
	// JanitorCutoff is the age after which an unreferenced body file (left
	// by a crashed or abandoned writer) is removed. It must exceed any
	// writer's deadline. Default 36 hours.
	JanitorCutoff time.Duration
	// JanitorInterval is how often the janitor runs. Default 1 hour.
	JanitorInterval time.Duration
	// Passive opens the queue for administration only: no background
	// maintenance (bounces, compaction, janitor). OpenAdmin sets it.
	Passive bool
	// Clock defaults to the system clock.
	Clock Clock
	// Rand drives retry jitter. Default: randomly seeded.
	Rand *rand.Rand
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	fs fileSystem // tests inject faults here
}

func (o *Options) setDefaults() {
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
		if o.Hostname == "" {
			o.Hostname = "localhost"
		}
	}
	if o.Postmaster == "" {
		o.Postmaster = defaultPostmasterUserPart + "@" + o.Hostname
	}
	if o.Lifetime <= 0 {
		o.Lifetime = DefaultLifetime
	}
	if o.DelayNotice == 0 {
		o.DelayNotice = DefaultDelayNotice
	}
	if o.Retry.Floor <= 0 {
		o.Retry = DefaultRetry
	}
	if o.DestinationBackoff.Floor <= 0 {
		o.DestinationBackoff = DefaultDestinationBackoff
	}
	for _, b := range []*Backoff{&o.Retry, &o.DestinationBackoff} {
		b.Cap = max(b.Cap, b.Floor)
		b.Jitter = min(max(b.Jitter, 0), 1)
	}
	if o.DestinationOf == nil {
		o.DestinationOf = mail.Domain
	}
	if o.LeaseTime <= 0 {
		o.LeaseTime = DefaultLeaseTime
	}
	if o.InlineMax <= 0 {
		o.InlineMax = DefaultInlineMax
	}
	o.InlineMax = min(o.InlineMax, maxBodyLen)
	if o.SegmentSize <= 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.MaxBounceHeader <= 0 {
		o.MaxBounceHeader = DefaultMaxBounceHeader
	}
	if o.MaxHistory <= 0 {
		o.MaxHistory = DefaultMaxHistory
	}
	if o.MaxRecipients <= 0 {
		o.MaxRecipients = DefaultMaxRecipients
	}
	if o.JanitorCutoff <= 0 {
		o.JanitorCutoff = DefaultJanitorCutoff
	}
	if o.JanitorInterval <= 0 {
		o.JanitorInterval = DefaultJanitorInterval
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.fs == nil {
		o.fs = osFS{}
	}
}

// Queue is qmgate's durable spool. All methods are safe for concurrent use.
type Queue struct {
	dir, journalDir, bodyDir string
	opt                      Options
	fs                       fileSystem
	log                      *slog.Logger
	lockFile                 *os.File

	mu       sync.Mutex
	cond     *sync.Cond // the committer waits here for batches
	closed   bool       // no more appends
	closing  bool       // the committer drains and exits
	msgs     map[string]*message
	sched    schedHeap
	dests    map[string]*destState
	wake     chan struct{} // closed and replaced when work may be due
	inflight map[string]bool
	leaseSeq uint64
	unlinks  []string // body files to remove once the lock is released

	segs     []*segment // every journal segment, oldest first
	segBySeq map[uint64]*segment
	cur      *segment
	nextSeq  uint64
	batches  []*batch
	freeBufs [][]byte

	nBatches, nRecords uint64
	flushTimes         []time.Duration // benchmarks: each batch's write+sync

	ids       idGen
	maintKick chan struct{}
	stop      chan struct{}
	wg        sync.WaitGroup
}

// Open opens (creating if needed) the queue in dir, takes its lock, and
// replays the journal: every committed message comes back with its state;
// anything torn by a crash is ignored, since it was never acknowledged. It
// returns ErrLocked when another process has the queue.
func Open(dir string, opt Options) (*Queue, error) {
	opt.setDefaults()
	q := &Queue{
		dir:        dir,
		journalDir: filepath.Join(dir, "journal"),
		bodyDir:    filepath.Join(dir, "body"),
		opt:        opt,
		fs:         opt.fs,
		log:        opt.Logger,
		msgs:       make(map[string]*message),
		dests:      make(map[string]*destState),
		wake:       make(chan struct{}),
		inflight:   make(map[string]bool),
		segBySeq:   make(map[uint64]*segment),
		nextSeq:    1,
		maintKick:  make(chan struct{}, 1),
		stop:       make(chan struct{}),
	}
	q.cond = sync.NewCond(&q.mu)
	for _, d := range []string{dir, q.journalDir, q.bodyDir} {
		if err := q.makeDir(d); err != nil {
			return nil, &Error{Op: "open", Err: err}
		}
	}
	if err := q.takeLock(); err != nil {
		return nil, err
	}
	if err := q.replay(); err != nil {
		q.lockFile.Close()
		return nil, err
	}
	q.wg.Add(1)
	go q.commitLoop()
	q.deletePrefix()
	if !opt.Passive {
		q.wg.Add(1)
		go q.maintLoop()
	}
	return q, nil
}

// makeDir creates d if missing and makes its name durable.
func (q *Queue) makeDir(d string) error {
	err := q.fs.Mkdir(d, 0o700)
	if errors.Is(err, os.ErrExist) {
		st, serr := q.fs.Stat(d)
		if serr != nil {
			return serr
		}
		if !st.IsDir() {
			return &os.PathError{Op: "open", Path: d, Err: unix.ENOTDIR}
		}
		return nil
	}
	if err != nil {
		return err
	}
	return q.fs.SyncDir(filepath.Dir(d))
}

// takeLock takes an exclusive flock on dir/lock for the life of the Queue.
// The kernel drops it when the process dies, so a crash never leaves the
// queue locked.
func (q *Queue) takeLock() error {
	f, err := os.OpenFile(filepath.Join(q.dir, "lock"), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &Error{Op: "lock", Err: err}
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		if err == unix.EWOULDBLOCK {
			return ErrLocked
		}
		return &Error{Op: "lock", Err: err}
	}
	q.lockFile = f
	return nil
}

// Close waits for the commits in progress, stops the background work and
// releases the lock. Deliveries claimed and not recorded are handed out
// again after the next Open.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		return nil
	}
	q.mu.Unlock()
	close(q.stop) // maintenance first: it may still append
	q.mu.Lock()
	q.closed = true
	q.closing = true
	q.notifyLocked()
	q.cond.Broadcast()
	q.mu.Unlock()
	q.wg.Wait()
	q.flushUnlinks()
	for _, s := range q.segs {
		if s.f != nil {
			s.f.Close()
			s.f = nil
		}
	}
	return q.lockFile.Close()
}

// Dir returns the queue directory.
func (q *Queue) Dir() string { return q.dir }

func (q *Queue) now() time.Time { return q.opt.Clock.Now() }

// notifyLocked wakes every Wait.
func (q *Queue) notifyLocked() {
	close(q.wake)
	q.wake = make(chan struct{})
}

func (q *Queue) kickMaint() {
	select {
	case q.maintKick <- struct{}{}:
	default:
	}
}

// unlinkLater queues a body file for removal outside the lock.
func (q *Queue) unlinkLater(path string) { q.unlinks = append(q.unlinks, path) }

func (q *Queue) flushUnlinks() {
	q.mu.Lock()
	paths := q.unlinks
	q.unlinks = nil
	q.mu.Unlock()
	for _, p := range paths {
		if err := q.fs.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			q.log.Warn("queue: cannot remove body file; the janitor will retry", "path", p, "err", err)
		}
	}
}

func (q *Queue) bodyPath(id string) string { return filepath.Join(q.bodyDir, id) }

// useLocked notes that m has a record of n bytes in segment seq.
func (q *Queue) useLocked(m *message, seq uint64, n int64) {
	s := q.segBySeq[seq]
	if k := len(m.segs); k > 0 && m.segs[k-1].seq == seq {
		m.segs[k-1].bytes += n
	} else {
		m.segs = append(m.segs, segUse{seq: seq, bytes: n})
		if s != nil {
			s.refs++
		}
	}
	if s != nil {
		s.live += n
	}
}

// releaseLocked drops m's uses of the segments for which keep is false.
func (q *Queue) releaseLocked(m *message, drop func(seq uint64) bool) {
	kept := m.segs[:0]
	freed := false
	for _, u := range m.segs {
		if !drop(u.seq) {
			kept = append(kept, u)
			continue
		}
		if s := q.segBySeq[u.seq]; s != nil {
			s.refs--
			s.live -= u.bytes
			freed = freed || s.refs == 0
		}
	}
	m.segs = kept
	if freed {
		q.kickMaint()
	}
}

// insertLocked makes a committed message visible and due.
func (q *Queue) insertLocked(m *message, seq uint64, n int64) {
	q.msgs[m.id] = m
	q.useLocked(m, seq, n)
	q.scheduleLocked(m, q.now())
}

// dropLocked removes a message that is done or removed. Its segments and
// body file are released once b, the batch recording why, is durable.
func (q *Queue) dropLocked(m *message, b *batch) {
	m.dead = true
	m.gen++
	delete(q.msgs, m.id)
	q.unblockLocked(m)
	b.onDone = append(b.onDone, func() {
		q.releaseLocked(m, func(uint64) bool { return true })
		if m.body.external {
			q.unlinkLater(q.bodyPath(m.id))
		}
	})
}

// replay rebuilds the index from the journal segments, oldest first.
func (q *Queue) replay() error {
	ents, err := q.fs.ReadDir(q.journalDir)
	if err != nil {
		return &Error{Op: "open", Err: err}
	}
	var seqs []uint64
	for _, e := range ents {
		if seq, ok := parseSegName(e.Name()); ok {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	rs := &replayState{deadBodies: map[string]bool{}}
	for _, seq := range seqs {
		valid, err := q.replaySegment(seq, rs)
		if err != nil {
			return &Error{Op: "replay", Err: err}
		}
		s := &segment{seq: seq, size: valid, durable: valid}
		q.segs = append(q.segs, s)
		q.segBySeq[seq] = s
		q.nextSeq = seq + 1
	}
	for id, m := range q.msgs {
		if !m.body.external {
			continue
		}
		st, err := q.fs.Stat(q.bodyPath(id))
		if err != nil || st.Size() != m.body.size {
			// Only a commit that failed (and was never acknowledged) can
			// leave a record whose body file is gone.
			q.log.Error("queue: dropping message whose body file is missing or truncated", "id", id, "err", err)
			delete(q.msgs, id)
			continue
		}
		delete(rs.deadBodies, id)
	}
	now := q.now()
	for _, m := range q.msgs {
		for _, u := range m.segs {
			if s := q.segBySeq[u.seq]; s != nil {
				s.refs++
				s.live += u.bytes
			}
		}
		q.scheduleLocked(m, now)
	}
	q.ids.observe(rs.maxID)
	for id := range rs.deadBodies {
		q.unlinks = append(q.unlinks, q.bodyPath(id))
	}
	q.flushUnlinks()
	if rs.torn > 0 {
		q.log.Warn("queue: ignored records torn by a crash (never acknowledged)", "segments", rs.torn)
	}
	q.log.Info("queue: opened", "dir", q.dir, "messages", len(q.msgs), "segments", len(q.segs))
	return nil
}

type replayState struct {
	maxID      string
	deadBodies map[string]bool // external bodies of messages found done
	torn       int
}

func (rs *replayState) seen(id string) {
	if id > rs.maxID {
		rs.maxID = id
	}
}

// replaySegment applies the valid records of one segment and returns the
// length of its valid prefix. It stops at the first record that is short or
// fails its CRC: records are only ever appended, and a new process never
// appends to an old segment, so only a segment's tail can be torn. It never
// looks for records past that point, since an inline body could be made
// to look like one.
func (q *Queue) replaySegment(seq uint64, rs *replayState) (int64, error) {
	f, err := q.fs.OpenFile(q.segPath(seq), os.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	fileSize := st.Size()
	br := bufio.NewReaderSize(f, 256<<10)
	hdr := make([]byte, segHeaderLen)
	if _, err := io.ReadFull(br, hdr); err != nil {
		if isShort(err) {
			return 0, nil // created, never completed: nothing acknowledged
		}
		return 0, err
	}
	if string(hdr[:len(segMagic)]) != string(segmentHeader(seq)[:len(segMagic)]) ||
		string(hdr) != string(segmentHeader(seq)) {
		q.log.Error("queue: not a journal segment of this queue, ignored", "segment", seq)
		return 0, nil
	}
	off := int64(segHeaderLen)
	h := crc32.New(castagnoli)
	var seqb [8]byte
	for i := range seqb {
		seqb[i] = byte(seq >> (8 * i))
	}
	for {
		var rh [recHeaderLen]byte
		if _, err := io.ReadFull(br, rh[:]); err != nil {
			if isShort(err) {
				break
			}
			return off, err
		}
		typ := rh[4]
		metaLen := int64(uint32(rh[5]) | uint32(rh[6])<<8 | uint32(rh[7])<<16 | uint32(rh[8])<<24)
		bodyLen := int64(uint32(rh[9]) | uint32(rh[10])<<8 | uint32(rh[11])<<16 | uint32(rh[12])<<24)
		if metaLen > maxMetaLen || bodyLen > maxBodyLen || off+recHeaderLen+metaLen+bodyLen > fileSize {
			break
		}
		meta := make([]byte, metaLen)
		if _, err := io.ReadFull(br, meta); err != nil {
			if isShort(err) {
				break
			}
			return off, err
		}
		h.Reset()
		h.Write(rh[4:])
		h.Write(meta)
		if _, err := io.CopyN(h, br, bodyLen); err != nil {
			if isShort(err) {
				break
			}
			return off, err
		}
		h.Write(seqb[:])
		crc := uint32(rh[0]) | uint32(rh[1])<<8 | uint32(rh[2])<<16 | uint32(rh[3])<<24
		if h.Sum32() != crc {
			break
		}
		q.applyRecord(rs, typ, meta, seq, off, recHeaderLen+metaLen, bodyLen)
		off += recHeaderLen + metaLen + bodyLen
	}
	if off < fileSize {
		rs.torn++
		q.log.Warn("queue: journal segment has a torn tail", "segment", seq, "valid", off, "size", fileSize)
	}
	return off, nil
}

func isShort(err error) bool {
	return err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF)
}

// applyRecord applies one valid record during replay. A record that names
// an unknown ID belongs to a message that is done and whose earlier records
// were already deleted: it is ignored.
func (q *Queue) applyRecord(rs *replayState, typ byte, meta []byte, seq uint64, off, head, bodyLen int64) {
	n := head + bodyLen
	switch typ {
	case recMessage:
		mm, err := decodeMessage(meta)
		if err != nil || !mm.body.external && mm.body.size != bodyLen {
			q.log.Error("queue: malformed message record ignored", "segment", seq, "offset", off)
			return
		}
		rs.seen(mm.id)
		if q.msgs[mm.id] != nil {
			q.log.Error("queue: duplicate message record ignored", "id", mm.id, "segment", seq)
			return
		}
		m := &message{id: mm.id, received: mm.received, sender: mm.sender, body: mm.body,
			rcpts: make([]rcpt, len(mm.rcpts))}
		if !m.body.external {
			m.body.seq, m.body.off = seq, off+head
		}
		for i, a := range mm.rcpts {
			m.rcpts[i] = rcpt{addr: a, next: mm.received, dest: q.opt.DestinationOf(a)}
		}
		m.segs = []segUse{{seq: seq, bytes: n}}
		q.msgs[m.id] = m
	case recSnapshot:
		m, err := decodeSnapshot(meta)
		if err != nil || !m.body.external && m.body.size != bodyLen {
			q.log.Error("queue: malformed snapshot record ignored", "segment", seq, "offset", off)
			return
		}
		rs.seen(m.id)
		if !m.body.external {
			m.body.seq, m.body.off = seq, off+head
		}
		m.segs = []segUse{{seq: seq, bytes: n}}
		q.msgs[m.id] = m
	case recUpdate:
		id, ups, err := decodeUpdate(meta)
		if err != nil {
			q.log.Error("queue: malformed update record ignored", "segment", seq, "offset", off)
			return
		}
		m := q.msgs[id]
		if m == nil {
			return
		}
		for i := range ups {
			if ups[i].idx < len(m.rcpts) {
				m.rcpts[ups[i].idx].apply(&ups[i], q.opt.MaxHistory)
			}
		}
		addUse(m, seq, n)
		if m.done() {
			q.dropReplay(rs, m)
		}
	case recFlags:
		id, fl, err := decodeFlags(meta)
		if err != nil {
			return
		}
		if m := q.msgs[id]; m != nil {
			m.setFlags(fl)
			addUse(m, seq, n)
		}
	case recRemove:
		id, err := decodeRemove(meta)
		if err != nil {
			return
		}
		if m := q.msgs[id]; m != nil {
			q.dropReplay(rs, m)
		}
	default:
		q.log.Warn("queue: unknown journal record type ignored", "type", string(typ), "segment", seq)
	}
}

func (q *Queue) dropReplay(rs *replayState, m *message) {
	delete(q.msgs, m.id)
	if m.body.external {
		rs.deadBodies[m.id] = true
	}
}

// addUse is useLocked without segment accounting (replay computes it last).
func addUse(m *message, seq uint64, n int64) {
	if k := len(m.segs); k > 0 && m.segs[k-1].seq == seq {
		m.segs[k-1].bytes += n
		return
	}
	m.segs = append(m.segs, segUse{seq: seq, bytes: n})
}

// sanitizeField keeps s to max bytes of one line, for route and host names
// recorded from the relay.
func sanitizeField(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
