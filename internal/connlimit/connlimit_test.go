package connlimit

import (
	"net/netip"
	"sync"
	"testing"
)

func TestLimiter(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	l := &Limiter{Max: 3, PerIP: 2}
	for i := 0; i < 2; i++ {
		if !l.Acquire(a) {
			t.Fatalf("connection %d from a refused", i+1)
		}
	}
	if l.Acquire(a) {
		t.Fatal("third from a admitted over PerIP")
	}
	if !l.Acquire(b) {
		t.Fatal("b refused")
	}
	if l.Acquire(netip.Addr{}) {
		t.Fatal("admitted over Max")
	}
	l.Release(a)
	if !l.Acquire(netip.Addr{}) {
		t.Fatal("unix-socket connection refused with a free slot")
	}
	l.Release(netip.Addr{})
	l.Release(a)
	l.Release(b)
	if l.Active() != 0 || len(l.perIP) != 0 {
		t.Fatalf("leak: active %d, perIP %v", l.Active(), l.perIP)
	}
}

func TestZeroLimiterAdmitsAll(t *testing.T) {
	var l Limiter
	ip := netip.MustParseAddr("::1")
	for i := 0; i < 1000; i++ {
		if !l.Acquire(ip) {
			t.Fatal("refused")
		}
	}
}

func TestConcurrent(t *testing.T) {
	l := &Limiter{Max: 50, PerIP: 10}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		ip := netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				if l.Acquire(ip) {
					l.Release(ip)
				}
			}
		}()
	}
	wg.Wait()
	if l.Active() != 0 {
		t.Fatal(l.Active())
	}
}

// TestIPv6Prefix: IPv6 clients are counted per /64 by default, so one
// subscriber's network cannot take more slots by using more addresses.
func TestIPv6Prefix(t *testing.T) {
	a, b := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")
	other := netip.MustParseAddr("2001:db8:1:3::1")
	l := &Limiter{PerIP: 1}
	if !l.Acquire(a) {
		t.Fatal("first refused")
	}
	if l.Acquire(b) {
		t.Fatal("second address of the same /64 admitted over PerIP")
	}
	if !l.Acquire(other) {
		t.Fatal("another /64 refused")
	}
	l.Release(a)
	l.Release(other)
	if len(l.perIP) != 0 {
		t.Fatalf("leak: %v", l.perIP)
	}

	whole := &Limiter{PerIP: 1, IPv6PrefixLen: 128}
	if !whole.Acquire(a) || !whole.Acquire(b) {
		t.Fatal("IPv6PrefixLen 128 still groups addresses")
	}
	v4 := &Limiter{PerIP: 1, IPv6PrefixLen: 8}
	if !v4.Acquire(netip.MustParseAddr("192.0.2.1")) || !v4.Acquire(netip.MustParseAddr("192.0.2.2")) {
		t.Fatal("the IPv6 prefix length applied to IPv4")
	}
}

// TestExempt: exempt addresses are not counted per address, but still
// towards Max.
func TestExempt(t *testing.T) {
	nat := netip.MustParseAddr("10.1.2.3")
	trusted := netip.MustParsePrefix("10.0.0.0/8")
	l := &Limiter{Max: 3, PerIP: 1, Exempt: trusted.Contains}
	for i := 0; i < 3; i++ {
		if !l.Acquire(nat) {
			t.Fatalf("exempt client refused at %d", i)
		}
	}
	if l.Acquire(nat) {
		t.Fatal("exempt client admitted over Max")
	}
	for i := 0; i < 3; i++ {
		l.Release(nat)
	}
	if l.Active() != 0 || len(l.perIP) != 0 {
		t.Fatalf("leak: active %d, perIP %v", l.Active(), l.perIP)
	}
}
