// Package logging holds the daemon's log plumbing: a writer that batches log
// lines into few write(2) calls.
//
// At tens of thousands of messages a second the daemon logs as many lines,
// and one write per line was a sixth of its CPU (BENCHMARKS.md). A Writer
// collects lines and writes them out when its buffer fills, every interval,
// and on Flush or Close, so a line is at most one interval late. What is lost
// on SIGKILL is at most that interval's lines; the queue, not the log, is
// the record of what was accepted.
package logging

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// DefaultInterval is how late a log line may reach its destination.
const DefaultInterval = 100 * time.Millisecond

// Writer is a buffered, periodically flushed, concurrency-safe writer. Each
// Write is kept whole (slog hands over one record per Write).
type Writer struct {
	mu     sync.Mutex
	bw     *bufio.Writer
	stop   chan struct{}
	done   chan struct{}
	closed bool
}

// NewWriter returns a Writer on w that flushes every interval
// (DefaultInterval when zero or less).
func NewWriter(w io.Writer, interval time.Duration) *Writer {
	if interval <= 0 {
		interval = DefaultInterval
	}
	lw := &Writer{bw: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(lw.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				lw.Flush()
			case <-lw.stop:
				return
			}
		}
	}()
	return lw
}

// Write implements io.Writer. After Close it writes through.
func (lw *Writer) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	n, err := lw.bw.Write(p)
	if lw.closed && err == nil {
		err = lw.bw.Flush()
	}
	return n, err
}

// Flush writes out what is buffered.
func (lw *Writer) Flush() error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.bw.Flush()
}

// Close flushes and stops the periodic flushing; later writes go straight
// through.
func (lw *Writer) Close() error {
	lw.mu.Lock()
	if lw.closed {
		lw.mu.Unlock()
		return nil
	}
	lw.closed = true
	lw.mu.Unlock()
	close(lw.stop)
	<-lw.done
	return lw.Flush()
}
