//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// largeDepth is qmtp-source's pipelining depth for large messages: four
// packages in flight per session keep a hub busy without holding hundreds
// of megabytes in flight.
const largeDepth = 4

// largeSessions is the session count for relaying large messages, as for
// the size curve.
const largeSessions = 10

// largePoint is one message size of the large-message measurement.
type largePoint struct {
	size  int
	msgs  int
	disk  float64 // bench/flushrate's best durable rate at this size; 0: not measured
	best  string  // the flushrate mode that reached it
	relay hubRelay
	drain drainRun
}

func (h *Harness) largeMessages() *Section {
	s := &Section{}
	z := h.sizes
	s.printf("At each size: the disk's best durable rate for it (the best of every `bench/flushrate` mode at that size, 10 writers where a mode "+
		"has several, one fdatasync per 10 messages where it batches: one file per message, an append log, a preallocated log, writers placing "+
		"their messages into one preallocated log in parallel), then hub to hub as in section 3 (`qmtp-source`, %d sessions, %d packages "+
		"in flight each → hub A → QMTP → hub B → `discard:`; the clock stops when B has delivered every message A acknowledged), then the "+
		"drain as in section 4 (the backlog queued while the next hop is down, then flushed to `qmtp-sink`; the clock runs from the flush until the sink has every message). "+
		"Each runs min(%d, %d MiB ÷ size) messages. Both hubs' queues and the drain's queue are on the disk flushrate measured; hub to hub writes "+
		"every message durably twice (once in each hub), the drain reads its backlog and removes it.\n\n",
		largeSessions, largeDepth, z.LargeMsgs, z.LargeBytes>>20)
	var pts []largePoint
	for _, size := range z.LargeSizes {
		p := largePoint{size: size, msgs: max(min(z.LargeMsgs, z.LargeBytes/size), 20)}
		p.disk, p.best = h.diskBest(size)
		p.relay = h.relayHubs(fmt.Sprintf("large-%d", size), fmt.Sprintf("hub to hub, %s messages: qmtp-source K → hub B delivered", sizeLabel(size)),
			largeSessions, p.msgs, size, largeDepth, false)
		p.drain = h.drainQmgate(fmt.Sprintf("large-drain-%d", size), "qmtp", p.msgs, size, largeDepth)
		h.logf("   size=%-8d disk %6.0f msg/s  hub→hub %6.0f msg/s  drain %6.0f msg/s", size, p.disk, p.relay.rate(), p.drain.rate())
		pts = append(pts, p)
	}
	rows, targets := largeReport(pts)
	s.table(rows)
	for _, p := range pts {
		if p.relay.err != nil {
			s.printf("- hub to hub at %s: %v\n", sizeLabel(p.size), p.relay.err)
		}
	}
	for _, t := range targets {
		s.target(t)
	}
	return s
}

// largeGoalSize is the size the goal is set at: hub to hub and the
// drain at 256 KiB reach 80 % of the disk's rate.
const largeGoalSize = 256 << 10

// largeReport is the table of the large-message measurement and its
// targets (at largeGoalSize, when measured).
func largeReport(pts []largePoint) ([][]string, []Target) {
	rows := [][]string{{"size", "messages", "disk msg/s (MB/s)", "disk's best mode", "hub to hub msg/s (MB/s)", "hub to hub ÷ disk", "hubs' CPU µs/msg (A + B)",
		"drain msg/s (MB/s)", "drain ÷ disk", "drain CPU µs/msg", "machine CPU (hub to hub, drain)"}}
	var targets []Target
	mbs := func(r float64, size int) string { return fmt.Sprintf("%s (%.0f)", rate(r), r*float64(size)/1e6) }
	for _, p := range pts {
		rr, dr := p.relay.rate(), p.drain.rate()
		disk := "–"
		if p.disk > 0 {
			disk = mbs(p.disk, p.size)
		}
		n := p.relay.load.Accepted
		best := p.best
		if best == "" {
			best = "–"
		}
		rows = append(rows, []string{sizeLabel(p.size), fmt.Sprint(p.msgs), disk, best, mbs(rr, p.size), pct(rr, p.disk),
			fmt.Sprintf("%s (%s + %s)", usPer(p.relay.cpuA+p.relay.cpuB, n), usPer(p.relay.cpuA, n), usPer(p.relay.cpuB, n)),
			mbs(dr, p.size), pct(dr, p.disk), usPer(p.drain.cpu, p.drain.got),
			fmt.Sprintf("%.0f%%, %.0f%%", p.relay.usage.CPUPercent(), p.drain.usage.CPUPercent())})
		if p.size != largeGoalSize {
			continue
		}
		for _, f := range []struct {
			what string
			r    float64
			cpu  string
			u    Usage
			n    int64
			ok   bool
		}{
			{"QMTP hub to hub", rr, usPer(p.relay.cpuA+p.relay.cpuB, n), p.relay.usage, n, p.relay.err == nil},
			{"drain to qmtp-sink", dr, usPer(p.drain.cpu, p.drain.got), p.drain.usage, p.drain.got, p.drain.got == p.drain.queued},
		} {
			t := Target{Name: fmt.Sprintf("%s at %s: ≥ 80 %% of the disk's rate", f.what, sizeLabel(p.size)), Want: "≥ 80 %",
				Got:  fmt.Sprintf("%s (%s vs %s msg/s)", pct(f.r, p.disk), rate(f.r), rate(p.disk)),
				Pass: f.ok && p.disk > 0 && f.r >= 0.8*p.disk}
			if !t.Pass {
				t.Limit = fmt.Sprintf("qmgate used %s µs of CPU per message; the machine was %.0f%% busy of 200%%; the disk made %d cache flushes "+
					"(%.2f per message) and %d writes in %s.", f.cpu, f.u.CPUPercent(), f.u.Flushes, float64(f.u.Flushes)/float64(max(f.n, 1)),
					f.u.Writes, secs(f.u.Elapsed))
			}
			targets = append(targets, t)
		}
	}
	return rows, targets
}

// diskBest is the disk's best durable rate for messages of size bytes over
// every mode of bench/flushrate (10 writers where a mode has several, one
// fdatasync per 10 messages where it batches), and which mode reached it;
// 0 when it cannot be measured (the reason goes to the log).
func (h *Harness) diskBest(size int) (float64, string) {
	r, err := h.runTool(5*time.Minute, h.bin("flushrate"), "-json", "-dir", h.work, "-size", strconv.Itoa(size),
		"-seconds", fmt.Sprint(h.sizes.FlushSeconds), "-writers", "10", "-batch", "10")
	var res []flushResult
	if err == nil {
		err = json.Unmarshal([]byte(r.Stdout), &res)
	}
	if err != nil || len(res) == 0 {
		h.logf("   flushrate at %d bytes: %v %s", size, err, r.Stderr)
		return 0, ""
	}
	return bestFlush(res)
}

// bestFlush picks the fastest of flushrate's results and names its mode.
func bestFlush(res []flushResult) (float64, string) {
	var best flushResult
	for _, r := range res {
		if r.PerSec > best.PerSec {
			best = r
		}
	}
	if best.PerSec <= 0 {
		return 0, ""
	}
	return best.PerSec, fmt.Sprintf("%s, %d writer(s), %d per fdatasync", best.Name, best.Writers, best.Batch)
}
