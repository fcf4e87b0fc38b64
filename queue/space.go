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

// spaceGuard remembers the last free-space answer for a short while. It is
// read without a lock: every NewMessage asks, and a writer parked on a
// mutex here would miss the group commit it was about to join.
type spaceGuard struct {
	mu  sync.Mutex   // held by the one goroutine asking statfs
	at  atomic.Int64 // when it last asked (Unix ns); 0: ask now
	low atomic.Bool
}

// lowSpace reports whether new mail must wait for free space. An error
// from statfs does not refuse mail: the writes themselves will tell.
func (q *Queue) lowSpace() bool {
	if q.opt.MinFreeBytes < 0 {
		return false
	}
	g := &q.space
	now := time.Now().UnixNano()
	if at := g.at.Load(); at != 0 && now-at < int64(spaceCheckInterval) || !g.mu.TryLock() {
		return g.low.Load() // fresh, or being asked by another writer
	}
	defer g.mu.Unlock()
	if at := g.at.Load(); at == 0 || now-at >= int64(spaceCheckInterval) {
		free, err := statfsFree(q.journalDir)
		low := err == nil && free < q.opt.MinFreeBytes
		g.low.Store(low)
		g.at.Store(now)
		if low {
			q.log.Warn("queue: free space below the reserve; refusing new mail for now",
				"free", free, "reserve", q.opt.MinFreeBytes)
		}
	}
	return g.low.Load()
}
