package smtp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/qmgate/qmgate/internal/serve"
)

// Bounds of the AUTH guard's memory: beyond them expired entries are swept,
// and if that is not enough the oldest knowledge is dropped.
const (
	maxAuthFailureAddrs = 1 << 16
	maxFailedCreds      = 1 << 14
)

// authGuard keeps password checks from becoming a way to burn the server's
// CPU (a bcrypt costs tens of milliseconds): it bounds the checks running
// at once, counts failures per client address across connections, and
// remembers credentials that just failed so that trying them again costs a
// map lookup. A success is never remembered.
type authGuard struct {
	once  sync.Once
	slots chan struct{} // nil: no bound
	key   [32]byte      // keys the credential hashes: no plain hash of a password is kept

	mu    sync.Mutex
	addrs map[netip.Addr]*failures
	creds map[[32]byte]time.Time // expiry of a failed (user, password)
}

type failures struct {
	n     int
	until time.Time // the window's end
}

func (g *authGuard) init(s *Server) {
	g.once.Do(func() {
		n := s.MaxAuthChecks
		if n == 0 {
			n = runtime.NumCPU()
		}
		if n > 0 {
			g.slots = make(chan struct{}, n)
		}
		rand.Read(g.key[:])
		g.addrs = make(map[netip.Addr]*failures)
		g.creds = make(map[[32]byte]time.Time)
	})
}

// acquire waits for a check slot; false when ctx ended first.
func (g *authGuard) acquire(ctx context.Context) bool {
	if g.slots == nil {
		return true
	}
	select {
	case g.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (g *authGuard) release() {
	if g.slots != nil {
		<-g.slots
	}
}

// credKey is the keyed hash under which a failed (user, password) is
// remembered.
func (g *authGuard) credKey(user, pass string) [32]byte {
	h := sha256.New()
	h.Write(g.key[:])
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(pass))
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// knownBad reports whether (user, password) failed within the window.
func (g *authGuard) knownBad(k [32]byte, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	exp, ok := g.creds[k]
	if ok && now.After(exp) {
		delete(g.creds, k)
		return false
	}
	return ok
}

// blocked reports whether addr has used up its failures for the window.
func (g *authGuard) blocked(addr netip.Addr, max int, now time.Time) bool {
	if max <= 0 || !addr.IsValid() {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.addrs[addr]
	if f == nil {
		return false
	}
	if now.After(f.until) {
		delete(g.addrs, addr)
		return false
	}
	return f.n >= max
}

// failed records a failure from addr, and of the credentials k when the
// check was made.
func (g *authGuard) failed(addr netip.Addr, k *[32]byte, window time.Duration, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if addr.IsValid() {
		f := g.addrs[addr]
		if f == nil || now.After(f.until) {
			if len(g.addrs) >= maxAuthFailureAddrs {
				sweep(g.addrs, func(f *failures) bool { return now.After(f.until) })
			}
			f = &failures{until: now.Add(window)}
			g.addrs[addr] = f
		}
		f.n++
	}
	if k != nil {
		if len(g.creds) >= maxFailedCreds {
			sweep(g.creds, func(t time.Time) bool { return now.After(t) })
		}
		g.creds[*k] = now.Add(window)
	}
}

// sweep deletes the expired entries of m, or all of them if none had
// expired: memory stays bounded whatever a flood of addresses does.
func sweep[K comparable, V any](m map[K]V, expired func(V) bool) {
	n := len(m)
	for k, v := range m {
		if expired(v) {
			delete(m, k)
		}
	}
	if len(m) == n {
		clear(m)
	}
}

// authAddr is the address a client's failures are counted under: its IP,
// or its IPv6 network of the server's IPv6PrefixLen (64 by default).
func (s *Server) authAddr(ip netip.Addr) netip.Addr {
	if !ip.Is6() || ip.Is4In6() {
		return ip.Unmap()
	}
	bits := serve.Pick(s.IPv6PrefixLen, serve.DefaultIPv6PrefixLen)
	if bits <= 0 || bits >= 128 {
		return ip
	}
	p, err := ip.WithZone("").Prefix(bits)
	if err != nil {
		return ip
	}
	return p.Addr()
}
