package queue

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qmgate/qmgate/mail"
	"golang.org/x/sys/unix"
)

// Queue is qmgate's durable spool. All methods are safe for concurrent use.
type Queue struct {
	dir, journalDir, bodyDir string
	opt                      Options
	fs                       fileSystem
	log                      *slog.Logger
	lockFile                 *os.File
	// nextHops reports the daemon's next hop health for Stat (admin.go).
	nextHops atomic.Pointer[func() []NextHop]

	drainer atomic.Pointer[Drainer] // SetDrainer (drain.go)

	// bodyDirSync shares fsyncs of body/ among the Writers of large
	// bodies (Writer.Commit).
	bodyDirSync syncGroup

	mu     sync.Mutex
	cond   *sync.Cond // the committer waits here for batches
	closed bool       // no more appends
	// closedFlag is closed, for reading without the lock.
	closedFlag atomic.Bool
	closing    bool // the committer drains and exits
	msgs       index
	sched      schedHeap
	dests      map[string]*destState
	wake       chan struct{} // closed when work may be due; nil when no one waits
	inflight   map[string]bool
	leaseSeq   uint64
	unlinks    []string // body files to remove once the lock is released

	segs     []*segment // every journal segment, oldest first
	segBySeq map[uint64]*segment
	cur      *segment
	nextSeq  uint64
	batches  []*batch
	// spare is the next segment, made ahead of need (prepareSpareLocked).
	spare                 *segment
	spareBusy, spareStale bool
	freeBufs              [][]byte
	freeInserts           [][]pendingInsert
	// bodyBufs holds buffers of InlineMax bytes for Writers whose body
	// outgrows bufPool's (nil when InlineMax exceeds maxBodyBuf).
	bodyBufs *sync.Pool
	// placeMin is the smallest inline body a Writer places into the
	// journal itself (placeLocked): minPlacedBody, or half of a smaller
	// InlineMax, so that both ways are used whatever the options.
	placeMin int64

	// The committer holding batch lingerB open for lingerFor callers.
	lingerB    *batch
	lingerPrev *batch
	lingerFor  int
	// committing counts Writers in Commit waiting for q.mu to append.
	committing atomic.Int32
	lingerPoke chan struct{} // buffered: poke
	lingerT    *time.Timer   // the committer's
	nLingers   uint64        // batches held open for callers expected back
	lingerTime time.Duration // and the time they were held

	nBatches, nRecords uint64
	flushTimes         []time.Duration // benchmarks: each batch's write+sync

	ids       idGen
	space     spaceGuard
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
		msgs:       make(index),
		dests:      make(map[string]*destState),
		inflight:   make(map[string]bool),
		segBySeq:   make(map[uint64]*segment),
		nextSeq:    1,
		maintKick:  make(chan struct{}, 1),
		lingerPoke: make(chan struct{}, 1),
		stop:       make(chan struct{}),
	}
	q.cond = sync.NewCond(&q.mu)
	q.placeMin = max(1, min(minPlacedBody, opt.InlineMax/2))
	if n := opt.InlineMax; n > maxPooledBuf && n <= maxBodyBuf {
		q.bodyBufs = &sync.Pool{New: func() any { b := make([]byte, 0, n); return &b }}
	}
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
	q.closedFlag.Store(true)
	q.closing = true
	q.notifyLocked()
	q.cond.Broadcast()
	poke(q.lingerPoke)
	q.mu.Unlock()
	q.wg.Wait()
	if q.spare != nil {
		q.dropSpare(q.spare)
		q.spare = nil
	}
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
	if q.wake != nil {
		close(q.wake)
		q.wake = nil // made again by the next Wait: most commits find no one waiting
	}
}

func (q *Queue) kickMaint() { poke(q.maintKick) }

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
	q.msgs.put(m)
	q.useLocked(m, seq, n)
	q.scheduleLocked(m, q.now())
}

// dropLocked removes a message that is done or removed. Its segments and
// body file are released once b, the batch recording why, is durable.
func (q *Queue) dropLocked(m *message, b *batch) {
	m.dead = true
	m.gen++
	q.msgs.drop(m.id)
	q.unblockLocked(m)
	b.onDone = append(b.onDone, func() {
		q.releaseLocked(m, func(uint64) bool { return true })
		if m.body.external {
			q.unlinkLater(q.bodyPath(m.id))
		}
	})
}

// sanitizeField keeps s to max bytes of one line, for route and host names
// recorded from the relay.
func sanitizeField(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return mail.OneLine(s)
}
