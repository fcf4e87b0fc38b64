//go:build linux

package reliability

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

// TestFaultDNS: mx routes while the resolver fails in every way a resolver
// can: SERVFAIL, REFUSED, no answer at all, garbage, a truncated answer with
// no TCP behind it, an answer to another query, an exchanger whose address
// lookup fails, and a resolver address where nothing listens. Each is a
// temporary failure: the mail stays queued and nothing bounces. Then DNS
// heals and everything is delivered over QMTP (MXPS) to a sink.
func TestFaultDNS(t *testing.T) {
	h := newNetHost(t)
	dns := testpeer.StartDNS(t, h.ip(1))
	qs := newSink(t, "qmtp", h.addr(t))
	_, qport, _ := net.SplitHostPort(qs.addr())
	deadResolver := freeUDPAddr(t, h.ip(1))
	qmtpA := h.addr(t)
	faults := map[string]testpeer.DNSFault{ // domain → how its MX lookup fails
		"servfail.test": testpeer.DNSServFail, "refused.test": testpeer.DNSRefused, "drop.test": testpeer.DNSDrop,
		"garbage.test": testpeer.DNSGarbage, "truncated.test": testpeer.DNSTruncated, "wrongid.test": testpeer.DNSWrongID,
		"afail.test": testpeer.DNSHealthy, "nodata-afail.test": testpeer.DNSHealthy,
	}
	for dom, fault := range faults {
		dns.SetFault(dom, fault)
		dns.SetMX(dom, &net.MX{Host: "mx." + dom, Pref: 12801})
		dns.SetA("mx."+dom, h.ip(1))
	}
	// afail: the exchanger's address lookup fails. nodata-afail: no MX
	// records (NOERROR, empty), and the domain's own address lookup fails.
	dns.SetFault("mx.afail.test", testpeer.DNSServFail)
	dns.SetMX("nodata-afail.test")
	dns.SetFault("nodata-afail.test/A", testpeer.DNSServFail)
	dns.SetFault("nodata-afail.test/AAAA", testpeer.DNSServFail)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "dns.test"
rcpthosts = ["local.test"]
[qmtp]
listen = [%q]
relay_clients = ["127.0.0.0/8"]
[delivery]
resolver = "{{RESOLVER}}"
qmtp_port = %s
smtp_port = %s
connect_timeout = "2s"
timeout = "5s"
[queue]
retry_min = "300ms"
retry_max = "1s"
[[route]]
domains = ["local.test"]
via = "maildir:{{DIR}}/maildir"
[[route]]
domains = ["*"]
via = "mx"
`, qmtpA, qport, qport))
	// The first run's resolver address has nothing behind it.
	d.vars = func(run int) map[string]string {
		if run == 1 {
			return map[string]string{"RESOLVER": deadResolver}
		}
		return map[string]string{"RESOLVER": dns.Addr}
	}
	d.start()
	led := newLedger()
	var domains []string
	for dom := range faults {
		domains = append(domains, dom)
	}
	n := scale(len(domains)*2, len(domains)*10)
	inject(t, qmtpA, "dns", "sender@local.test", n, pickRcptsIn(domains, 2, 1), led)
	// Every domain must see temporary failures, and keep seeing them,
	// without a bounce: first with no resolver at all, then with each
	// failure mode.
	pendingEach := func(min int) func() bool {
		return func() bool {
			log := d.log()
			for dom := range faults {
				if countState(log, dom, "pending") < min {
					return false
				}
			}
			return true
		}
	}
	testpeer.WaitFor(t, "a temporary failure for every domain with a dead resolver", 2*time.Minute, pendingEach(1))
	d.stop()
	d.start()
	testpeer.WaitFor(t, "more temporary failures for every domain", 2*time.Minute, pendingEach(scale(2, 4)))
	failed := d.logCount("state=failed")
	bouncesBefore := countMaildir(filepath.Join(d.dir, "maildir"), "local.test", "sender")
	if got := len(qs.copies()); got != 0 {
		t.Errorf("%d deliveries while DNS was failing", got)
	}
	// DNS heals.
	for dom := range faults {
		dns.SetMX(dom, &net.MX{Host: "mx." + dom, Pref: 12801})
		dns.SetFault(dom, testpeer.DNSHealthy)
	}
	dns.SetFault("mx.afail.test", testpeer.DNSHealthy)
	acked := led.ackedKeys()
	testpeer.WaitFor(t, "every recipient delivered once DNS answers", 3*time.Minute, func() bool { return sinkSet(qs).holdsAll(acked) })
	if !d.waitQueueEmpty(time.Minute) {
		t.Errorf("queue not empty: %d", d.queued())
	}
	d.stop()
	tl := led.tally(sinkSet(qs))
	bounces := countMaildir(filepath.Join(d.dir, "maildir"), "local.test", "sender")
	var statuses []string
	for _, code := range []string{"4.4.3", "4.4.1", "4.4.2", "4.3.0"} {
		if c := strings.Count(d.log(), "(#"+code+")"); c > 0 {
			statuses = append(statuses, fmt.Sprintf("%s×%d", code, c))
		}
	}
	report(t, &row{
		Test:   "DNS failures for mx routes",
		Load:   fmt.Sprintf("%d messages to %d domains over an mx route, resolver on loopback", n, len(domains)),
		Inputs: "no resolver listening; MX lookup SERVFAIL, REFUSED, no answer (timeout), garbage, truncated without TCP, wrong query ID; exchanger address SERVFAIL; no MX and the domain's address SERVFAIL; then DNS heals",
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("temporary statuses logged: %s; permanent failures: %d; bounces: %d; %d DNS queries; all delivered over QMTP (MXPS) once DNS answered.",
			strings.Join(statuses, ", "), failed, bounces, dns.Queries()),
	})
	tl.check(t)
	if failed > 0 || bounces > 0 || bouncesBefore > 0 {
		t.Errorf("DNS trouble made %d permanent failures and %d bounces:\n%s", failed, bounces, grepLog(d.log(), "state=failed", 5))
	}
}

// countState counts delivery log lines for recipients at dom in a state.
func countState(log, dom, state string) int {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "@"+dom+" ") && strings.Contains(l, "state="+state) {
			n++
		}
	}
	return n
}

func freeUDPAddr(t *testing.T, ip string) string {
	pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}
