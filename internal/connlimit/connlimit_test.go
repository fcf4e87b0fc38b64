package connlimit

import (
	"net/netip"
	"sync"
	"testing"
)

func TestLimiter(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	l := &Limiter{Max: 3, PerIP: 2}
	if !l.Acquire(a) || !l.Acquire(a) {
		t.Fatal("first two from a refused")
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
