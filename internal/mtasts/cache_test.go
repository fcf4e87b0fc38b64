package mtasts

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// testCA makes a CA and a server certificate for the given names.
func testCA(t *testing.T, names ...string) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "qmgate test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// site is what the local policy server answers for one mta-sts host.
type site struct {
	status   int
	body     string
	location string
	ctype    string
}

// policyServer is a local HTTPS server standing in for every mta-sts.DOMAIN.
type policyServer struct {
	mu    sync.Mutex
	sites map[string]site
	hits  map[string]int
	srv   *httptest.Server
	pool  *x509.CertPool
}

func newPolicyServer(t *testing.T) *policyServer {
	ps := &policyServer{sites: map[string]site{}, hits: map[string]int{}}
	pool, cert := testCA(t, "mta-sts.example.net", "mta-sts.example.org", "mta-sts.big.example", "mta-sts.moved.example", "mta-sts.broken.example")
	ps.pool = pool
	ps.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps.mu.Lock()
		s, ok := ps.sites[r.Host]
		ps.hits[r.Host]++
		ps.mu.Unlock()
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		if s.location != "" {
			w.Header().Set("Location", s.location)
		}
		ct := s.ctype
		if ct == "" {
			ct = "text/plain; charset=utf-8"
		}
		w.Header().Set("Content-Type", ct)
		if s.status == 0 {
			s.status = 200
		}
		w.WriteHeader(s.status)
		fmt.Fprint(w, s.body)
	}))
	ps.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ps.srv.StartTLS()
	t.Cleanup(ps.srv.Close)
	return ps
}

func (ps *policyServer) set(host string, s site) {
	ps.mu.Lock()
	ps.sites[host] = s
	ps.mu.Unlock()
}

func (ps *policyServer) hitCount(host string) int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.hits[host]
}

// fakeDNS answers TXT lookups from a map; a name mapped to nil is missing.
type fakeDNS struct {
	mu   sync.Mutex
	txt  map[string][]string
	fail error
}

func (d *fakeDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil {
		return nil, d.fail
	}
	r, ok := d.txt[name]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return r, nil
}

func (d *fakeDNS) setTXT(name string, recs ...string) {
	d.mu.Lock()
	d.txt[name] = recs
	d.mu.Unlock()
}

