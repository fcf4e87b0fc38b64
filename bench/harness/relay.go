//go:build linux

package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

// endToEnd runs gen and returns its load and the time from its start until
// far() reached what it saw accepted.
func (h *Harness) endToEnd(gen func() (Load, error), far func() int64, timeout time.Duration) (Load, time.Duration, int64, error) {
	t0 := time.Now()
	var l Load
	var err error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l, err = gen()
	}()
	wg.Wait()
	if err != nil {
		return l, 0, 0, err
	}
	var got int64
	ok := testpeer.Poll(timeout, 10*time.Millisecond, func() bool {
		got = far()
		return got >= l.Accepted
	})
	el := time.Since(t0)
	if !ok {
		return l, el, got, fmt.Errorf("far end has %d of %d accepted messages after %v", got, l.Accepted, timeout)
	}
	return l, el, got, nil
}

func (h *Harness) hubToHub() *Section {
	s := &Section{}
	z := h.sizes
	s.printf("End to end: `qmtp-source` (%d sessions, %d packages in flight each) sends %d messages of %d bytes to hub A; A's only route is "+
		"`qmtp://` hub B, whose only route is `discard:`. The clock stops when B has delivered every message A acknowledged. "+
		"Beside it the same load as SMTP through Postfix: `smtp-source` (%d sessions, connections kept, `-d`) to Postfix's `smtpd`, "+
		"`relayhost` = `smtp-sink`; the clock stops when `smtp-sink` has counted every message Postfix acknowledged.\n\n",
		z.HubSessions, z.HubDepth, z.HubMsgs, z.Size, z.HubSessions)

	hr := h.relayHubs("hub", "hub to hub: qmtp-source K → hub B delivered", z.HubSessions, z.HubMsgs, z.Size, z.HubDepth, true)
	ql, qel, qerr, qu, cpuA, cpuB := hr.load, hr.elapsed, hr.err, hr.usage, hr.cpuA, hr.cpuB
	qrate := hr.rate()
	h.logf("   qmgate hub→hub        %7.0f msg/s end to end (%d/%d, ingest %0.f msg/s) %v", qrate, ql.Accepted, ql.Messages, ql.Rate(), qerr)

	sink, err := h.startSMTPSink(freePort())
	h.check(err)
	pf, err := h.startPostfix("relay", PostfixOpts{SMTP: true, Relayhost: "[127.0.0.1]:" + portOf(sink.Addr)})
	h.check(err)
	before := h.sample()
	cp := pf.CPU()
	pl, pel, pgot, perr := h.endToEnd(func() (Load, error) {
		return h.smtpSource(pf.SMTPAddr, z.HubSessions, z.HubMsgs, z.Size, true)
	}, sink.Received, 10*time.Minute)
	pu := since(before, h)
	cpuP := pf.CPU() - cp
	h.addCheck(Check{What: "Postfix relay: smtp-source 250 → smtp-sink", Acked: pl.Accepted, Received: pgot, OK: pgot == pl.Accepted && perr == nil})
	prate := float64(pl.Accepted) / pel.Seconds()
	h.logf("   Postfix relay         %7.0f msg/s end to end (%d/%d, ingest %0.f msg/s) %v", prate, pl.Accepted, pl.Messages, pl.Rate(), perr)

	s.table([][]string{
		{"", "messages", "end to end", "msg/s end to end", "msg/s accepted at the first hop", "server CPU µs/msg", "machine CPU"},
		{"qmgate: QMTP → hub A → QMTP → hub B → discard", fmt.Sprint(ql.Accepted), secs(qel), rate(qrate), rate(ql.Rate()),
			fmt.Sprintf("%s (A %s + B %s)", usPer(cpuA+cpuB, ql.Accepted), usPer(cpuA, ql.Accepted), usPer(cpuB, ql.Accepted)), fmt.Sprintf("%.0f%%", qu.CPUPercent())},
		{"Postfix: SMTP → smtpd → queue → smtp → smtp-sink", fmt.Sprint(pl.Accepted), secs(pel), rate(prate), rate(pl.Rate()),
			usPer(cpuP, pl.Accepted), fmt.Sprintf("%.0f%%", pu.CPUPercent())},
		{"ratio", "", "", ratio(qrate, prate), ratio(ql.Rate(), pl.Rate()), "", ""},
	})
	for _, e := range []error{qerr, perr} {
		if e != nil {
			s.printf("- %v\n", e)
		}
	}
	t := Target{Name: "QMTP hub to hub: ≥ 5× the Postfix SMTP relay", Want: "≥ 5×",
		Got:  fmt.Sprintf("%s (%s vs %s msg/s)", ratio(qrate, prate), rate(qrate), rate(prate)),
		Pass: qerr == nil && perr == nil && prate > 0 && qrate >= 5*prate}
	if !t.Pass {
		t.Limit = fmt.Sprintf("qmgate moved %d messages through two hubs in %s: hub A used %s µs and hub B %s µs of CPU per message, "+
			"qmtp-source %s µs; the machine was %.0f%% busy of 200%% and the disk made %d cache flushes (%.2f per message, for two durable queues). "+
			"Postfix used %s µs per message over the same path.",
			ql.Accepted, secs(qel), usPer(cpuA, ql.Accepted), usPer(cpuB, ql.Accepted), usPer(ql.CPU, ql.Accepted), qu.CPUPercent(),
			qu.Flushes, float64(qu.Flushes)/float64(max(ql.Accepted, 1)), usPer(cpuP, pl.Accepted))
	}
	s.target(t)
	return s
}

