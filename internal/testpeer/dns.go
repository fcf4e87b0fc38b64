package testpeer

import (
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSFault is how a DNS server answers a name that is set to fail.
type DNSFault string

// The ways a resolver can fail, for DNS.SetFault.
const (
	DNSHealthy   DNSFault = ""          // the answer from the tables
	DNSServFail  DNSFault = "servfail"  // RCODE SERVFAIL
	DNSRefused   DNSFault = "refused"   // RCODE REFUSED
	DNSNXDomain  DNSFault = "nxdomain"  // RCODE NXDOMAIN
	DNSDrop      DNSFault = "drop"      // no answer at all: a timeout
	DNSGarbage   DNSFault = "garbage"   // random bytes
	DNSTruncated DNSFault = "truncated" // TC set, with no TCP server behind it
	DNSWrongID   DNSFault = "wrongid"   // an answer to another query
)

// DNS is a UDP DNS server on a loopback address that answers MX, A and TXT
// queries from tables the test may change while it runs. A name that is in
// no table (and has no fault set, healthy or not) is NXDOMAIN; a known name
// without records of the asked type gets an empty answer (NOERROR).
type DNS struct {
	// Addr is the server's address, for a resolver setting.
	Addr string

	pc      net.PacketConn
	queries atomic.Int64

	mu    sync.Mutex
	mx    map[string][]*net.MX // domain → its exchangers
	a     map[string]string    // name → IPv4 address
	txt   map[string][]string  // name → TXT strings, one string each
	fault map[string]DNSFault  // name, or "name/TYPE" (which wins) → fault
}

// StartDNS starts a DNS server on ip (a loopback address) at a port the
// kernel picks; it stops when the test ends.
func StartDNS(t testing.TB, ip string) *DNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	d := &DNS{Addr: pc.LocalAddr().String(), pc: pc, mx: map[string][]*net.MX{}, a: map[string]string{},
		txt: map[string][]string{}, fault: map[string]DNSFault{}}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		d.serve()
	}()
	return d
}

// SetMX sets domain's exchangers (host names with or without the final
// dot); none removes them.
func (d *DNS) SetMX(domain string, mx ...*net.MX) { set(d, d.mx, domain, mx, len(mx) > 0) }

// SetA sets name's IPv4 address; "" removes it.
func (d *DNS) SetA(name, ip string) { set(d, d.a, name, ip, ip != "") }

// SetTXT sets name's TXT records; none removes them.
func (d *DNS) SetTXT(name string, recs ...string) { set(d, d.txt, name, recs, len(recs) > 0) }

// set puts v in table under name, or removes name unless keep.
func set[V any](d *DNS, table map[string]V, name string, v V, keep bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if keep {
		table[name] = v
	} else {
		delete(table, name)
	}
}

// SetFault makes queries for name ("name/TYPE", as "example.test/AAAA":
// only that type) fail as f. DNSHealthy heals the name and also makes it
// known: a name with no records then gets empty answers, not NXDOMAIN.
func (d *DNS) SetFault(name string, f DNSFault) {
	d.mu.Lock()
	d.fault[name] = f
	d.mu.Unlock()
}

// Queries returns how many queries the server has received.
func (d *DNS) Queries() int64 { return d.queries.Load() }

func (d *DNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		d.queries.Add(1)
		if out := d.answer(buf[:n]); out != nil {
			d.pc.WriteTo(out, from)
		}
	}
}

// answer returns the reply to one query, or nil for none.
func (d *DNS) answer(query []byte) []byte {
	var p dnsmessage.Parser
	hdr, err := p.Start(query)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	name := strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))
	d.mu.Lock()
	fault, faulty := d.fault[name+"/"+strings.TrimPrefix(q.Type.String(), "Type")]
	if !faulty {
		fault, faulty = d.fault[name]
	}
	mx, a, txt := d.mx[name], d.a[name], d.txt[name]
	d.mu.Unlock()
	rh := dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true, RecursionAvailable: true}
	switch fault {
	case DNSDrop:
		return nil
	case DNSGarbage:
		junk := make([]byte, 40+rand.IntN(200))
		for i := range junk {
			junk[i] = byte(rand.IntN(256))
		}
		return junk
	case DNSServFail:
		rh.RCode = dnsmessage.RCodeServerFailure
	case DNSRefused:
		rh.RCode = dnsmessage.RCodeRefused
	case DNSNXDomain:
		rh.RCode = dnsmessage.RCodeNameError
	case DNSTruncated:
		rh.Truncated = true
	case DNSWrongID:
		rh.ID++
	case DNSHealthy:
		if !faulty && mx == nil && a == "" && txt == nil {
			rh.RCode = dnsmessage.RCodeNameError
		}
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	if fault == DNSHealthy {
		rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
		switch q.Type {
		case dnsmessage.TypeMX:
			for _, m := range mx {
				host := m.Host
				if !strings.HasSuffix(host, ".") {
					host += "."
				}
				b.MXResource(rr, dnsmessage.MXResource{Pref: m.Pref, MX: dnsmessage.MustNewName(host)})
			}
		case dnsmessage.TypeA:
			if ip := net.ParseIP(a).To4(); ip != nil {
				b.AResource(rr, dnsmessage.AResource{A: [4]byte(ip)})
			}
		case dnsmessage.TypeTXT:
			for _, s := range txt {
				b.TXTResource(rr, dnsmessage.TXTResource{TXT: []string{s}})
			}
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}
