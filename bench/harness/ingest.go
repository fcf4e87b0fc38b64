//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

// FlushRates are bench/flushrate's results on the work directory's disk.
type FlushRates struct {
	File1, FileN, Log1, LogBatch, LogPre, LogParallel flushResult
}

type flushResult struct {
	Name     string  `json:"name"`
	Writers  int     `json:"writers"`
	Batch    int     `json:"batch"`
	PerSec   float64 `json:"messages_per_sec"`
	FlushSec float64 `json:"flushes_per_sec"`
	Latency  float64 `json:"latency_us"`
	MBPerSec float64 `json:"mb_per_sec"`
}

func (h *Harness) flushRate() *Section {
	s := &Section{}
	r, res, err := h.runFlushrate(5*time.Minute, h.sizes.Size, "-writers", "16", "-batch", "32")
	if err != nil || len(res) != 6 {
		h.fail("flushrate: %v %q %s", err, r.Stdout, r.Stderr)
	}
	h.flush = &FlushRates{File1: res[0], FileN: res[1], Log1: res[2], LogBatch: res[3], LogPre: res[4], LogParallel: res[5]}
	s.printf("bench/flushrate on the queue's filesystem, %d-byte messages, %.1f s each. Durable ingest cannot beat these without sharing flushes; "+
		"the ingest tables below give each figure as a multiple of the first line.\n\n", h.sizes.Size, h.sizes.FlushSeconds)
	row := func(method string, r flushResult) []string {
		return []string{method, rate(r.PerSec), fmt.Sprintf("%.1f", r.MBPerSec), rate(r.FlushSec), rate(r.Latency)}
	}
	s.table([][]string{
		{"method", "messages/s", "MB/s", "flushes/s", "µs per durable step"},
		row("one file per message (create, write, fsync, fsync dir), 1 writer", res[0]),
		row(fmt.Sprintf("one file per message, %d writers", res[1].Writers), res[1]),
		row("append log, one fdatasync per message", res[2]),
		row(fmt.Sprintf("append log, one fdatasync per %d messages", res[3].Batch), res[3]),
		row("append log in a preallocated file (as qmgate's journal), one fdatasync per message", res[4]),
		row(fmt.Sprintf("preallocated log, %d writers placing their messages in parallel, one fdatasync per %d messages", res[5].Writers, res[5].Batch), res[5]),
	})
	return s
}

// runFlushrate runs bench/flushrate on the work directory's disk with
// messages of size bytes and the extra arguments, and reads its results.
func (h *Harness) runFlushrate(timeout time.Duration, size int, args ...string) (ToolRun, []flushResult, error) {
	r, err := h.runTool(timeout, h.bin("flushrate"), append([]string{"-json", "-dir", h.work, "-size", strconv.Itoa(size),
		"-seconds", fmt.Sprint(h.sizes.FlushSeconds)}, args...)...)
	var res []flushResult
	if err == nil {
		err = json.Unmarshal([]byte(r.Stdout), &res)
	}
	return r, res, err
}

// fileLimitRate is the single-writer one-file-per-message rate, the
// yardstick ingest figures are given against.
func (h *Harness) fileLimitRate() float64 {
	if h.flush == nil {
		return 0
	}
	return h.flush.File1.PerSec
}

// Run is one measured run of a load generator against one server.
type Run struct {
	Server    string
	Load      Load
	Usage     Usage
	ServerCPU time.Duration
	Received  int64
	Err       string
}

// measure runs gen while watching the machine and the server's CPU.
func (h *Harness) measure(server string, cpu func() time.Duration, gen func() (Load, error)) Run {
	before := h.sample()
	c0 := time.Duration(0)
	if cpu != nil {
		c0 = cpu()
	}
	l, err := gen()
	r := Run{Server: server, Load: l, Usage: since(before, h)}
	if cpu != nil {
		r.ServerCPU = cpu() - c0
	}
	if err != nil {
		r.Err = err.Error()
	} else if !l.OK() {
		r.Err = fmt.Sprintf("%s: %d of %d accepted (exit %d) %s", l.Tool, l.Accepted, l.Messages, l.Exit, l.Output)
	}
	h.logf("   %-22s %-12s s=%-3d %7.0f msg/s  %d/%d accepted  %s", server, l.Tool, l.Sessions, l.Rate(), l.Accepted, l.Messages, r.Err)
	return r
}

