package queue

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qmgate/qmgate/mail"
)

// BenchmarkPut measures durable commits of 2 KB messages at 1, 16 and 64
// concurrent writers, for the journal and, in the same run, for the
// baseline of one file per message (create, write, fsync, rename,
// directory fsync). Reported per sub-benchmark: msgs/s, p99-ms (Put
// latency), and for the journal flush-ms (mean time per group commit)
// p99/flush and cpu-us/msg. Run it on the disk the queue will use:
//
//	TMPDIR=/var/tmp/qmgate-bench go test -run '^$' -bench Put -benchtime 5s ./queue
func BenchmarkPut(b *testing.B) {
	body := bodyOf(2048, 1)
	env := mail.Envelope{Sender: "alice@example.org", Recipients: []string{"bob@example.com"}}
	for _, w := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("journal/writers=%d", w), func(b *testing.B) {
			q, err := Open(b.TempDir(), Options{Logger: quietLogger(), Passive: true})
			if err != nil {
				b.Fatal(err)
			}
			defer q.Close()
			ctx := context.Background()
			q.mu.Lock()
			q.flushTimes = make([]time.Duration, 0, 1024)
			q.mu.Unlock()
			m0 := q.Metrics()
			before := m0.Batches
			cpu0 := processCPU()
			lat, elapsed := runWriters(b, w, func() error {
				_, err := q.Put(ctx, env, bytes.NewReader(body))
				return err
			})
			cpu := processCPU() - cpu0
			m1 := q.Metrics()
			batches := m1.Batches - before
			q.mu.Lock()
			flushes := q.flushTimes
			q.flushTimes = nil
			q.mu.Unlock()
			report(b, lat, elapsed)
			if batches > 0 {
				// The flush interval is the time from one group commit
				// to the next; the disk's own tail shows in flush-p99.
				interval := float64(elapsed) / float64(batches)
				p99 := float64(percentile(lat, 0.99))
				b.ReportMetric(interval/1e6, "flush-ms")
				b.ReportMetric(float64(percentile(flushes, 0.99))/1e6, "flush-p99-ms")
				b.ReportMetric(p99/interval, "p99/flush")
				b.ReportMetric(float64(len(lat))/float64(batches), "msgs/flush")
				// Flushes that alone took more than two mean intervals:
				// every Put in such a batch misses the target, whatever
				// the queue does (the disk's own stalls, or a rotation).
				stalls := 0
				for _, f := range flushes {
					if float64(f) > 2*interval {
						stalls++
					}
				}
				b.ReportMetric(float64(stalls), "stalled-flushes")
				b.ReportMetric(float64(percentile(flushes, 1))/1e6, "flush-max-ms")
				// Time the committer held batches open for callers it
				// expected back (linger), per flush.
				b.ReportMetric(float64((m1.LingerTime-m0.LingerTime).Microseconds())/float64(batches), "hold-us/flush")
			}
			// CPU per Put (the writer and the queue together): when a
			// flush wakes its batch, the writers queue for the cores.
			b.ReportMetric(float64(cpu.Microseconds())/float64(max(len(lat), 1)), "cpu-us/msg")
		})
		b.Run(fmt.Sprintf("baseline/writers=%d", w), func(b *testing.B) {
			dir := b.TempDir()
			tmp, msg := filepath.Join(dir, "tmp"), filepath.Join(dir, "msg")
			os.Mkdir(tmp, 0o700)
			os.Mkdir(msg, 0o700)
			var seq atomic.Int64
			lat, elapsed := runWriters(b, w, func() error {
				return fileBaseline(tmp, msg, seq.Add(1), body)
			})
			report(b, lat, elapsed)
		})
	}
}