// hubRelay is one run of qmtp-source → hub A → QMTP → hub B → discard:.
type hubRelay struct {
	load       Load
	elapsed    time.Duration // until hub B had delivered every message A acknowledged
	delivered  int64
	cpuA, cpuB time.Duration
	usage      Usage
	err        error
}

// rate is messages a second end to end.
func (r hubRelay) rate() float64 { return perSecond(r.load.Accepted, r.elapsed) }

// relayHubs starts two fresh hubs (name-A relaying by QMTP to name-B, whose
// route is discard:), drives A with qmtp-source, records check as the
// comparison of what A acknowledged with what B delivered, and stops both.
func (h *Harness) relayHubs(name, check string, sessions, msgs, size, depth int, profile bool) hubRelay {
	o := QmgateOpts{Route: "discard:"}
	hubB, err := h.startQmgate(name+"-B", o)
	h.check(err)
	o.Route = "qmtp://" + hubB.QMTP
	hubA, err := h.startQmgate(name+"-A", o)
	h.check(err)
	before := h.sample()
	ca, cb := hubA.CPU(), hubB.CPU()
	prof := make(<-chan struct{})
	if profile {
		prof = hubA.Profile(name+"-A", h.profileSeconds())
	}
	var r hubRelay
	r.load, r.elapsed, r.delivered, r.err = h.endToEnd(func() (Load, error) {
		return h.qmtpSource(hubA.QMTP, sessions, msgs, size, depth, "")
	}, hubB.Delivered, 5*time.Minute)
	r.usage = since(before, h)
	r.cpuA, r.cpuB = hubA.CPU()-ca, hubB.CPU()-cb
	if profile {
		<-prof
	}
	h.addCheck(Check{What: check, Acked: r.load.Accepted, Received: r.delivered, OK: r.delivered == r.load.Accepted && r.err == nil})
	testpeer.Poll(time.Minute, 50*time.Millisecond, func() bool { _, _, n, _ := hubA.Counters(); return n == 0 })
	hubA.Stop()
	hubB.Stop()
	return r
}

// drainRun is one drain of a backlog by qmgate.
type drainRun struct {
	queued, got int64
	usage       Usage // from the flush until the sink had every queued message
	cpu         time.Duration
}

func (d drainRun) rate() float64 { return perSecond(d.got, d.usage.Elapsed) }

// drainQmgate queues msgs messages of size bytes (qmtp-source, 20
// sessions, depth packages in flight each) in a fresh qmgate whose route
// (kind "qmtp" or "smtp") leads to a sink that is not yet running, so the
// first attempts fail and are deferred; then it starts the sink, flushes
// the queue and times the drain until the sink has them all and the queue
// is empty. The comparison goes into the checks.
func (h *Harness) drainQmgate(name, kind string, msgs, size, depth int) drainRun {
	addr := freePort()
	o := QmgateOpts{Route: kind + "://" + addr}
	if kind == "smtp" {
		o.RouteTLS = "none"
	}
	q, err := h.startQmgate(name, o)
	h.check(err)
	fill, err := h.qmtpSource(q.QMTP, 20, msgs, size, depth, "")
	h.check(err)
	if !fill.OK() {
		h.fail("filling qmgate's queue: %d of %d accepted", fill.Accepted, fill.Messages)
	}
	var sink *Sink
	if kind == "qmtp" {
		sink, err = h.startQMTPSink(addr)
	} else {
		sink, err = h.startSMTPSink(addr)
	}
	h.check(err)
	before := h.sample()
	c0 := q.CPU()
	h.check(q.Flush())
	var got int64
	ok := testpeer.Poll(15*time.Minute, 20*time.Millisecond, func() bool {
		got = sink.Received()
		return got >= fill.Accepted
	})
	d := drainRun{queued: fill.Accepted, got: got, usage: since(before, h), cpu: q.CPU() - c0}
	// Not timed: the queue gauge is refreshed once a second.
	ok = ok && testpeer.Poll(time.Minute, 100*time.Millisecond, func() bool { _, _, n, _ := q.Counters(); return n == 0 })
	what := fmt.Sprintf("drain: qmgate queue → %s", sink.Name)
	if size != h.sizes.Size {
		what = fmt.Sprintf("drain of %s messages: qmgate queue → %s", sizeLabel(size), sink.Name)
	}
	h.addCheck(Check{What: what, Acked: fill.Accepted, Received: got, OK: ok && got == fill.Accepted})
	q.Stop()
	sink.Proc.Stop()
	return d
}

func portOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[i+1:]
		}
	}
	return addr
}

func (h *Harness) drain() *Section {
	s := &Section{}
	z := h.sizes
	s.printf("%d messages of %d bytes are queued while the next hop is down (the first attempts fail and are deferred); then the sink starts, "+
		"the queue is flushed (`qmgate queue flush`, `postqueue -f`) and the clock runs until the sink has every message (the queue is then checked empty). "+
		"qmgate delivers with its default concurrency (20 connections per route, up to 64 messages per connection); Postfix with its defaults "+
		"(`default_destination_concurrency_limit = 20`, connection cache on).\n\n", z.DrainMsgs, z.Size)
	rows := [][]string{{"", "messages", "time until the sink has all", "msg/s", "server CPU µs/msg", "machine CPU"}}
	type res struct {
		name string
		rate float64
	}
	var results []res
	add := func(name string, n int64, el time.Duration, cpu time.Duration, u Usage) {
		r := float64(n) / el.Seconds()
		rows = append(rows, []string{name, fmt.Sprint(n), secs(el), rate(r), usPer(cpu, n), fmt.Sprintf("%.0f%%", u.CPUPercent())})
		results = append(results, res{name, r})
	}

	for _, kind := range []string{"qmtp", "smtp"} {
		d := h.drainQmgate("drain-"+kind, kind, z.DrainMsgs, z.Size, 32)
		name := "qmgate → QMTP → qmtp-sink"
		if kind == "smtp" {
			name = "qmgate → SMTP → smtp-sink"
		}
		h.logf("   %-28s %7.0f msg/s (%d in %v)", name, d.rate(), d.got, d.usage.Elapsed.Round(time.Millisecond))
		add(name, d.got, d.usage.Elapsed, d.cpu, d.usage)
	}

	// Postfix: the relayhost is down while the queue fills.
	addr := freePort()
	pf, err := h.startPostfix("drain", PostfixOpts{SMTP: true, Relayhost: "[127.0.0.1]:" + portOf(addr)})
	h.check(err)
	fill, err := h.smtpSource(pf.SMTPAddr, 20, z.DrainMsgs, z.Size, true)
	h.check(err)
	if !fill.OK() {
		h.fail("filling Postfix's queue: %d of %d accepted: %s", fill.Accepted, fill.Messages, fill.Output)
	}
	h.logf("   Postfix queue filled: %d messages at %.0f msg/s", fill.Accepted, fill.Rate())
	// Every message has been tried once (and deferred) before the clock starts.
	testpeer.Poll(10*time.Minute, 200*time.Millisecond, func() bool { return pf.queueCountIn("deferred") >= int(fill.Accepted) })
	sink, err := h.startSMTPSink(addr)
	h.check(err)
	before := h.sample()
	c0 := pf.CPU()
	if out, err := pf.command(time.Minute, "postqueue", "-f"); err != nil {
		h.fail("postqueue -f: %v %s", err, out)
	}
	var got int64
	ok := testpeer.Poll(20*time.Minute, 20*time.Millisecond, func() bool {
		got = sink.Received()
		return got >= fill.Accepted
	})
	u := since(before, h)
	cpu := pf.CPU() - c0
	ok = ok && testpeer.Poll(time.Minute, 100*time.Millisecond, func() bool { return pf.QueueCount() == 0 })
	h.addCheck(Check{What: "drain: Postfix queue → smtp-sink", Acked: fill.Accepted, Received: got, OK: ok && got == fill.Accepted})
	h.logf("   %-28s %7.0f msg/s (%d in %v)", "Postfix → smtp-sink", float64(got)/u.Elapsed.Seconds(), got, u.Elapsed.Round(time.Millisecond))
	add("Postfix → SMTP → smtp-sink", got, u.Elapsed, cpu, u)
	if len(results) == 3 {
		rows = append(rows, []string{"ratio qmgate (QMTP) / Postfix", "", "", ratio(results[0].rate, results[2].rate), "", ""})
		rows = append(rows, []string{"ratio qmgate (SMTP) / Postfix", "", "", ratio(results[1].rate, results[2].rate), "", ""})
	}
	s.table(rows)
	return s
}
