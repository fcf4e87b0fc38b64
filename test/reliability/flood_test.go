//go:build linux

package reliability

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

// floodOutcome classifies one flood connection.
type floodOutcome int

const (
	served   floodOutcome = iota // the message was accepted
	refused                      // a polite temporary refusal (Z #4.3.2, 421)
	silent                       // closed without a word before anything was sent
	tempfail                     // admitted, then a temporary failure reply (Z, 4xx)
	other                        // anything else: timeouts, resets mid-session
	notDial                      // the connection could not be made
)

var outcomeNames = []string{"served", "refused with a reply", "closed without a reply", "temporary failure", "other", "not connected"}

// floodConn is one client of the flood.
type floodConn struct {
	proto, addr, src string
	marker, rcpt     string
	c                net.Conn
	outcome          floodOutcome
	detail           string
}

// flood opens every connection first, waits for all of them (the daemon
// then holds them at once), and only then lets each speak.
// With settle, it waits for the daemon to have accepted every connection
// before they speak (a daemon out of descriptors cannot).
func flood(t *testing.T, conns []*floodConn, led *ledger, settle bool) map[string][outcomeCount]int {
	listeners := map[string]bool{}
	for _, fc := range conns {
		listeners[fc.addr] = true
	}
	var dialWG sync.WaitGroup
	for _, fc := range conns {
		dialWG.Add(1)
		go func() {
			defer dialWG.Done()
			d := net.Dialer{Timeout: 20 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(fc.src)}}
			c, err := d.Dial("tcp", fc.addr)
			if err != nil {
				fc.outcome, fc.detail = notDial, err.Error()
				return
			}
			fc.c = c
		}()
	}
	testpeer.Wait(t, "the flood's connections", stuckAfter, &dialWG)
	// Let the daemon accept (and so admit or refuse) the whole backlog:
	// a connection accepted after others finish could take a freed slot.
	if settle && !testpeer.Poll(time.Minute, 25*time.Millisecond, func() bool {
		for a := range listeners {
			if n, ok := acceptBacklog(a); !ok || n > 0 {
				return false
			}
		}
		return true
	}) {
		t.Error("the daemon did not accept its backlog within a minute")
	}
	time.Sleep(time.Second)
	var wg sync.WaitGroup
	for _, fc := range conns {
		if fc.c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer fc.c.Close()
			fc.speak(led)
		}()
	}
	testpeer.Wait(t, "the flood's clients", stuckAfter, &wg)
	out := map[string][outcomeCount]int{}
	for _, fc := range conns {
		a := out[fc.proto]
		a[fc.outcome]++
		out[fc.proto] = a
	}
	return out
}

const outcomeCount = 6