// awaitDelivered waits until count() reaches want (what the source saw
// accepted), records the comparison, and returns what the far end got.
func (h *Harness) awaitDelivered(what string, want int64, count func() int64, timeout time.Duration) int64 {
	got, _ := waitCount(timeout, 50*time.Millisecond, count, want)
	// Anything more than the acknowledgements would be a duplicate; give
	// it a moment to show.
	time.Sleep(100 * time.Millisecond)
	if n := count(); n > got {
		got = n
	}
	c := Check{What: what, Acked: want, Received: got, OK: got == want}
	if got > want {
		c.Note = "(more delivered than acknowledged: duplicates without a crash)"
	}
	if got < want {
		c.Note = fmt.Sprintf("(%d acknowledged messages missing after %v)", want-got, timeout)
	}
	h.addCheck(c)
	return got
}

// ingestProto is what differs between the QMQP and SMTP ingest runs.
type ingestProto struct {
	name       string // "QMQP", "SMTP"
	postfixD   string // Postfix's daemon
	sinkName   string
	qmgateAddr func(*Qmgate) string
	postfixAdr func(*Postfix) string
	startSink  func(h *Harness, addr string) (*Sink, error)
	source     func(h *Harness, addr string, sessions, msgs, size int) (Load, error)
	target     float64 // qmgate / Postfix
	sinkTarget float64 // qmgate / sink, 0 for none
}

func (h *Harness) qmqpIngest() *Section {
	return h.ingest(ingestProto{
		name: "QMQP", postfixD: "qmqpd", sinkName: "qmqp-sink",
		qmgateAddr: func(q *Qmgate) string { return q.QMQP },
		postfixAdr: func(p *Postfix) string { return p.QMQPAddr },
		startSink:  (*Harness).startQMQPSink,
		source:     (*Harness).qmqpSource,
		target:     10, sinkTarget: 0.7,
	})
}

func (h *Harness) smtpIngest() *Section {
	return h.ingest(ingestProto{
		name: "SMTP", postfixD: "smtpd", sinkName: "smtp-sink",
		qmgateAddr: func(q *Qmgate) string { return q.SMTP },
		postfixAdr: func(p *Postfix) string { return p.SMTPAddr },
		startSink:  (*Harness).startSMTPSink,
		source: func(h *Harness, addr string, sessions, msgs, size int) (Load, error) {
			return h.smtpSource(addr, sessions, msgs, size, false)
		},
		target: 5,
	})
}

