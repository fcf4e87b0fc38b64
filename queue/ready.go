package queue

import (
	"fmt"
	"os"
)

// Ready reports whether the queue can take new mail now: it is open, its
// file system is above the free-space reserve, and a file can be created
// and written in its journal directory. It is meant for a readiness probe
// (a load balancer or orchestrator asks it every few seconds), not for
// every message.
func (q *Queue) Ready() error {
	if q.closedFlag.Load() {
		return ErrClosed
	}
	if q.lowSpace() {
		return ErrLowSpace
	}
	f, err := os.CreateTemp(q.journalDir, ".ready-*")
	if err != nil {
		return fmt.Errorf("queue: not writable: %w", err)
	}
	name := f.Name()
	_, err = f.Write([]byte{'\n'})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	os.Remove(name)
	if err != nil {
		return fmt.Errorf("queue: not writable: %w", err)
	}
	return nil
}