func (fc *floodConn) speak(led *ledger) {
	c := fc.c
	br := bufio.NewReader(c)
	body := makeBody(fc.marker)
	fail := func(format string, args ...any) {
		fc.outcome, fc.detail = other, fmt.Sprintf(format, args...)
	}
	switch fc.proto {
	case "QMTP", "QMQP":
		// A refusal comes before anything is read; an admitted session
		// waits for us.
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		first, err := br.Peek(1)
		switch {
		case err == nil && len(first) == 1:
			s, err := readNetstring(br, 4096)
			if err == nil && strings.HasPrefix(string(s), "Z") && strings.Contains(string(s), "4.3.2") {
				fc.outcome = refused
			} else {
				fail("unexpected greeting %q %v", s, err)
			}
			return
		case err != nil && !isTimeout(err):
			fc.outcome, fc.detail = silent, err.Error()
			return
		}
		c.SetDeadline(time.Now().Add(time.Minute))
		var req []byte
		if fc.proto == "QMTP" {
			req = qmtpPackage(body, "flood@src.test", fc.rcpt)
		} else {
			req = qmqpRequest(body, "flood@src.test", fc.rcpt)
		}
		led.attempt(fc.marker)
		if _, err := c.Write(req); err != nil {
			fail("write: %v", err)
			return
		}
		s, err := readNetstring(br, 4096)
		if err == nil && strings.HasPrefix(string(s), "Z") {
			fc.outcome, fc.detail = tempfail, string(s)
			if strings.Contains(string(s), "4.3.2") {
				fc.outcome = refused // the over-limit refusal, read late
			}
			return
		}
		if err != nil || !strings.HasPrefix(string(s), "K") {
			fail("reply %q %v", s, err)
			return
		}
		led.result(fc.proto, fc.marker, fc.rcpt, okStatus)
		fc.outcome = served
	case "SMTP":
		c.SetDeadline(time.Now().Add(time.Minute))
		code, text := readReply(br)
		switch code {
		case "220":
		case "421":
			fc.outcome = refused
			return
		case "":
			fc.outcome, fc.detail = silent, text
			return
		default:
			fail("greeting %q", text)
			return
		}
		led.attempt(fc.marker)
		var b bytes.Buffer
		fmt.Fprintf(&b, "EHLO flood.test\r\nMAIL FROM:<flood@src.test>\r\nRCPT TO:<%s>\r\nDATA\r\n", fc.rcpt)
		c.Write(b.Bytes())
		for _, want := range []string{"250", "250", "250", "354"} {
			if code, text := readReply(br); code != want {
				fail("want %s, got %q", want, text)
				return
			}
		}
		c.Write(smtpData(body))
		if code, text := readReply(br); code != "250" {
			if strings.HasPrefix(code, "4") {
				fc.outcome, fc.detail = tempfail, text
				return
			}
			fail("end of data: %q", text)
			return
		}
		c.Write([]byte("QUIT\r\n"))
		led.result("SMTP", fc.marker, fc.rcpt, okStatus)
		fc.outcome = served
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// floodDaemon starts a daemon with the default connection limits (1000
// per listener, 50 per client address) delivering to a QMTP sink.
func floodDaemon(t *testing.T, h *netHost, wrap ...string) (*daemon, *sink, string, string, string) {
	qs := newSink(t, "qmtp", h.addr(t))
	qmtpA, qmqpA, smtpA := h.addr(t), h.addr(t), h.addr(t)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "flood.test"
rcpthosts = ["example.com"]
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
domains = ["example.com"]
via = "qmtp://%s"
`, qmtpA, qmqpA, smtpA, qs.addr()))
	d.wrap = wrap
	d.start()
	return d, qs, qmtpA, qmqpA, smtpA
}

// floodPlan makes per listener perIP connections from each of ips client
// addresses, plus greedy from one more address (over its per-IP cap).
func floodPlan(h *netHost, tag string, addrs map[string]string, ips, perIP, greedy int) []*floodConn {
	var conns []*floodConn
	n := 0
	for pi, proto := range []string{"QMTP", "QMQP", "SMTP"} {
		add := func(src string) {
			conns = append(conns, &floodConn{proto: proto, addr: addrs[proto], src: src,
				marker: fmt.Sprintf("%s-%s-%d", tag, strings.ToLower(proto), n), rcpt: fmt.Sprintf("u%d@example.com", n%7)})
			n++
		}
		for i := 0; i < ips; i++ {
			for j := 0; j < perIP; j++ {
				add(h.ip(10 + i))
			}
		}
		for j := 0; j < greedy; j++ {
			add(h.ip(240 + pi))
		}
	}
	return conns
}

func outcomeText(out map[string][outcomeCount]int) string {
	var parts []string
	for _, proto := range []string{"QMTP", "QMQP", "SMTP"} {
		a := out[proto]
		var ps []string
		for i, n := range a {
			if n > 0 {
				ps = append(ps, fmt.Sprintf("%d %s", n, outcomeNames[i]))
			}
		}
		parts = append(parts, proto+": "+strings.Join(ps, ", "))
	}
	return strings.Join(parts, "; ")
}

// TestFlood: 5,000 simultaneous connections against the default limits
// (1,000 per listener, 50 per client address). Those over the limits are
// refused with a temporary reply (or, past the QMTP server's 64 concurrent
// refusals, closed before anything was sent, which a QMTP client takes as a
// temporary failure); every admitted session is served; the daemon does
// not crash; service is normal at once afterwards.
func TestFlood(t *testing.T) {
	h := newNetHost(t)
	d, qs, qmtpA, qmqpA, smtpA := floodDaemon(t, h)
	led := newLedger()
	// 40 addresses × 40 connections, plus 80 from one address, per listener.
	conns := floodPlan(h, "flood", map[string]string{"QMTP": qmtpA, "QMQP": qmqpA, "SMTP": smtpA}, 40, 40, scale(80, 80))
	t0 := time.Now()
	stopSampling := d.sample()
	out := flood(t, conns, led, true)
	took := time.Since(t0)
	peakFDs, peakRSS := stopSampling()
	if !d.alive() {
		t.Fatal("qmgate serve died in the flood")
	}
	bad := 0
	for _, fc := range conns {
		if fc.outcome == other || fc.outcome == notDial || fc.outcome == tempfail {
			bad++
			if bad <= 5 {
				t.Errorf("%s from %s: %s %s", fc.proto, fc.src, outcomeNames[fc.outcome], fc.detail)
			}
		}
	}
	for proto, a := range out {
		// All connections were accepted before any spoke, so exactly
		// max_conns of them were admitted, and each must be served.
		if a[served] != 1000 {
			t.Errorf("%s served %d sessions, want max_conns (1000)", proto, a[served])
		}
	}
	// The daemon counted every refusal: each connection it did not serve
	// was refused over a limit (all were accepted before any spoke).
	var refusedCounts []string
	for proto, a := range out {
		total := 0
		for _, n := range a {
			total += n
		}
		want := float64(total - a[served])
		got, _ := d.metric(`qmgate_connections_refused_total{proto="` + proto + `",reason="limit"}`)
		if got != want {
			t.Errorf("%s: qmgate_connections_refused_total says %.0f refused, the clients saw %.0f not served", proto, got, want)
		}
		refusedCounts = append(refusedCounts, fmt.Sprintf("%s %.0f", proto, got))
	}
	slices.Sort(refusedCounts)
	// Back to normal at once.
	t1 := time.Now()
	normal := testpeer.Poll(10*time.Second, 25*time.Millisecond, func() bool {
		st := probe(qmtpA, qmqpA, smtpA, "after@example.com", fmt.Sprintf("flood-after-%d", time.Now().UnixNano()), led)
		return st["QMTP"].IsAccept() && st["QMQP"].IsAccept() && st["SMTP"].IsAccept()
	})
	recovery := time.Since(t1)
	if !normal {
		t.Error("service not back to normal 10 s after the flood")
	}
	acked := led.ackedKeys()
	testpeer.WaitFor(t, "every served message at the next hop", 2*time.Minute, func() bool { return sinkSet(qs).holdsAll(acked) })
	d.stop()
	tl := led.tally(sinkSet(qs))
	report(t, &row{
		Test:   "Flood of simultaneous connections",
		Load:   fmt.Sprintf("%d connections held at once (1,680 per listener: 40 addresses × 40, one address × 80); limits 1,000 per listener, 50 per address", len(conns)),
		Inputs: "every connection opened before any speaks; each admitted one sends a message",
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("%s (flood over in %s; at the peak the daemon held %d descriptors and %d MB RSS); "+
			"service normal again %s after the flood; the daemon's qmgate_connections_refused_total counted every refusal (%s).",
			outcomeText(out), took.Round(time.Millisecond), peakFDs, peakRSS>>20, recovery.Round(time.Millisecond), strings.Join(refusedCounts, ", ")),
	})
	tl.check(t)
}

// TestFloodDescriptorExhaustion: the same flood against a daemon whose
// descriptor limit (1,024) is far below its connection limits, so accept
// and the queue run out of descriptors. It must not crash, must not
// acknowledge what it could not store, and must serve normally at once
// when the flood is over.
func TestFloodDescriptorExhaustion(t *testing.T) {
	h := newNetHost(t)
	const lim = 1024
	// prlimit(1) lowers its own limits and runs the daemon: lowering needs
	// no privilege, unlike changing another process's limits.
	prl, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit(1) not found")
	}
	d, qs, qmtpA, qmqpA, smtpA := floodDaemon(t, h, prl, fmt.Sprintf("--nofile=%d:%d", lim, lim))
	limits, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", d.pid()))
	if !regexp.MustCompile(fmt.Sprintf(`Max open files +%d +%d`, lim, lim)).Match(limits) {
		t.Fatalf("the daemon's descriptor limit is not %d:\n%s", lim, limits)
	}
	led := newLedger()
	conns := floodPlan(h, "fdx", map[string]string{"QMTP": qmtpA, "QMQP": qmqpA, "SMTP": smtpA}, 25, 40, 0)
	stopSampling := d.sample()
	t0 := time.Now()
	out := flood(t, conns, led, false)
	took := time.Since(t0)
	peakFDs, _ := stopSampling()
	if !d.alive() {
		t.Fatal("qmgate serve died when it ran out of descriptors")
	}
	details := map[string]int{}
	for _, fc := range conns {
		if fc.outcome == other {
			k := fc.proto + " " + fc.detail
			if i := strings.IndexAny(k, "0123456789"); i > 0 && len(k) > 60 {
				k = k[:60]
			}
			details[k]++
		}
	}
	if len(details) > 0 {
		t.Logf("other outcomes: %v", details)
	}
	emfile := strings.Count(d.log(), "too many open files")
	t1 := time.Now()
	normal := testpeer.Poll(30*time.Second, 25*time.Millisecond, func() bool {
		st := probe(qmtpA, qmqpA, smtpA, "after@example.com", fmt.Sprintf("fdx-after-%d", time.Now().UnixNano()), led)
		return st["QMTP"].IsAccept() && st["QMQP"].IsAccept() && st["SMTP"].IsAccept()
	})
	recovery := time.Since(t1)
	if !normal {
		t.Error("service not back to normal 30 s after the flood")
	}
	acked := led.ackedKeys()
	testpeer.WaitFor(t, "every acknowledged message at the next hop", 2*time.Minute, func() bool { return sinkSet(qs).holdsAll(acked) })
	d.stop()
	tl := led.tally(sinkSet(qs))
	report(t, &row{
		Test:   "Descriptor exhaustion",
		Load:   fmt.Sprintf("%d connections at once against a daemon limited to %d descriptors", len(conns), lim),
		Inputs: "EMFILE in accept, in the queue and in delivery",
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("%s (over in %s; temporary failures are the queue's \"qq write error\" when it cannot open a file); %d descriptors at the peak; "+
			"%d \"too many open files\" log lines; no crash; service normal again %s after the flood.",
			outcomeText(out), took.Round(time.Millisecond), peakFDs, emfile, recovery.Round(time.Millisecond)),
	})
	tl.check(t)
}

// acceptBacklog returns the accept queue length of the listening socket at
// addr, from /proc/net/tcp (rx_queue of a LISTEN socket).
func acceptBacklog(addr string) (int, bool) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return 0, false
	}
	ip := ap.Addr().As4()
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ap.Port())
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[1] == want && f[3] == "0A" {
			q := strings.SplitN(f[4], ":", 2)
			n, err := strconv.ParseInt(q[1], 16, 64)
			return int(n), err == nil
		}
	}
	return 0, false
}