// ingest measures one protocol's ingest at each session count: qmgate, the
// Postfix daemon, and the protocol's sink.
func (h *Harness) ingest(p ingestProto) *Section {
	s := &Section{}
	z := h.sizes
	gen := "qmqp-source"
	if p.name == "SMTP" {
		gen = "smtp-source"
	}
	s.printf("`%s` sends %d messages of %d bytes at each session count, one message per connection, to `qmgate serve` (route `discard:`), "+
		"to Postfix's `%s` (`default_transport = discard`) and to Postfix's `%s`. Both servers acknowledge a message only once it is in their "+
		"durable queue; the sink stores nothing and marks what `%s` itself can drive on this machine. "+
		"CPU is per message: the server's own (for Postfix every process of the instance), and the generator's; "+
		"*machine* is how busy both cores were, out of 200%%. *Flushes/msg* counts the disk's cache flushes during the run.\n\n",
		gen, z.IngestMsgs, z.Size, p.postfixD, p.sinkName, gen)

	pf := h.discardPostfix()
	sink, err := p.startSink(h, freePort())
	h.check(err)

	rows := [][]string{{"sessions", "qmgate msg/s", "Postfix " + p.postfixD + " msg/s", "ratio", p.sinkName + " msg/s", "qmgate / sink",
		"qmgate µs CPU/msg", "Postfix µs CPU/msg", "generator µs CPU/msg (qmgate run)", "machine CPU (qmgate run)", "flushes/msg qmgate", "flushes/msg Postfix", "qmgate ÷ file-per-message limit"}}
	type result struct{ q, pf, sk Run }
	var results []result
	for _, sessions := range z.IngestSessions {
		var res result
		// The sink first: it needs no settling.
		res.sk = h.measure(p.sinkName, sink.CPU, func() (Load, error) { return p.source(h, sink.Addr, sessions, z.IngestMsgs, z.Size) })

		base := pf.Delivered()
		res.pf = h.measure("Postfix "+p.postfixD, pf.CPU, func() (Load, error) { return p.source(h, p.postfixAdr(pf), sessions, z.IngestMsgs, z.Size) })
		res.pf.Received = h.awaitDelivered(fmt.Sprintf("%s ingest, Postfix %s, %d sessions", p.name, p.postfixD, sessions),
			res.pf.Load.Accepted, func() int64 { return pf.Delivered() - base }, 5*time.Minute)
		testpeer.Poll(2*time.Minute, 100*time.Millisecond, func() bool { return pf.QueueCount() == 0 })

		q, err := h.startQmgate(fmt.Sprintf("ingest-%s-%d", p.name, sessions), QmgateOpts{Route: "discard:"})
		h.check(err)
		prof := q.Profile(fmt.Sprintf("%s-ingest-%d", p.name, sessions), h.profileSeconds())
		res.q = h.measure("qmgate", q.CPU, func() (Load, error) { return p.source(h, p.qmgateAddr(q), sessions, z.IngestMsgs, z.Size) })
		res.q.Received = h.awaitDelivered(fmt.Sprintf("%s ingest, qmgate, %d sessions", p.name, sessions),
			res.q.Load.Accepted, q.Delivered, 2*time.Minute)
		<-prof
		q.Stop()
		results = append(results, res)

		flushes := func(r Run) string {
			if r.Load.Accepted == 0 || h.disk == "" {
				return "–"
			}
			return fmt.Sprintf("%.2f", float64(r.Usage.Flushes)/float64(r.Load.Accepted))
		}
		sinkRatio := "–"
		if p.sinkTarget > 0 {
			sinkRatio = pct(res.q.Load.Rate(), res.sk.Load.Rate())
		}
		rows = append(rows, []string{
			strconv.Itoa(sessions), rate(res.q.Load.Rate()), rate(res.pf.Load.Rate()), ratio(res.q.Load.Rate(), res.pf.Load.Rate()),
			rate(res.sk.Load.Rate()), sinkRatio,
			usPer(res.q.ServerCPU, res.q.Load.Accepted), usPer(res.pf.ServerCPU, res.pf.Load.Accepted),
			usPer(res.q.Load.CPU, res.q.Load.Accepted), fmt.Sprintf("%.0f%%", res.q.Usage.CPUPercent()),
			flushes(res.q), flushes(res.pf), ratio(res.q.Load.Rate(), h.fileLimitRate()),
		})
	}
	s.table(rows)
	for _, res := range results {
		for _, r := range []Run{res.q, res.pf, res.sk} {
			if r.Err != "" {
				s.printf("- %s, %d sessions: %s\n", r.Server, r.Load.Sessions, r.Err)
			}
		}
	}
	s.printf("\n")

	if len(results) > 0 {
		last := results[len(results)-1]
		sessions := last.q.Load.Sessions
		rows, err := h.profileRun(p.name+"-ingest", func(q *Qmgate, msgs int) (Load, error) {
			return p.source(h, p.qmgateAddr(q), sessions, msgs, z.Size)
		}, max(last.q.Load.Rate(), 100))
		if err != nil {
			s.printf("The profile run failed: %v\n\n", err)
		} else {
			s.printf("Where qmgate's CPU goes: a CPU profile (pprof, %v) of a separate run of the same load at %d sessions. "+
				"A sample counts for every part on its stack, so parts overlap; µs per message is the share of the daemon's measured CPU per accepted message.\n\n",
				h.profileSeconds(), sessions)
			s.table(rows)
		}
	}

	for _, res := range results {
		qr, pr, kr := res.q.Load.Rate(), res.pf.Load.Rate(), res.sk.Load.Rate()
		ts := []Target{{
			Name: fmt.Sprintf("%s ingest, %d sessions: ≥ %.0f× Postfix %s", p.name, res.q.Load.Sessions, p.target, p.postfixD),
			Want: fmt.Sprintf("≥ %.0f×", p.target), Got: fmt.Sprintf("%s (%s vs %s msg/s)", ratio(qr, pr), rate(qr), rate(pr)),
			Pass: pr > 0 && qr >= p.target*pr && res.q.Err == "",
		}}
		goals := []goal{{fmt.Sprintf("%.0f× Postfix's %s msg/s", p.target, rate(pr)), p.target * pr, !ts[0].Pass, false}}
		if p.sinkTarget > 0 {
			ts = append(ts, Target{
				Name: fmt.Sprintf("%s ingest, %d sessions: ≥ %.0f%% of %s", p.name, res.q.Load.Sessions, 100*p.sinkTarget, p.sinkName),
				Want: fmt.Sprintf("≥ %.0f%%", 100*p.sinkTarget), Got: fmt.Sprintf("%s (%s vs %s msg/s)", pct(qr, kr), rate(qr), rate(kr)),
				Pass: kr > 0 && qr >= p.sinkTarget*kr && res.q.Err == "",
			})
			goals = append(goals, goal{fmt.Sprintf("%.0f%% of %s's %s msg/s", 100*p.sinkTarget, p.sinkName, rate(kr)), p.sinkTarget * kr, !ts[1].Pass, true})
		}
		// One paragraph explains every failing target of this run.
		first := -1
		for i := range ts {
			if ts[i].Pass {
				continue
			}
			if first < 0 {
				first = i
				ts[i].Limit = h.explainIngest(p, res.q, res.pf, res.sk, goals)
			} else {
				ts[first].Shared = append(ts[first].Shared, ts[i].Name)
			}
		}
		for _, t := range ts {
			s.target(t)
		}
	}
	return s
}

