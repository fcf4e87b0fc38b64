//go:build linux

package reliability

import (
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"golang.org/x/net/dns/dnsmessage"
)

// fakeDNS is a UDP DNS server whose answers for a name (or "name/TYPE",
// which wins) follow a mode:
// "servfail", "refused", "drop" (no answer: a timeout), "garbage" (random
// bytes), "truncated" (TC set, and no TCP server behind it), "wrongid"
// (an answer to another query), "nxdomain", or "" (the healthy answer
// from mx and a).
type fakeDNS struct {
	addr string
	pc   net.PacketConn

	mu      sync.Mutex
	mode    map[string]string // name → mode
	mx      map[string]string // domain → exchanger name (preference 12801: QMTP)
	a       map[string]string // name → IPv4 address
	queries atomic.Int64
}

func startFakeDNS(t *testing.T, ip string) *fakeDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDNS{addr: pc.LocalAddr().String(), pc: pc, mode: map[string]string{}, mx: map[string]string{}, a: map[string]string{}}
	t.Cleanup(func() { pc.Close() })
	go d.serve()
	return d
}

func (d *fakeDNS) set(name, mode string) {
	d.mu.Lock()
	d.mode[name] = mode
	d.mu.Unlock()
}

func (d *fakeDNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		d.queries.Add(1)
		var p dnsmessage.Parser
		hdr, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		name := strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))
		d.mu.Lock()
		mode, ok := d.mode[name+"/"+strings.TrimPrefix(q.Type.String(), "Type")]
		if !ok {
			mode = d.mode[name]
		}
		mx, a := d.mx[name], d.a[name]
		d.mu.Unlock()
		rh := dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true, RecursionAvailable: true}
		switch mode {
		case "drop":
			continue
		case "garbage":
			junk := make([]byte, 40+rand.IntN(200))
			for i := range junk {
				junk[i] = byte(rand.IntN(256))
			}
			d.pc.WriteTo(junk, from)
			continue
		case "servfail":
			rh.RCode = dnsmessage.RCodeServerFailure
		case "refused":
			rh.RCode = dnsmessage.RCodeRefused
		case "nxdomain":
			rh.RCode = dnsmessage.RCodeNameError
		case "truncated":
			rh.Truncated = true
		case "wrongid":
			rh.ID++
		}
		b := dnsmessage.NewBuilder(nil, rh)
		b.EnableCompression()
		b.StartQuestions()
		b.Question(q)
		b.StartAnswers()
		if mode == "" {
			rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
			switch {
			case q.Type == dnsmessage.TypeMX && mx != "":
				b.MXResource(rr, dnsmessage.MXResource{Pref: 12801, MX: dnsmessage.MustNewName(mx + ".")})
			case q.Type == dnsmessage.TypeA && a != "":
				var ip [4]byte
				copy(ip[:], net.ParseIP(a).To4())
				b.AResource(rr, dnsmessage.AResource{A: ip})
			}
		}
		out, err := b.Finish()
		if err == nil {
			d.pc.WriteTo(out, from)
		}
	}
}

// TestFaultDNS: mx routes while the resolver fails in every way a resolver
// can: SERVFAIL, REFUSED, no answer at all, garbage, a truncated answer with
// no TCP behind it, an answer to another query, an exchanger whose address
// lookup fails, and a resolver address where nothing listens. Each is a
// temporary failure: the mail stays queued and nothing bounces. Then DNS
// heals and everything is delivered over QMTP (MXPS) to a sink.
func TestFaultDNS(t *testing.T) {
	h := newNetHost(t)
	dns := startFakeDNS(t, h.ip(1))
	qs := newSink(t, "qmtp", h.addr(t))
	_, qport, _ := net.SplitHostPort(qs.addr())
	deadResolver := freeUDPAddr(t, h.ip(1))
	qmtpA := h.addr(t)
	faults := map[string]string{ // domain → mode of its MX lookup
		"servfail.test": "servfail", "refused.test": "refused", "drop.test": "drop", "garbage.test": "garbage",
		"truncated.test": "truncated", "wrongid.test": "wrongid", "afail.test": "", "nodata-afail.test": "",
	}
	for dom, mode := range faults {
		dns.set(dom, mode)
		dns.mx[dom] = "mx." + dom
		dns.a["mx."+dom] = h.ip(1)
	}
	// afail: the exchanger's address lookup fails. nodata-afail: no MX
	// records (NOERROR, empty), and the domain's own address lookup fails.
	dns.set("mx.afail.test", "servfail")
	delete(dns.mx, "nodata-afail.test")
	dns.set("nodata-afail.test/A", "servfail")
	dns.set("nodata-afail.test/AAAA", "servfail")
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
		return map[string]string{"RESOLVER": dns.addr}
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
	dns.mu.Lock()
	for dom := range faults {
		dns.mode[dom] = ""
		dns.mx[dom] = "mx." + dom
	}
	dns.mode["mx.afail.test"] = ""
	dns.mu.Unlock()
	acked := led.ackedKeys()
	testpeer.WaitFor(t, "every recipient delivered once DNS answers", 3*time.Minute, func() bool {
		ds := sinkSet(qs)
		for k := range acked {
			if ds.count[k] == 0 {
				return false
			}
		}
		return true
	})
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
			strings.Join(statuses, ", "), failed, bounces, dns.queries.Load()),
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
