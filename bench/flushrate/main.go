//go:build linux

// Command flushrate measures how fast the disk under a directory makes
// writes durable, the limit every durable mail queue lives under:
//
//   - file: one file per message, as Postfix and qmail store mail: create,
//     write the message, fsync the file, fsync the directory, close. Run
//     with 1 writer and with -writers in parallel (a server's sessions).
//
//   - log: an append-only log, as qmgate's journal is: append, fdatasync.
//     With one message per flush this is the disk's flush rate; with
//     -batch messages per flush it is what group commit can reach.
//
//   - log into a preallocated file (fallocate first, as qmgate's journal
//     segments are), one fdatasync per message: appends that change
//     neither the file's size nor its allocation, so no file system
//     journal commit rides on the flush.
//
//   - log into a prewritten file (zeros written and synced first, as a
//     recycled segment would be), one fdatasync per message and per
//     -batch: fallocate leaves its blocks marked unwritten, and the
//     first write into each converts them, a change of the file's
//     metadata that the flush must commit; prewritten blocks need none.
//
//   - parallel writers into one preallocated log: -writers goroutines
//     each write their share of -batch messages at offsets reserved for
//     them, in parallel, then one fdatasync makes the batch durable. This
//     is the most a journal with group commit can reach when its writers
//     place their own bodies (the disk's best durable rate for large
//     messages).
//
// Every result also gives MB/s, so that rates at different message sizes
// compare.
//
//	flushrate [-dir DIR] [-size BYTES] [-seconds S] [-writers N] [-batch N] [-modes file,log,parallel] [-json]
//
// Files are created in a fresh subdirectory of DIR and removed afterwards.
// It runs on Linux, whose fdatasync and fallocate it measures.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// preallocBytes is what the preallocated log test reserves: more than it
// writes in a few seconds on any disk it is likely to meet (past it, the
// file simply grows).
const preallocBytes = 256 << 20

// parallelPreallocBytes is the same for the parallel log test, which moves
// far more bytes with large messages.
const parallelPreallocBytes = 2 << 30

// Result is one measurement.
type Result struct {
	Name     string  `json:"name"`
	Writers  int     `json:"writers"`
	Batch    int     `json:"batch"`
	Flushes  int64   `json:"flushes"`
	Messages int64   `json:"messages"`
	Seconds  float64 `json:"seconds"`
	PerSec   float64 `json:"messages_per_sec"`
	FlushSec float64 `json:"flushes_per_sec"`
	// LatencyUS is the mean time of one durable step, in microseconds.
	LatencyUS float64 `json:"latency_us"`
	// MBPerSec is the durable payload rate, in 10^6 bytes a second.
	MBPerSec float64 `json:"mb_per_sec"`
}

