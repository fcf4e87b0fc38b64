package queue

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMinFreeBytes is the default space reserve of the queue's file
// system (Options.MinFreeBytes).
const DefaultMinFreeBytes = 16 << 20

// spaceCheckInterval bounds how often the free space is asked for: statfs is
// cheap, but not at tens of thousands of messages a second.
const spaceCheckInterval = 250 * time.Millisecond

// ErrLowSpace is the cause of a refusal while the file system's free space
// is under Options.MinFreeBytes.
var ErrLowSpace = errors.New("queue: file system below its free-space reserve")

// statfsFree returns the bytes available to unprivileged users on the file
// system holding dir (freeBytes, fs_GOOS.go); a variable so tests can
// pretend.
var statfsFree = freeBytes

// spaceGuard keeps the reserve. It remembers the last free-space answer
// for a short while and counts the body bytes written since, so that
// messages still being written count against the reserve at once, not
// only at the next statfs: a dozen large messages that all start while
// there is room must not eat the room kept for accepted mail's records.
// It is read without a lock: every NewMessage and every body write asks,
// and a writer parked on a mutex here would miss the group commit it was
// about to join.
type spaceGuard struct {
	mu   sync.Mutex   // held by the one goroutine asking statfs
	at   atomic.Int64 // when it last asked (Unix ns); 0: ask now
	snap atomic.Pointer[spaceSnap]
	// written counts the body bytes writers took (a Writer gives its bytes
	// back when it aborts, since its file is removed).
	written atomic.Int64
	warned  atomic.Bool
}

// spaceSnap is one statfs answer: the free bytes, and written as it was
// when they were counted.
type spaceSnap struct {
	free, mark int64
	ok         bool // statfs answered
}

// lowSpace reports whether new mail (or more of a message being written)
// must wait for free space: the last statfs answer, less the body bytes
// written since, is under the reserve. An error from statfs does not
// refuse mail: the writes themselves will tell.
func (q *Queue) lowSpace() bool {
	if q.opt.MinFreeBytes < 0 {
		return false
	}
	g := &q.space
	now := time.Now().UnixNano()
	if at := g.at.Load(); (at == 0 || now-at >= int64(spaceCheckInterval)) && g.mu.TryLock() {
		if at := g.at.Load(); at == 0 || now-at >= int64(spaceCheckInterval) {
			mark := g.written.Load()
			free, err := statfsFree(q.journalDir)
			g.snap.Store(&spaceSnap{free: free, mark: mark, ok: err == nil})
			g.at.Store(now)
		}
		g.mu.Unlock()
	}
	s := g.snap.Load()
	if s == nil || !s.ok {
		return false
	}
	free := s.free - (g.written.Load() - s.mark)
	low := free < q.opt.MinFreeBytes
	if low && g.warned.CompareAndSwap(false, true) {
		q.log.Warn("queue: free space below the reserve; refusing new mail for now",
			"free", free, "reserve", q.opt.MinFreeBytes)
	} else if !low && g.warned.Load() {
		g.warned.Store(false)
	}
	return low
}