// processCPU is the process's user and system time so far.
func processCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fileBaseline commits one message the classic way.
func fileBaseline(tmp, msg string, n int64, body []byte) error {
	name := fmt.Sprint(n)
	f, err := os.OpenFile(filepath.Join(tmp, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(body); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	f.Close()
	if err := os.Rename(filepath.Join(tmp, name), filepath.Join(msg, name)); err != nil {
		return err
	}
	d, err := os.Open(msg)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Fsync(int(d.Fd()))
}

// runWriters runs b.N operations on w goroutines and returns each one's
// latency and the wall time.
func runWriters(b *testing.B, w int, op func() error) ([]time.Duration, time.Duration) {
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t := time.Now()
				if err := op(); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	return lat, elapsed
}

func report(b *testing.B, lat []time.Duration, elapsed time.Duration) {
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(percentile(lat, 0.50))/1e6, "p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.90))/1e6, "p90-ms")
	b.ReportMetric(float64(percentile(lat, 0.99))/1e6, "p99-ms")
}

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkPutSize measures durable commits of larger messages (64 KiB,
// 256 KiB and 1 MiB) at 10 concurrent writers, the load of bench/run's
// ingest: msgs/s, MB/s, the flush interval, messages per flush and CPU per
// message. Run it on the queue's disk:
//
//	TMPDIR=/var/tmp/qmgate-bench go test -run '^$' -bench PutSize -benchtime 3s ./queue
func BenchmarkPutSize(b *testing.B) {
	env := mail.Envelope{Sender: "alice@example.org", Recipients: []string{"bob@example.com"}}
	for _, size := range []int{64 << 10, 128 << 10, 256 << 10, 1 << 20} {
		body := bodyOf(size, 1)
		b.Run(fmt.Sprintf("size=%dKiB", size>>10), func(b *testing.B) {
			q := openBench(b)
			defer q.Close()
			ctx := context.Background()
			q.mu.Lock()
			q.flushTimes = make([]time.Duration, 0, 1024)
			q.mu.Unlock()
			m0 := q.Metrics()
			cpu0 := processCPU()
			lat, elapsed := runWriters(b, 10, func() error {
				_, err := q.Put(ctx, env, bytes.NewReader(body))
				return err
			})
			cpu := processCPU() - cpu0
			batches := q.Metrics().Batches - m0.Batches
			q.mu.Lock()
			flushes := q.flushTimes
			q.flushTimes = nil
			q.mu.Unlock()
			var busy time.Duration
			for _, f := range flushes {
				busy += f
			}
			report(b, lat, elapsed)
			// The committer's own time (write and fdatasync of a batch)
			// as a share of the run: near 1, the disk is the limit.
			b.ReportMetric(float64(busy)/float64(elapsed), "committer-busy")
			if len(flushes) > 0 {
				b.ReportMetric(float64(busy)/float64(len(flushes))/1e6, "write+sync-ms")
			}
			b.ReportMetric(float64(len(lat))*float64(size)/elapsed.Seconds()/1e6, "MB/s")
			if batches > 0 {
				b.ReportMetric(float64(elapsed)/float64(batches)/1e6, "flush-ms")
				b.ReportMetric(float64(len(lat))/float64(batches), "msgs/flush")
			}
			b.ReportMetric(float64(cpu.Microseconds())/float64(max(len(lat), 1)), "cpu-us/msg")
		})
	}
}

// BenchmarkPutMixed measures whether large messages hold back small ones:
// 9 writers commit 2 KB messages while one more writer commits bodies of
// the given size (none: the small writers alone). Reported: the small
// messages' msgs/s and latency, the large writer's msgs/s and MB/s, CPU
// per small message.
//
//	TMPDIR=/var/tmp/qmgate-bench go test -run '^$' -bench PutMixed -benchtime 3s ./queue
func BenchmarkPutMixed(b *testing.B) {
	env := mail.Envelope{Sender: "alice@example.org", Recipients: []string{"bob@example.com"}}
	small := bodyOf(2048, 1)
	for _, size := range []int{0, 200 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("large=%dKiB", size>>10), func(b *testing.B) {
			q := openBench(b)
			defer q.Close()
			ctx := context.Background()
			stop := make(chan struct{})
			var large atomic.Int64
			var wg sync.WaitGroup
			if size > 0 {
				big := bodyOf(size, 2)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := q.Put(ctx, env, bytes.NewReader(big)); err != nil {
							b.Error(err)
							return
						}
						large.Add(1)
					}
				}()
			}
			cpu0 := processCPU()
			lat, elapsed := runWriters(b, 9, func() error {
				_, err := q.Put(ctx, env, bytes.NewReader(small))
				return err
			})
			cpu := processCPU() - cpu0
			n := large.Load()
			close(stop)
			wg.Wait()
			report(b, lat, elapsed)
			b.ReportMetric(float64(n)/elapsed.Seconds(), "large-msgs/s")
			b.ReportMetric(float64(n)*float64(size)/elapsed.Seconds()/1e6, "large-MB/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(max(len(lat), 1)), "cpu-us/msg")
		})
	}
}

// openBench opens a queue for the size benchmarks. To compare settings,
// QMGATE_BENCH_INLINE_MAX sets Options.InlineMax, QMGATE_BENCH_SEGMENT
// Options.SegmentSize, and QMGATE_BENCH_PLACE_MIN the smallest body a
// Writer places into the journal itself (placing against copying).
func openBench(b *testing.B) *Queue {
	opt := Options{Logger: quietLogger(), Passive: true}
	if v, err := strconv.ParseInt(os.Getenv("QMGATE_BENCH_INLINE_MAX"), 10, 64); err == nil {
		opt.InlineMax = v
	}
	if v, err := strconv.ParseInt(os.Getenv("QMGATE_BENCH_SEGMENT"), 10, 64); err == nil {
		opt.SegmentSize = v
	}
	q, err := Open(b.TempDir(), opt)
	if err != nil {
		b.Fatal(err)
	}
	if v, err := strconv.ParseInt(os.Getenv("QMGATE_BENCH_PLACE_MIN"), 10, 64); err == nil {
		q.mu.Lock()
		q.placeMin = v
		q.mu.Unlock()
	}
	return q
}
