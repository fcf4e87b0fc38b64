// Package connlimit counts a server's open connections, in total and per
// client IP address, and says when a new one would cross a limit. The QMTP,
// QMQP and SMTP servers share it so that their limits behave alike.
package connlimit

import (
	"net/netip"
	"sync"
)

// Limiter admits connections up to Max in total and PerIP from one address.
// A limit of zero or less means none. The zero Limiter admits everything.
type Limiter struct {
	Max   int
	PerIP int

	mu     sync.Mutex
	active int
	perIP  map[netip.Addr]int
}

// Acquire takes a slot for a connection from ip (the zero Addr for unix
// sockets and unknown peers, which count towards Max only) and reports
// whether it was admitted. Each true must be matched by one Release.
func (l *Limiter) Acquire(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Max > 0 && l.active >= l.Max {
		return false
	}
	if ip.IsValid() && l.PerIP > 0 {
		if l.perIP[ip] >= l.PerIP {
			return false
		}
	}
	if ip.IsValid() {
		if l.perIP == nil {
			l.perIP = make(map[netip.Addr]int)
		}
		l.perIP[ip]++
	}
	l.active++
	return true
}

// Release gives back the slot of a connection from ip.
func (l *Limiter) Release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active--
	if ip.IsValid() {
		if l.perIP[ip] <= 1 {
			delete(l.perIP, ip)
		} else {
			l.perIP[ip]--
		}
	}
}

// Active returns the number of admitted connections.
func (l *Limiter) Active() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.active
}