func (d *fakeDNS) setFail(err error) {
	d.mu.Lock()
	d.fail = err
	d.mu.Unlock()
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newCache(t *testing.T, ps *policyServer, dns Resolver, clk *clock, dir string) *Cache {
	addr := ps.srv.Listener.Addr().String()
	return &Cache{
		Dir: dir, Resolver: dns, RootCAs: ps.pool, Now: clk.now,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

const enforce = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.net\r\nmx: *.mx.example.net\r\nmax_age: 86400\r\n"

func setup(t *testing.T) (*policyServer, *fakeDNS, *clock, *Cache) {
	ps := newPolicyServer(t)
	dns := &fakeDNS{txt: map[string][]string{}}
	clk := &clock{t: time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)}
	return ps, dns, clk, newCache(t, ps, dns, clk, t.TempDir())
}

func TestEnforceMatchingAndNot(t *testing.T) {
	ps, dns, _, c := setup(t)
	dns.setTXT("_mta-sts.example.net", "v=STSv1; id=1")
	ps.set("mta-sts.example.net", site{body: enforce})
	p, err := c.Policy(context.Background(), "Example.NET.")
	if err != nil || p.Mode != ModeEnforce || p.ID != "1" || p.Domain != "example.net" {
		t.Fatalf("%+v %v", p, err)
	}
	if !p.Allows("mx1.example.net") || !p.Allows("b.mx.example.net") {
		t.Error("a matching MX is refused")
	}
	if p.Allows("mx.attacker.example") || p.Allows("mx2.example.net") {
		t.Error("a non-matching MX is allowed")
	}
}

func TestTestingMode(t *testing.T) {
	ps, dns, _, c := setup(t)
	dns.setTXT("_mta-sts.example.org", "v=STSv1; id=t1")
	ps.set("mta-sts.example.org", site{body: "version: STSv1\nmode: testing\nmx: mx.example.org\nmax_age: 3600\n"})
	p, err := c.Policy(context.Background(), "example.org")
	if err != nil || p.Mode != ModeTesting || !p.Active() || p.Allows("other.example") || !p.Allows("mx.example.org") {
		t.Fatalf("%+v %v", p, err)
	}
}

func TestCacheIDChangeAndExpiry(t *testing.T) {
	ps, dns, clk, c := setup(t)
	ctx := context.Background()
	dns.setTXT("_mta-sts.example.net", "v=STSv1; id=1")
	ps.set("mta-sts.example.net", site{body: enforce})
	if _, err := c.Policy(ctx, "example.net"); err != nil {
		t.Fatal(err)
	}
	// Same id, within max_age: no fetch.
	clk.add(time.Hour)
	p, err := c.Policy(ctx, "example.net")
	if err != nil || ps.hitCount("mta-sts.example.net") != 1 || p.Mode != ModeEnforce {
		t.Fatalf("cached: %d fetches, %+v %v", ps.hitCount("mta-sts.example.net"), p, err)
	}
	// The id changes: fetched again, the new policy wins.
	dns.setTXT("_mta-sts.example.net", "v=STSv1; id=2")
	ps.set("mta-sts.example.net", site{body: strings.Replace(enforce, "mx1.example.net", "mx9.example.net", 1)})
	p, err = c.Policy(ctx, "example.net")
	if err != nil || ps.hitCount("mta-sts.example.net") != 2 || p.ID != "2" || !p.Allows("mx9.example.net") || p.Allows("mx1.example.net") {
		t.Fatalf("id change: %+v %v", p, err)
	}
	// Past max_age: fetched again although the id is the same.
	clk.add(25 * time.Hour)
	if p, err = c.Policy(ctx, "example.net"); err != nil || ps.hitCount("mta-sts.example.net") != 3 {
		t.Fatalf("expired: %d fetches, %v", ps.hitCount("mta-sts.example.net"), err)
	}
	if !p.Expires.Equal(clk.now().Add(24 * time.Hour)) {
		t.Errorf("expires %v", p.Expires)
	}
}

func TestFailuresKeepTheCachedPolicy(t *testing.T) {
	ps, dns, clk, c := setup(t)
	ctx := context.Background()
	dns.setTXT("_mta-sts.example.net", "v=STSv1; id=1")
	ps.set("mta-sts.example.net", site{body: enforce})
	if _, err := c.Policy(ctx, "example.net"); err != nil {
		t.Fatal(err)
	}
	// DNS fails: the cached policy, with an error to log.
	dns.setFail(errors.New("server failure"))
	if p, err := c.Policy(ctx, "example.net"); err == nil || p.Mode != ModeEnforce {
		t.Errorf("DNS failure: %+v %v", p, err)
	}
	// A new id but the HTTPS server fails: still the cached policy.
	dns.setFail(nil)
	dns.setTXT("_mta-sts.example.net", "v=STSv1; id=2")
	ps.set("mta-sts.example.net", site{status: 500, body: "oops"})
	if p, err := c.Policy(ctx, "example.net"); err == nil || p.Mode != ModeEnforce || p.ID != "1" {
		t.Errorf("HTTPS failure: %+v %v", p, err)
	}
	// The TXT record goes away: the policy stands until it expires.
	dns.setTXT("_mta-sts.example.net")
	if p, err := c.Policy(ctx, "example.net"); err != nil || p.Mode != ModeEnforce {
		t.Errorf("TXT removed: %+v %v", p, err)
	}
	// A restart: a new Cache on the same directory finds it on disk.
	dns.setFail(errors.New("server failure"))
	c2 := newCache(t, ps, dns, clk, c.Dir)
	if p, err := c2.Policy(ctx, "example.net"); err == nil || p.Mode != ModeEnforce || p.ID != "1" {
		t.Errorf("from disk: %+v %v", p, err)
	}
	// Expired and DNS still failing: no policy.
	clk.add(48 * time.Hour)
	if p, err := c2.Policy(ctx, "example.net"); err == nil || p.Active() {
		t.Errorf("expired, DNS failing: %+v %v", p, err)
	}
}

func TestNoPolicy(t *testing.T) {
	ps, dns, _, c := setup(t)
	ctx := context.Background()
	for _, recs := range [][]string{nil, {"v=spf1 -all"}, {"v=STSv1; id=bad-id"}} {
		if recs != nil {
			dns.setTXT("_mta-sts.example.net", recs...)
		}
		if p, err := c.Policy(ctx, "example.net"); err != nil || p.Active() || !p.Allows("any.example") {
			t.Errorf("TXT %q: %+v %v", recs, p, err)
		}
	}
	// DNS or HTTPS failure without a cached policy: delivery goes on as without one.
	dns.setTXT("_mta-sts.broken.example", "v=STSv1; id=1")
	ps.set("mta-sts.broken.example", site{body: "version: STSv1\nmode: enforce\n"})
	if p, err := c.Policy(ctx, "broken.example"); err == nil || p.Active() {
		t.Errorf("bad policy: %+v %v", p, err)
	}
	dns.setFail(errors.New("timeout"))
	if p, err := c.Policy(ctx, "example.org"); err == nil || p.Active() {
		t.Errorf("DNS failure: %+v %v", p, err)
	}
	if _, err := c.Policy(ctx, "../etc"); err == nil {
		t.Error("a path accepted as a domain")
	}
}

func TestTooLargeRedirectAndUntrusted(t *testing.T) {
	ps, dns, clk, c := setup(t)
	ctx := context.Background()
	dns.setTXT("_mta-sts.big.example", "v=STSv1; id=1")
	ps.set("mta-sts.big.example", site{body: enforce + strings.Repeat("x-pad: "+strings.Repeat("y", 1000)+"\n", 70)})
	if p, err := c.Policy(ctx, "big.example"); !errors.Is(err, ErrTooLarge) || p.Active() {
		t.Errorf("too large: %+v %v", p, err)
	}
	dns.setTXT("_mta-sts.moved.example", "v=STSv1; id=1")
	ps.set("mta-sts.moved.example", site{status: 302, location: "https://mta-sts.example.net/.well-known/mta-sts.txt"})
	ps.set("mta-sts.example.net", site{body: enforce})
	if p, err := c.Policy(ctx, "moved.example"); !errors.Is(err, ErrRedirect) || p.Active() || ps.hitCount("mta-sts.example.net") != 0 {
		t.Errorf("redirect: %+v %v", p, err)
	}
	// A server certificate from a CA the cache does not trust.
	dns.setTXT("_mta-sts.example.net", "v=STSv1; id=1")
	other, _ := testCA(t, "mta-sts.example.net")
	c2 := newCache(t, ps, dns, clk, t.TempDir())
	c2.RootCAs = other
	if p, err := c2.Policy(ctx, "example.net"); err == nil || p.Active() {
		t.Errorf("untrusted certificate: %+v %v", p, err)
	}
	// Served as HTML (a parked domain's catch-all page): not a policy.
	ps.set("mta-sts.example.net", site{body: enforce, ctype: "text/html"})
	if p, err := c.Policy(ctx, "example.net"); err == nil || p.Active() {
		t.Errorf("text/html: %+v %v", p, err)
	}
}

// TestConcurrentLookupsShareOneFetch: deliveries to one domain that ask at
// once wait for one fetch.
func TestConcurrentLookupsShareOneFetch(t *testing.T) {
	ps, dns, _, c := setup(t)
	dns.setTXT("_mta-sts.example.net", "v=STSv1; id=1")
	ps.set("mta-sts.example.net", site{body: enforce})
	release := make(chan struct{})
	inner := ps.srv.Config.Handler
	ps.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		inner.ServeHTTP(w, r)
	})
	const n = 8
	results := make(chan Policy, n)
	for range n {
		go func() {
			p, _ := c.Policy(context.Background(), "example.net")
			results <- p
		}()
	}
	// Wait until one lookup is in flight and the others wait for it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.init()
		c.mu.Lock()
		cl := c.inflight["example.net"]
		w := 0
		if cl != nil {
			w = cl.waiters
		}
		c.mu.Unlock()
		if w == n-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callers waiting, want %d", w, n-1)
		}
		runtime.Gosched()
	}
	close(release)
	for range n {
		if p := <-results; p.Mode != ModeEnforce {
			t.Errorf("policy %+v", p)
		}
	}
	if h := ps.hitCount("mta-sts.example.net"); h != 1 {
		t.Errorf("%d fetches, want 1", h)
	}
}

