//go:build linux

package reliability

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

func randDuration(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rand.Int64N(int64(hi-lo)))
}

// killRounds kills the daemon at random instants and restarts it on the same
// queue and ports, rounds times. It fails if the daemon died by itself.
// It returns how many kills found a sender transfer under way.
func killRounds(t *testing.T, d *daemon, rounds int, lo, hi time.Duration, busy func() bool, onKill func(i int)) (underLoad int) {
	t.Helper()
	for i := 0; i < rounds; i++ {
		time.Sleep(randDuration(lo, hi))
		if !d.alive() {
			t.Fatalf("round %d: qmgate serve died by itself", i)
		}
		if busy != nil && busy() {
			underLoad++
		}
		d.kill()
		if onKill != nil {
			onKill(i)
		}
		d.start()
	}
	return underLoad
}

// TestCrashSIGKILLUnderLoad: concurrent senders over QMTP (pipelined), QMQP
// and SMTP while qmgate serve is killed with SIGKILL at random instants and
// restarted on the same queue and ports. Every recipient a sender heard
// acknowledged must land in its Maildir, byte for byte; nothing unsent may
// appear; duplicates (a kill between a Maildir delivery and its record) are
// counted.
func TestCrashSIGKILLUnderLoad(t *testing.T) {
	h := newNetHost(t)
	qmtpA, qmqpA, smtpA := h.addr(t), h.addr(t), h.addr(t)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "crash.test"
rcpthosts = ["example.com"]
[qmtp]
listen = [%q]
[qmqp]
listen = [%q]
allow = ["127.0.0.0/8"]
[smtp]
listen = [%q]
[[route]]
domains = ["example.com"]
via = "maildir:{{DIR}}/maildir"
`, qmtpA, qmqpA, smtpA))
	d.start()
	led := newLedger()
	ld := &load{QMTP: qmtpA, QMQP: qmqpA, SMTP: smtpA, Senders: scale(2, 4), Sender: "sender@src.test",
		Rcpts: pickRcpts("example.com", 5, 3), Ledger: led}
	ld.start("kill")
	rounds := scale(30, 60)
	hi := time.Duration(scale(400, 2000)) * time.Millisecond
	underLoad := killRounds(t, d, rounds, 30*time.Millisecond, hi, func() bool { return ld.busy.Load() > 0 }, nil)
	time.Sleep(500 * time.Millisecond)
	ld.finish(t)

	root := filepath.Join(d.dir, "maildir")
	acked := led.ackedKeys()
	testpeer.WaitFor(t, "every acknowledged recipient in its Maildir", 3*time.Minute, func() bool { return scanMaildirs(root).holdsAll(acked) })
	if !d.waitQueueEmpty(2 * time.Minute) {
		t.Errorf("queue not empty at the end: %d messages", d.queued())
	}
	d.stop()
	ds := scanMaildirs(root)
	tl := led.tally(ds)
	dc := checkMaildirDuplicates(d, ds)
	// A delivery the daemon logged must have its Maildir file, kills or
	// not: the file and new/ are synced before the record.
	checked, missing := 0, 0
	for _, p := range deliveredLines(d.log()) {
		if marker, ok := led.markerOf(p[0]); ok {
			checked++
			if ds.count[rcptKey{marker, p[1]}] == 0 {
				missing++
				if missing <= 5 {
					t.Errorf("the daemon logged %s (%s) for %s as delivered, but its Maildir lacks it", p[0], marker, p[1])
				}
			}
		}
	}
	report(t, &row{
		Test:   "SIGKILL under load (ingest → Maildir)",
		Load:   fmt.Sprintf("%d senders each over QMTP (1-4 pipelined), QMQP, SMTP (1-4 per connection); 1-3 recipients; 0-770 KB", ld.Senders),
		Inputs: fmt.Sprintf("%d SIGKILLs at random instants (30 ms-%s apart), %d with transfers under way; restart on the same queue and ports", rounds, hi, underLoad),
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("%d messages attempted; acknowledged recipients by protocol: %s; %d temporary refusals (connections cut by kills); "+
			"%d recipients delivered without an acknowledgement (kill between commit and reply, allowed); %d duplicates, each made by a later run than a killed one "+
			"that had delivered without recording yet (longest delivery-to-kill window %s); all %d deliveries logged for acknowledged messages have their Maildir file (%d missing).",
			ld.sent.Load(), led.protoCounts(), led.tempFails, tl.UnackedDelivered, tl.Dups, dc.MaxWindow.Round(time.Millisecond), checked, missing),
	})
	tl.check(t)
	dc.check(t)
	if len(led.permFails) > 0 {
		t.Errorf("permanent refusals under load: %v", led.permFails)
	}
	if underLoad < rounds/2 {
		t.Errorf("only %d of %d kills found a transfer under way", underLoad, rounds)
	}
}

// dupCheck is the verdict on duplicate deliveries.
type dupCheck struct {
	Dups      int           // extra copies
	SameRun   []string      // copies made twice by one daemon run: invariant 3 broken
	NoKill    []string      // a copy repeated although the earlier run was not killed
	MaxWindow time.Duration // longest time from a duplicated delivery to the kill that ended its run
}

// checkMaildirDuplicates checks that every repeated delivery was made by a
// later run than the first, and that the run which made the earlier copy
// was killed: the only way a recorded delivery can be repeated.
func checkMaildirDuplicates(d *daemon, ds *deliveredSet) dupCheck {
	var dc dupCheck
	for k, copies := range ds.copies {
		if len(copies) < 2 {
			continue
		}
		dc.Dups += len(copies) - 1
		seen := map[int]bool{}
		for _, c := range copies {
			if seen[c.PID] {
				dc.SameRun = append(dc.SameRun, fmt.Sprintf("%s %s (pid %d)", k.Marker, k.Rcpt, c.PID))
			}
			seen[c.PID] = true
		}
		// Every copy but the last must come from a run that was killed.
		last := copies[0]
		for _, c := range copies[1:] {
			if c.At.After(last.At) {
				last = c
			}
		}
		for _, c := range copies {
			if c == last {
				continue
			}
			ri, ok := d.run(c.PID)
			if !ok || ri.Killed.IsZero() {
				dc.NoKill = append(dc.NoKill, fmt.Sprintf("%s %s (pid %d)", k.Marker, k.Rcpt, c.PID))
				continue
			}
			if w := ri.Killed.Sub(c.At); w > dc.MaxWindow {
				dc.MaxWindow = w
			}
		}
	}
	return dc
}

func (dc dupCheck) check(t *testing.T) {
	t.Helper()
	if len(dc.SameRun) > 0 {
		t.Errorf("%d recipients delivered twice by one daemon run (no crash in between), e.g. %v", len(dc.SameRun), dc.SameRun[:min(5, len(dc.SameRun))])
	}
	if len(dc.NoKill) > 0 {
		t.Errorf("%d recipients delivered again although the run that delivered them was not killed, e.g. %v", len(dc.NoKill), dc.NoKill[:min(5, len(dc.NoKill))])
	}
}

// pickRcptsIn chooses 1 to max recipients among users u0..u{users-1} at
// the given domains.
func pickRcptsIn(domains []string, users, max int) func(r *rand.Rand) []string {
	return func(r *rand.Rand) []string {
		k := 1 + r.IntN(max)
		seen := map[string]bool{}
		var out []string
		for len(out) < k {
			a := fmt.Sprintf("u%d@%s", r.IntN(users), domains[r.IntN(len(domains))])
			if !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
		return out
	}
}

// TestCrashSIGKILLDuringDelivery: the same load, delivered to a QMTP and an
// SMTP sink run by the test (which stretch each acceptance a little), while
// the daemon is killed at random instants. Nothing acknowledged is lost; a
// recipient is delivered twice only when a kill fell between the first
// delivery and its record: for SMTP the sink knows the delivering run from
// its EHLO name, for QMTP a kill must lie between the connection that
// carried the first copy and the second copy.
func TestCrashSIGKILLDuringDelivery(t *testing.T) {
	h := newNetHost(t)
	qs := newSink(t, "qmtp", h.addr(t))
	ss := newSink(t, "smtp", h.addr(t))
	delay := func() time.Duration { return time.Duration(rand.IntN(20)) * time.Millisecond }
	qs.Delay, ss.Delay = delay, delay
	qmtpA, qmqpA, smtpA := h.addr(t), h.addr(t), h.addr(t)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "deliver-{{RUN}}.test"
rcpthosts = ["q.test", "s.test"]
[qmtp]
listen = [%q]
[qmqp]
listen = [%q]
allow = ["127.0.0.0/8"]
[smtp]
listen = [%q]
[queue]
retry_min = "500ms"
retry_max = "2s"
[[route]]
domains = ["q.test"]
via = "qmtp://{{SINKQ}}"
[[route]]
domains = ["s.test"]
via = "smtp://{{SINKS}}"
tls = "none"
`, qmtpA, qmqpA, smtpA))
	rounds := scale(30, 60)
	qs.listenPerRun(rounds + 1)
	ss.listenPerRun(rounds + 1)
	d.vars = func(run int) map[string]string {
		return map[string]string{"SINKQ": qs.addrFor(run), "SINKS": ss.addrFor(run)}
	}
	d.start()
	led := newLedger()
	ld := &load{QMTP: qmtpA, QMQP: qmqpA, SMTP: smtpA, Senders: scale(2, 4), Sender: "sender@src.test",
		Rcpts: pickRcptsIn([]string{"q.test", "s.test"}, 5, 3), Ledger: led}
	ld.start("dkill")
	hi := time.Duration(scale(400, 2000)) * time.Millisecond
	midDelivery := killRounds(t, d, rounds, 30*time.Millisecond, hi, func() bool {
		return qs.inflight.Load()+ss.inflight.Load() > 0
	}, nil)
	time.Sleep(500 * time.Millisecond)
	ld.finish(t)

	acked := led.ackedKeys()
	testpeer.WaitFor(t, "every acknowledged recipient at a sink", 3*time.Minute, func() bool { return sinkSet(qs, ss).holdsAll(acked) })
	if !d.waitQueueEmpty(2 * time.Minute) {
		t.Errorf("queue not empty at the end: %d messages", d.queued())
	}
	d.stop()

	tl := led.tally(sinkSet(qs, ss))
	// Nothing the next hop did not acknowledge is recorded as delivered:
	// every delivery the daemon logged is at a sink.
	ds := sinkSet(qs, ss)
	checked, unconfirmed := 0, 0
	for _, p := range deliveredLines(d.log()) {
		marker, ok := led.markerOf(p[0])
		if !ok {
			continue // a message whose acknowledgement a kill cut off
		}
		checked++
		if ds.count[rcptKey{marker, p[1]}] == 0 {
			unconfirmed++
			if unconfirmed <= 5 {
				t.Errorf("the daemon recorded %s (%s) for %s as delivered, but no sink has it", p[0], marker, p[1])
			}
		}
	}
	if checked == 0 {
		t.Error("no delivery log lines could be matched to acknowledged messages")
	}
	var bad []string
	var maxWindow time.Duration
	dupsBy := map[string]int{}
	for _, s := range []*sink{qs, ss} {
		byKey := map[rcptKey][]sinkCopy{}
		for _, c := range s.copies() {
			if s.proto == "smtp" && c.Run != runOfHelo(c.Helo) {
				t.Errorf("sink's idea of the run (%d) differs from the EHLO name %q", c.Run, c.Helo)
			}
			byKey[c.Key] = append(byKey[c.Key], c)
		}
		for k, cs := range byKey {
			runs := map[int]bool{}
			for _, c := range cs {
				if runs[c.Run] {
					bad = append(bad, fmt.Sprintf("%s %s twice by run %d (%s, conn %s)", k.Marker, k.Rcpt, c.Run, c.At.Format("15:04:05.000"), c.Remote))
				}
				runs[c.Run] = true
			}
			if len(cs) < 2 {
				continue
			}
			dupsBy[s.proto] += len(cs) - 1
			last := 0
			for _, c := range cs {
				last = max(last, c.Run)
			}
			for _, c := range cs {
				if c.Run == last || c.Run < 1 || c.Run > len(d.history) {
					continue
				}
				if w := d.history[c.Run-1].Killed.Sub(c.At); w > maxWindow {
					maxWindow = w
				}
			}
		}
	}
	report(t, &row{
		Test:   "SIGKILL during delivery (→ QMTP and SMTP sinks)",
		Load:   fmt.Sprintf("%d senders each over QMTP, QMQP, SMTP; 1-3 recipients split over a QMTP and an SMTP next hop that take 0-20 ms per message", ld.Senders),
		Inputs: fmt.Sprintf("%d SIGKILLs (30 ms-%s apart), %d of them while a sink was taking a message", rounds, hi, midDelivery),
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("%d messages attempted; %d recipients delivered without an acknowledgement (allowed); "+
			"each of the %d deliveries the daemon logged for acknowledged messages is at a sink (%d not); every duplicate straddles a kill "+
			"(each copy made by a different run: every run delivers to listeners of its own, and SMTP's EHLO name agrees); "+
			"longest time from a repeated delivery to the kill that cut its record: %s. Duplicates at the SMTP sink %d (each message recorded once its transaction ends), "+
			"at the QMTP sink %d (each message recorded as its last reply arrives, while the rest of its pipelined batch of up to 64 is under way).",
			ld.sent.Load(), tl.UnackedDelivered, checked, unconfirmed, maxWindow.Round(time.Millisecond), dupsBy["smtp"], dupsBy["qmtp"]),
	})
	tl.check(t)
	if len(bad) > 0 {
		t.Errorf("%d recipients delivered twice by one run (no kill between delivery and record), e.g. %v", len(bad), bad[:min(5, len(bad))])
	}
	if midDelivery < rounds/4 {
		t.Errorf("only %d of %d kills fell inside a delivery", midDelivery, rounds)
	}
}