// goal is a rate a target asks for.
type goal struct {
	what   string
	rate   float64
	failed bool
	ofSink bool // the goal is itself a share of the sink's rate
}

// profileSeconds is how long a CPU profile of an ingest run lasts.
func (h *Harness) profileSeconds() time.Duration {
	if h.quick {
		return time.Second
	}
	return 5 * time.Second
}

// explainIngest says, from this run's measurements, what bounds an ingest
// figure: the load generator's own ceiling (the sink), the CPU each party
// spends per message on a machine whose cores they share, and the disk.
func (h *Harness) explainIngest(p ingestProto, q, pf, sk Run, goals []goal) string {
	qUS := perMessage(q.ServerCPU, q.Load.Accepted)
	pUS := perMessage(pf.ServerCPU, pf.Load.Accepted)
	gUS := perMessage(q.Load.CPU, q.Load.Accepted)
	skG := perMessage(sk.Load.CPU, sk.Load.Accepted)
	qr, kr := q.Load.Rate(), sk.Load.Rate()
	cores := runtime.NumCPU()
	var b strings.Builder
	fmt.Fprintf(&b, "At %d sessions qmgate accepted %s msg/s. ", q.Load.Sessions, rate(qr))
	var top float64
	for _, g := range goals {
		if !g.failed {
			continue
		}
		fmt.Fprintf(&b, "The target %s is %s msg/s", g.what, rate(g.rate))
		if kr > 0 && !g.ofSink {
			fmt.Fprintf(&b, ", %s of the %s msg/s that `%s` reached against `%s`, a server that does no work, in the same run", pct(g.rate, kr), rate(kr), sk.Load.Tool, p.sinkName)
		}
		b.WriteString(". ")
		top = max(top, g.rate)
	}
	el := q.Load.Elapsed.Seconds()
	share := func(d time.Duration) float64 { return 100 * d.Seconds() / max(el, 1e-9) }
	fmt.Fprintf(&b, "**CPU:** per message qmgate used %.0f µs (Postfix %.0f µs, %.1f× more) and `%s` itself %.0f µs (%.0f µs against the sink); "+
		"at %s msg/s those two alone would need %.2f of the machine's %d cores, before the kernel's loopback TCP work for both ends. "+
		"During qmgate's run the cores were %.0f%% busy out of %d%%: qmgate %.0f%%, the generator %.0f%%, everything else "+
		"(kernel work charged to no process, and other processes on this shared machine) %.0f%%. ",
		qUS, pUS, pUS/max(qUS, 1), q.Load.Tool, gUS, skG,
		rate(top), (qUS+gUS)*top/1e6, cores,
		q.Usage.CPUPercent(), 100*cores, share(q.ServerCPU), share(q.Load.CPU), q.Usage.CPUPercent()-share(q.ServerCPU)-share(q.Load.CPU))
	if h.disk != "" && q.Load.Accepted > 0 && h.flush != nil {
		fl := float64(q.Usage.Flushes) / el
		fmt.Fprintf(&b, "**Disk:** %.0f cache flushes a second during the run (%.2f per message, group commit sharing them), against %s a second "+
			"with one fdatasync per append in the flush test: ", fl, float64(q.Usage.Flushes)/float64(q.Load.Accepted), rate(h.flushLog1()))
		if fl > 0.8*h.flushLog1() {
			b.WriteString("close to the disk's limit. ")
		} else {
			b.WriteString("not the limit. ")
		}
	}
	fmt.Fprintf(&b, "**Latency:** each session spent %.0f µs per message (connect, send, durable commit, reply, close) against %.0f µs with the sink; "+
		"one connection per message, one connect at a time from `%s`, so throughput is sessions ÷ that time.",
		1e6*el*float64(q.Load.Sessions)/float64(max(q.Load.Accepted, 1)),
		1e6*sk.Load.Elapsed.Seconds()*float64(sk.Load.Sessions)/float64(max(sk.Load.Accepted, 1)), q.Load.Tool)
	if top > 0 && sk.Load.Accepted > 0 && h.flush != nil && h.flush.LogPre.Latency > 0 {
		budget := 1e6 * float64(q.Load.Sessions) / top
		sinkUS := 1e6 * sk.Load.Elapsed.Seconds() * float64(sk.Load.Sessions) / float64(sk.Load.Accepted)
		left := budget - sinkUS
		flush := h.flush.LogPre.Latency
		fmt.Fprintf(&b, " At %s msg/s a session may spend %.0f µs per message; with the sink, which stores nothing, it already spent %.0f µs, "+
			"leaving %.0f µs to make the message durable, against %.0f µs for one fdatasync into a preallocated file on this disk (flush test above)",
			rate(top), budget, sinkUS, left, flush)
		if left < flush {
			b.WriteString(": less than one flush, so no server that stores mail before it replies can reach the target here at this session count.")
		} else {
			fmt.Fprintf(&b, ", %.1f flushes' worth (a commit waits for the flush under way, then its own).", left/flush)
		}
	}
	return b.String()
}

func (h *Harness) flushLog1() float64 {
	if h.flush == nil {
		return 0
	}
	return h.flush.Log1.FlushSec
}
