package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/qmgate/qmgate/internal/safedir"
)

// Defaults for Cache's bounds.
const (
	DefaultMaxPolicyBytes = 64 << 10         // RFC 8461 section 3.3 suggests 64 KiB
	DefaultFetchTimeout   = 60 * time.Second // RFC 8461 section 3.3: "a reasonable timeout"
	DefaultLookupTimeout  = 30 * time.Second
)

// Resolver looks up TXT records; *net.Resolver is one.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Cache finds domains' policies and keeps them, in memory and as one file per
// domain in Dir, until they expire. The zero values of the optional fields
// are safe defaults. A Cache is safe for concurrent use.
type Cache struct {
	Dir      string   // required: where policies are kept (beside the queue)
	Resolver Resolver // nil means net.DefaultResolver

	// RootCAs verifies the policy servers' certificates; nil means the
	// system's roots. Tests give their own CA.
	RootCAs *x509.CertPool
	// DialContext connects to the policy server; nil means a net.Dialer.
	// Tests point mta-sts.DOMAIN:443 at a local server with it.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	MaxPolicyBytes int64         // 0 means DefaultMaxPolicyBytes
	FetchTimeout   time.Duration // 0 means DefaultFetchTimeout
	LookupTimeout  time.Duration // 0 means DefaultLookupTimeout
	Now            func() time.Time

	once     sync.Once
	client   *http.Client
	mu       sync.Mutex
	mem      map[string]Policy
	inflight map[string]*call // one lookup per domain at a time
}

// call is one lookup in progress; deliveries to the same domain that ask
// meanwhile wait for its answer instead of fetching the policy again.
type call struct {
	done    chan struct{}
	waiters int
	p       Policy
	err     error
}

// Errors a fetch may end in, for the caller's logs.
var (
	ErrTooLarge = errors.New("policy larger than the limit")
	ErrRedirect = errors.New("policy server answered with a redirect, which RFC 8461 section 3.3 forbids following")
)

func (c *Cache) init() {
	c.once.Do(func() {
		dial := c.DialContext
		if dial == nil {
			dial = (&net.Dialer{Timeout: c.fetchTimeout()}).DialContext
		}
		c.client = &http.Client{
			Transport: &http.Transport{
				DialContext:         dial,
				TLSClientConfig:     &tls.Config{RootCAs: c.RootCAs, MinVersion: tls.VersionTLS12},
				TLSHandshakeTimeout: c.fetchTimeout(),
				DisableKeepAlives:   true,
				Proxy:               nil,
			},
			Timeout: c.fetchTimeout(),
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
		c.mem = map[string]Policy{}
		c.inflight = map[string]*call{}
	})
}

func (c *Cache) fetchTimeout() time.Duration { return orDefault(c.FetchTimeout, DefaultFetchTimeout) }

// orDefault is v when positive, else def.
func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

func (c *Cache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Policy returns domain's policy for a delivery now (RFC 8461 section 5.1):
//
//   - an unexpired cached policy whose id the TXT record still carries, with
//     no fetch;
//   - a freshly fetched one when the TXT id changed or the cache expired;
//   - the unexpired cached one when the TXT lookup or the fetch fails, or
//     the TXT record went away (an attacker who can block DNS or HTTPS
//     cannot remove a policy before it expires);
//   - no policy (Mode none) when there is neither.
//
// The returned Policy is always usable; an error says that a lookup or
// fetch failed and the policy returned is the cached one or none.
//
// Concurrent calls for one domain share one lookup.
func (c *Cache) Policy(ctx context.Context, domain string) (Policy, error) {
	c.init()
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !isHostname(domain) {
		return Policy{Mode: ModeNone}, fmt.Errorf("mta-sts: %q is not a domain name", domain)
	}
	c.mu.Lock()
	if cl := c.inflight[domain]; cl != nil {
		cl.waiters++
		c.mu.Unlock()
		select {
		case <-cl.done:
			return cl.p, cl.err
		case <-ctx.Done():
			if p, ok := c.load(domain); ok && c.now().Before(p.Expires) {
				return p, fmt.Errorf("mta-sts %s: %w (using the cached policy)", domain, ctx.Err())
			}
			return Policy{Mode: ModeNone, Domain: domain}, fmt.Errorf("mta-sts %s: %w", domain, ctx.Err())
		}
	}
	cl := &call{done: make(chan struct{})}
	c.inflight[domain] = cl
	c.mu.Unlock()
	cl.p, cl.err = c.policy(ctx, domain, false)
	c.mu.Lock()
	delete(c.inflight, domain)
	c.mu.Unlock()
	close(cl.done)
	return cl.p, cl.err
}

// policy looks domain's policy up (Policy without the sharing). With
// refresh it fetches the policy again even when the TXT id is unchanged,
// which extends the cached policy's life (RFC 8461 section 5.1).
func (c *Cache) policy(ctx context.Context, domain string, refresh bool) (Policy, error) {
	now := c.now()
	cached, haveCache := c.load(domain)
	if haveCache && !now.Before(cached.Expires) {
		haveCache = false
	}
	fallback := func(err error) (Policy, error) {
		if haveCache {
			return cached, fmt.Errorf("mta-sts %s: %w (using the policy cached until %s)", domain, err, cached.Expires.UTC().Format(time.RFC3339))
		}
		return Policy{Mode: ModeNone, Domain: domain}, fmt.Errorf("mta-sts %s: %w", domain, err)
	}

	id, err := c.lookup(ctx, domain)
	if err != nil {
		return fallback(err)
	}
	if id == "" {
		if haveCache {
			return cached, nil
		}
		return Policy{Mode: ModeNone, Domain: domain}, nil
	}
	if haveCache && cached.ID == id && !refresh {
		return cached, nil
	}
	p, err := c.fetch(ctx, domain)
	if err != nil {
		return fallback(err)
	}
	p.Domain, p.ID, p.Fetched, p.Expires = domain, id, now, now.Add(p.MaxAge)
	if err := c.store(p); err != nil {
		return p, fmt.Errorf("mta-sts %s: keeping the policy: %w", domain, err)
	}
	return p, nil
}

// lookup returns the id of domain's _mta-sts TXT record, or "" when it has
// none. A missing name is no record; any other failure is an error.
func (c *Cache) lookup(ctx context.Context, domain string) (string, error) {
	r := c.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(c.LookupTimeout, DefaultLookupTimeout))
	defer cancel()
	recs, err := r.LookupTXT(ctx, "_mta-sts."+domain)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return "", nil
		}
		return "", fmt.Errorf("looking up _mta-sts.%s: %w", domain, err)
	}
	id, err := parseTXT(recs)
	if err != nil {
		// RFC 8461 section 3.1: an invalid record is no record.
		return "", nil
	}
	return id, nil
}