// TestRefresh: a policy past half its max_age is fetched again in the
// background with the same id, a younger one is not, and a policy cached on
// disk by an earlier run is renewed too; a failure keeps the cached policy.
func TestRefresh(t *testing.T) {
	ps, dns, clk, c := setup(t)
	ctx := context.Background()
	dns.setTXT("_mta-sts.example.net", "v=STSv1; id=1")
	dns.setTXT("_mta-sts.example.org", "v=STSv1; id=1")
	ps.set("mta-sts.example.net", site{body: enforce})
	ps.set("mta-sts.example.org", site{body: "version: STSv1\nmode: testing\nmx: mx.example.org\nmax_age: 604800\n"})
	for _, d := range []string{"example.net", "example.org"} {
		if _, err := c.Policy(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	clk.add(13 * time.Hour) // past half of example.net's day, not of example.org's week
	n, err := c.Refresh(ctx, 0)
	if err != nil || n != 1 || ps.hitCount("mta-sts.example.net") != 2 || ps.hitCount("mta-sts.example.org") != 1 {
		t.Fatalf("refresh: %d %v; fetches %d %d", n, err, ps.hitCount("mta-sts.example.net"), ps.hitCount("mta-sts.example.org"))
	}
	p, err := c.Policy(ctx, "example.net")
	if err != nil || !p.Expires.Equal(clk.now().Add(24*time.Hour)) {
		t.Fatalf("renewed policy: %+v %v", p, err)
	}

	// A new Cache on the same directory (a restart) renews what is on disk.
	c2 := newCache(t, ps, dns, clk, c.Dir)
	clk.add(13 * time.Hour)
	ps.set("mta-sts.example.net", site{status: http.StatusInternalServerError})
	n, err = c2.Refresh(ctx, 0)
	if n != 0 || err == nil {
		t.Fatalf("failed refresh: %d %v", n, err)
	}
	if p, err := c2.Policy(ctx, "example.net"); err != nil || p.Mode != ModeEnforce {
		t.Fatalf("after a failed refresh: %+v %v", p, err)
	}
	ps.set("mta-sts.example.net", site{body: enforce})
	if n, err = c2.Refresh(ctx, 1); err != nil || n != 1 {
		t.Fatalf("refresh from disk: %d %v", n, err)
	}
}
