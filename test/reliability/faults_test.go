//go:build linux

package reliability

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmtp"
)

// inject sends n messages over QMTP (pipelined, a few per connection) and
// records the answers; rcpts chooses each message's recipients.
func inject(t *testing.T, addr, tag, sender string, n int, rcpts func(r *rand.Rand) []string, led *ledger) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, uint64(n)))
	c := &qmtp.Client{ConnectTimeout: 5 * time.Second, IOTimeout: 30 * time.Second}
	for i := 0; i < n; {
		k := min(n-i, 1+r.IntN(5))
		msgs := make([]*qmtp.Message, k)
		markers := make([]string, k)
		for j := range msgs {
			markers[j] = fmt.Sprintf("%s-%d", tag, i+j)
			body := makeBody(markers[j])
			msgs[j] = &qmtp.Message{Envelope: mail.Envelope{Sender: sender, Recipients: rcpts(r)},
				Body: bytes.NewReader(body), Size: int64(len(body))}
			led.attempt(markers[j])
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res, err := c.Send(ctx, addr, msgs...)
		cancel()
		for j, m := range msgs {
			for q, rcpt := range m.Envelope.Recipients {
				st := mail.StatusOf(err)
				if j < len(res) && q < len(res[j]) {
					st = res[j][q]
				}
				if !st.IsAccept() {
					t.Fatalf("injecting %s for %s: %s", markers[j], rcpt, st.Reply())
				}
				led.result("QMTP", markers[j], rcpt, st)
			}
		}
		i += k
	}
}

// peersSet gathers fault peers' and sinks' copies.
func peersSet(peers []*faultPeer, sinks ...*sink) *deliveredSet {
	ds := sinkSet(sinks...)
	for _, p := range peers {
		for _, c := range p.copies() {
			ds.count[c.Key]++
		}
		for i := 0; i < p.corrupt; i++ {
			ds.corrupt = append(ds.corrupt, p.proto+" peer got a corrupt message")
		}
	}
	return ds
}

// TestFaultNextHop: next hops over QMTP, QMQP and SMTP that refuse
// temporarily, stall mid-reply, close mid-package, answer garbage, cut a
// pipelined batch short, or are not there at all. Every failure must be
// temporary: the mail is retried until delivered, exactly once, and nothing
// bounces.
func TestFaultNextHop(t *testing.T) {
	h := newNetHost(t)
	pq := newFaultPeer(t, "qmtp", h.addr(t), qmtpFaults)
	pp := newFaultPeer(t, "qmqp", h.addr(t), qmqpFaults)
	ps := newFaultPeer(t, "smtp", h.addr(t), smtpFaults)
	downAddr := h.addr(t) // nothing listens here at first
	qmtpA := h.addr(t)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "faults.test"
rcpthosts = ["local.test"]
[qmtp]
listen = [%q]
relay_clients = ["127.0.0.0/8"]
[delivery]
connect_timeout = "2s"
timeout = "2s"
[queue]
retry_min = "200ms"
retry_max = "1s"
[[route]]
domains = ["local.test"]
via = "maildir:{{DIR}}/maildir"
[[route]]
domains = ["q.test"]
via = "qmtp://%s"
[[route]]
domains = ["p.test"]
via = "qmqp://%s"
[[route]]
domains = ["s.test"]
via = "smtp://%s"
tls = "none"
[[route]]
domains = ["down.test"]
via = "qmtp://%s"
`, qmtpA, pq.addr(), pp.addr(), ps.addr(), downAddr))
	d.start()
	led := newLedger()
	n := scale(40, 200)
	inject(t, qmtpA, "hop", "sender@local.test", n, pickRcptsIn([]string{"q.test", "p.test", "s.test", "down.test"}, 4, 2), led)
	peers := []*faultPeer{pq, pp, ps}
	testpeer.WaitFor(t, "every fault tried", 2*time.Minute, func() bool {
		return len(pq.triedAll())+len(pp.triedAll())+len(ps.triedAll()) == 0
	})
	// The missing next hop comes up.
	down := newSink(t, "qmtp", downAddr)
	acked := led.ackedKeys()
	testpeer.WaitFor(t, "every acknowledged recipient delivered", 3*time.Minute, func() bool { return peersSet(peers, down).holdsAll(acked) })
	if !d.waitQueueEmpty(time.Minute) {
		t.Errorf("queue not empty: %d", d.queued())
	}
	d.stop()
	ds := peersSet(peers, down)
	tl := led.tally(ds)
	bounces := countMaildir(filepath.Join(d.dir, "maildir"), "local.test", "sender")
	for _, p := range peers {
		for _, s := range p.senders {
			if s == "" {
				bounces++
			}
		}
	}
	temps := d.logCount("state=pending")
	report(t, &row{
		Test: "Next hop faults (QMTP, QMQP, SMTP)",
		Load: fmt.Sprintf("%d messages, 1-2 recipients over 4 next hops; delivery timeout 2 s", n),
		Inputs: "QMTP: " + strings.Join(qmtpFaults, ", ") + "; QMQP: " + strings.Join(qmqpFaults, ", ") + "; SMTP: " + strings.Join(smtpFaults, ", ") +
			"; a QMTP hop that is down and comes back",
		Acked: tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("connections per behaviour: %s; %s; %s. Every fault was a temporary failure and retried (%d deferrals logged); bounces: %d; "+
			"duplicates, which must be 0 without a crash: %d (a pipelined batch cut after its first reply has that message recorded delivered, the rest retried). "+
			"QMQP routes keep qmail-qmqpc's 60 s I/O timeout whatever [delivery] timeout says, so the QMQP stalls end when the peer hangs up after 5 s.",
			pq, pp, ps, temps, bounces, tl.Dups),
	})
	tl.check(t)
	if bounces > 0 {
		t.Errorf("%d bounces for temporary faults", bounces)
	}
	if tl.Dups > 0 {
		t.Errorf("%d duplicate deliveries without any crash", tl.Dups)
	}
	if d.logCount("state=failed") > 0 {
		t.Errorf("a recipient failed permanently:\n%s", grepLog(d.log(), "state=failed", 5))
	}
}