// fetch gets https://mta-sts.DOMAIN/.well-known/mta-sts.txt with verified
// TLS, bounded in size and time, following no redirect.
func (c *Cache) fetch(ctx context.Context, domain string) (Policy, error) {
	ctx, cancel := context.WithTimeout(ctx, c.fetchTimeout())
	defer cancel()
	url := "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Policy{}, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return Policy{}, fmt.Errorf("fetching the policy: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return Policy{}, ErrRedirect
	}
	if resp.StatusCode != http.StatusOK {
		return Policy{}, fmt.Errorf("fetching the policy: HTTP status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "text/plain" {
			return Policy{}, fmt.Errorf("policy served as %q, not text/plain", trunc(ct))
		}
	}
	max := orDefault(c.MaxPolicyBytes, DefaultMaxPolicyBytes)
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return Policy{}, fmt.Errorf("reading the policy: %w", err)
	}
	if int64(len(b)) > max {
		return Policy{}, fmt.Errorf("%w (%d bytes)", ErrTooLarge, max)
	}
	return Parse(b)
}

// DefaultRefreshMax bounds how many policies one Refresh fetches again.
const DefaultRefreshMax = 100

// Refresh renews, one after the other, up to max (0: DefaultRefreshMax)
// cached policies that are past half their max_age and not yet expired, so
// that the policies of domains mail goes to often do not lapse between
// deliveries (RFC 8461 section 5.1 suggests refreshing in the background).
// Policies cached on disk by an earlier run count too. A failed refresh
// keeps the cached policy; it returns how many were renewed and the first
// failure.
func (c *Cache) Refresh(ctx context.Context, max int) (int, error) {
	c.init()
	max = orDefault(max, DefaultRefreshMax)
	now := c.now()
	var due []string
	seen := map[string]bool{}
	consider := func(p Policy) {
		if seen[p.Domain] || len(due) >= max {
			return
		}
		seen[p.Domain] = true
		if p.Active() && now.Before(p.Expires) && !now.Before(p.Fetched.Add(p.MaxAge/2)) {
			due = append(due, p.Domain)
		}
	}
	c.mu.Lock()
	mem := make([]Policy, 0, len(c.mem))
	for _, p := range c.mem {
		mem = append(mem, p)
	}
	c.mu.Unlock()
	for _, p := range mem {
		consider(p)
	}
	if ents, err := os.ReadDir(c.Dir); err == nil {
		for _, e := range ents {
			d, ok := strings.CutSuffix(e.Name(), ".json")
			if !ok || seen[d] || !isHostname(d) || len(due) >= max {
				continue
			}
			if p, ok := c.load(d); ok {
				consider(p)
			}
		}
	}
	n := 0
	var first error
	for _, d := range due {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		old, _ := c.load(d)
		p, err := c.policy(ctx, d, true)
		switch {
		case err != nil:
			if first == nil {
				first = err
			}
		case p.Fetched.After(old.Fetched):
			n++
		}
	}
	return n, first
}

// load returns the cached policy for domain, from memory or from disk.
func (c *Cache) load(domain string) (Policy, bool) {
	c.mu.Lock()
	p, ok := c.mem[domain]
	c.mu.Unlock()
	if ok {
		return p, true
	}
	b, err := os.ReadFile(c.path(domain))
	if err != nil {
		return Policy{}, false
	}
	if err := json.Unmarshal(b, &p); err != nil || p.Domain != domain {
		return Policy{}, false // a damaged file is no cache; the next fetch replaces it
	}
	c.mu.Lock()
	c.mem[domain] = p
	c.mu.Unlock()
	return p, true
}

// store keeps p in memory and on disk (replaced atomically, so a crash
// leaves the old policy or the new one).
func (c *Cache) store(p Policy) error {
	c.mu.Lock()
	c.mem[p.Domain] = p
	c.mu.Unlock()
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return safedir.WriteFile(c.path(p.Domain), b)
}

// path is the cache file of a domain; isHostname has kept '/' and ".." out.
func (c *Cache) path(domain string) string {
	return filepath.Join(c.Dir, domain+".json")
}
