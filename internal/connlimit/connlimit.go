// Package connlimit counts a server's open connections, in total and per
// client address, and says when a new one would cross a limit. The QMTP,
// QMQP and SMTP servers share it (through internal/serve) so that their
// limits behave alike.
package connlimit

import (
	"cmp"
	"net/netip"
	"sync"
)

// DefaultIPv6PrefixLen is the IPv6 network counted as one client when
// Limiter.IPv6PrefixLen is 0: a /64 is what one subscriber is handed, and
// an attacker may use all of it.
const DefaultIPv6PrefixLen = 64

// Limiter admits connections up to Max in total and PerIP from one client.
// A limit of zero or less means none. The zero Limiter admits everything.
type Limiter struct {
	Max   int
	PerIP int
	// IPv6PrefixLen is how many leading bits of an IPv6 address name one
	// client for PerIP: 0 means DefaultIPv6PrefixLen, negative or 128 the
	// whole address. IPv4 addresses always count one by one.
	IPv6PrefixLen int
	// Exempt, when set, names addresses that PerIP does not apply to
	// (trusted networks, an application fleet behind one NAT address);
	// they still count towards Max.
	Exempt func(netip.Addr) bool

	mu     sync.Mutex
	active int
	perIP  map[netip.Addr]int
}

// key returns the address under which ip is counted, or the zero Addr for
// one that is not counted per client.
func (l *Limiter) key(ip netip.Addr) netip.Addr {
	if !ip.IsValid() || (l.Exempt != nil && l.Exempt(ip)) {
		return netip.Addr{}
	}
	ip = ip.Unmap()
	if !ip.Is6() {
		return ip
	}
	bits := l.IPv6PrefixLen
	bits = cmp.Or(bits, DefaultIPv6PrefixLen)
	if bits < 0 || bits >= 128 {
		return ip
	}
	p, err := ip.WithZone("").Prefix(bits)
	if err != nil {
		return ip
	}
	return p.Addr()
}

// Acquire takes a slot for a connection from ip (the zero Addr for unix
// sockets and unknown peers, which count towards Max only) and reports
// whether it was admitted. Each true must be matched by one Release with
// the same ip. A Limiter whose Exempt may change its mind (a reload) is
// used through Admit and Leave instead.
func (l *Limiter) Acquire(ip netip.Addr) bool {
	_, ok := l.Admit(ip)
	return ok
}

// Release gives back the slot of a connection from ip.
func (l *Limiter) Release(ip netip.Addr) { l.Leave(l.key(ip)) }

// Admit is Acquire that returns the key the connection is counted under,
// for Leave.
func (l *Limiter) Admit(ip netip.Addr) (key netip.Addr, ok bool) {
	k := l.key(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Max > 0 && l.active >= l.Max {
		return k, false
	}
	if k.IsValid() && l.PerIP > 0 && l.perIP[k] >= l.PerIP {
		return k, false
	}
	if k.IsValid() {
		if l.perIP == nil {
			l.perIP = make(map[netip.Addr]int)
		}
		l.perIP[k]++
	}
	l.active++
	return k, true
}

// Leave gives back a slot taken by Admit, by its key.
func (l *Limiter) Leave(key netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active--
	if key.IsValid() {
		if l.perIP[key] <= 1 {
			delete(l.perIP, key)
		} else {
			l.perIP[key]--
		}
	}
}

// Active returns the number of admitted connections.
func (l *Limiter) Active() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.active
}
