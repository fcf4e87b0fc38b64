//go:build linux

package main

import (
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

// crash kills a hub with SIGKILL while it takes and relays mail, restarts
// it on the same queue, and checks message by message that everything it
// acknowledged reaches the next hop. The reliability battery in test/ does
// this thoroughly; this keeps the benchmark honest under its own load.
func (h *Harness) crash() *Section {
	s := &Section{}
	z := h.sizes
	sink, err := h.startQMTPSink(freePort())
	h.check(err)
	q, err := h.startQmgate("crash", QmgateOpts{Route: "qmtp://" + sink.Addr})
	h.check(err)
	acked := filepath.Join(h.work, "crash-acked.txt")

	var l Load
	var lerr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l, lerr = h.qmtpSource(q.QMTP, h.sizes.HubSessions, z.CrashMsgs, z.Size, 8, acked)
	}()
	// Kill once a third of the messages are in.
	var atKill int64
	testpeer.Poll(5*time.Minute, 5*time.Millisecond, func() bool {
		a, _, _, err := q.Counters()
		atKill = a
		return err == nil && a >= int64(z.CrashMsgs/3)
	})
	q.Proc.Kill()
	killedAt := time.Now()
	time.Sleep(500 * time.Millisecond)
	h.check(q.Restart())
	down := time.Since(killedAt)
	wg.Wait()
	h.check(lerr)
	want, err := readSeqs(acked)
	h.check(err)
	var seen map[int64]bool
	var missing int
	testpeer.Poll(5*time.Minute, 100*time.Millisecond, func() bool {
		seen, err = sink.Seqs()
		if err != nil {
			return false
		}
		missing = 0
		for n := range want {
			if !seen[n] {
				missing++
			}
		}
		return missing == 0
	})
	st, _ := sink.QMTPStats()
	h.addCheck(Check{What: "kill -9 mid-run: every K'd message at the next hop", Acked: int64(len(want)), Received: int64(len(want) - missing),
		OK: missing == 0, Note: fmt.Sprintf("(%d duplicates delivered after the crash)", st.Duplicate)})
	h.logf("   killed after %d accepted; %d acknowledged in all, %d missing, %d duplicates", atKill, len(want), missing, st.Duplicate)
	s.printf("`qmtp-source` (%d sessions, numbered messages) sends %d messages to a hub relaying by QMTP to bench/qmtp-sink. "+
		"When the hub has accepted %d, it is killed with SIGKILL and restarted on the same queue %v later; the generator carries on "+
		"(messages refused or unanswered while the hub is down are not acknowledged and not counted). Then every message number "+
		"the generator saw acknowledged must arrive at the sink.\n\n", z.HubSessions, z.CrashMsgs, atKill, down.Round(time.Millisecond))
	s.table([][]string{
		{"acknowledged (K)", "refused or lost while down", "arrived at the sink", "missing", "duplicates (allowed after a crash)", ""},
		{fmt.Sprint(len(want)), fmt.Sprint(l.Refused + l.Lost), fmt.Sprint(len(want) - missing), fmt.Sprint(missing), fmt.Sprint(st.Duplicate), passFail(missing == 0)},
	})
	s.target(Target{Name: "No message acknowledged before it is durable (kill -9 mid-run)", Want: "0 missing", Got: fmt.Sprintf("%d missing of %d", missing, len(want)),
		Pass:  missing == 0 && len(want) > 0,
		Limit: fmt.Sprintf("%d acknowledged messages never reached the next hop after the restart.", missing)})
	return s
}