func main() {
	dir := flag.String("dir", ".", "directory on the filesystem to measure")
	size := flag.Int("size", 2048, "message size in bytes")
	seconds := flag.Float64("seconds", 3, "duration of each measurement")
	writers := flag.Int("writers", 16, "parallel writers for the parallel file test")
	batch := flag.Int("batch", 32, "messages per flush for the batched log test")
	asJSON := flag.Bool("json", false, "print JSON")
	modes := flag.String("modes", "file,log,parallel", "which measurements: file (one file per message), log (the append logs), prewritten (the log into a file written with zeros first), parallel (parallel writers into one preallocated log)")
	flag.Parse()
	want := map[string]bool{}
	for _, m := range strings.Split(*modes, ",") {
		want[strings.TrimSpace(m)] = true
	}
	work, err := os.MkdirTemp(*dir, "flushrate-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "flushrate:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(work)
	d := time.Duration(*seconds * float64(time.Second))
	msg := make([]byte, *size)
	for i := range msg {
		msg[i] = 'X'
	}
	var res []Result
	add := func(r Result, err error) {
		if err != nil {
			fmt.Fprintln(os.Stderr, "flushrate:", err)
			os.Exit(1)
		}
		res = append(res, r)
	}
	for _, w := range []int{1, *writers} {
		if !want["file"] {
			break
		}
		add(fileTest(work, msg, w, d))
	}
	for _, t := range []struct {
		mode  string
		batch int
		kind  logKind
	}{{"log", 1, grown}, {"log", *batch, grown}, {"log", 1, preallocated}, {"prewritten", 1, prewritten}, {"prewritten", *batch, prewritten}} {
		if !want[t.mode] {
			continue
		}
		add(logTest(work, msg, t.batch, t.kind, d))
	}
	if want["parallel"] {
		add(parallelLogTest(work, msg, *writers, *batch, d))
	}
	for i := range res {
		res[i].MBPerSec = res[i].PerSec * float64(*size) / 1e6
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	for _, r := range res {
		fmt.Printf("%-16s writers=%-3d batch=%-3d %8.0f messages/s %8.1f MB/s %8.0f flushes/s %7.0f µs per flush\n",
			r.Name, r.Writers, r.Batch, r.PerSec, r.MBPerSec, r.FlushSec, r.LatencyUS)
	}
}

// fileTest: each writer loops create/write/fsync/fsync(dir)/close, then
// unlinks its files at the end (as a queue removes delivered mail later).
func fileTest(work string, msg []byte, writers int, d time.Duration) (Result, error) {
	dir := filepath.Join(work, "files-"+strconv.Itoa(writers))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return Result{}, err
	}
	dfd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return Result{}, err
	}
	defer syscall.Close(dfd)
	var n, flushes atomic.Int64
	var firstErr error
	var once sync.Once
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				name := filepath.Join(dir, strconv.Itoa(w)+"."+strconv.Itoa(i))
				f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err == nil {
					_, err = f.Write(msg)
					if err == nil {
						err = f.Sync()
					}
					if err == nil {
						err = syscall.Fsync(dfd)
					}
					if cerr := f.Close(); err == nil {
						err = cerr
					}
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				n.Add(1)
				flushes.Add(2)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	os.RemoveAll(dir)
	if firstErr != nil {
		return Result{}, firstErr
	}
	r := Result{Name: "file", Writers: writers, Batch: 1, Messages: n.Load(), Flushes: flushes.Load(), Seconds: el.Seconds()}
	r.PerSec = float64(r.Messages) / el.Seconds()
	r.FlushSec = float64(r.Flushes) / el.Seconds()
	if r.Messages > 0 {
		r.LatencyUS = float64(el.Microseconds()) * float64(writers) / float64(r.Messages)
	}
	return r, nil
}

// logKind is how the log test's file gets its blocks.
type logKind int

const (
	grown        logKind = iota // by the appends
	preallocated                // fallocate(2) first
	prewritten                  // zeros written and synced first
)

// prewriteBytes is what the prewritten log test fills with zeros first;
// past it, the file grows with its appends.
const prewriteBytes = 128 << 20

// logTest appends batch messages with one write and one fdatasync, over and
// over, to one file whose blocks come as kind says.
func logTest(work string, msg []byte, batch int, kind logKind, d time.Duration) (Result, error) {
	name := [...]string{"log", "log-preallocated", "log-prewritten"}[kind]
	f, err := os.OpenFile(filepath.Join(work, name+"-"+strconv.Itoa(batch)), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	if kind == prewritten {
		zero := make([]byte, 1<<20)
		for off := int64(0); off < prewriteBytes; off += int64(len(zero)) {
			if _, err := f.WriteAt(zero, off); err != nil {
				return Result{}, err
			}
		}
		if err := f.Sync(); err != nil {
			return Result{}, err
		}
	}
	if kind == preallocated {
		if err := preallocate(f, preallocBytes); err != nil {
			return Result{}, err
		}
	}
	buf := make([]byte, 0, len(msg)*batch)
	for i := 0; i < batch; i++ {
		buf = append(buf, msg...)
	}
	var flushes int64
	start := time.Now()
	var off int64
	for time.Since(start) < d {
		if _, err := f.WriteAt(buf, off); err != nil {
			return Result{}, err
		}
		off += int64(len(buf))
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return Result{}, err
		}
		flushes++
	}
	el := time.Since(start)
	r := Result{Name: name, Writers: 1, Batch: batch, Flushes: flushes, Messages: flushes * int64(batch), Seconds: el.Seconds()}
	r.PerSec = float64(r.Messages) / el.Seconds()
	r.FlushSec = float64(flushes) / el.Seconds()
	if flushes > 0 {
		r.LatencyUS = float64(el.Microseconds()) / float64(flushes)
	}
	return r, nil
}

// preallocate gives f its first n bytes' blocks with fallocate(2), durably.
func preallocate(f *os.File, n int64) error {
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
		return fmt.Errorf("fallocate: %w", err)
	}
	return f.Sync()
}

// parallelLogTest: rounds of batch messages into one preallocated file,
// each round's messages written by writers goroutines in parallel at
// offsets reserved in order, then one fdatasync for the round.
func parallelLogTest(work string, msg []byte, writers, batch int, d time.Duration) (Result, error) {
	writers = max(1, min(writers, batch))
	f, err := os.OpenFile(filepath.Join(work, "log-parallel"), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	if err := preallocate(f, parallelPreallocBytes); err != nil {
		return Result{}, err
	}
	var flushes int64
	var off int64
	errs := make([]error, writers)
	start := time.Now()
	for time.Since(start) < d {
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < batch; i += writers {
					if _, err := f.WriteAt(msg, off+int64(i*len(msg))); err != nil {
						errs[w] = err
						return
					}
				}
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return Result{}, err
			}
		}
		off += int64(batch * len(msg))
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return Result{}, err
		}
		flushes++
	}
	el := time.Since(start)
	r := Result{Name: "log-parallel", Writers: writers, Batch: batch, Flushes: flushes, Messages: flushes * int64(batch), Seconds: el.Seconds()}
	r.PerSec = float64(r.Messages) / el.Seconds()
	r.FlushSec = float64(flushes) / el.Seconds()
	if flushes > 0 {
		r.LatencyUS = float64(el.Microseconds()) / float64(flushes)
	}
	return r, nil
}
