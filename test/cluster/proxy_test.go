//go:build linux

package cluster

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// relayProxy forwards TCP connections from its address to one of its
// targets. Cut makes it a partition: every connection under way is cut
// and new ones are closed at once, until Heal. With proxyHeader it is a
// balancer that speaks the PROXY protocol (version 1) to its targets,
// which it takes in turn, from its own address.
type relayProxy struct {
	addr        string
	targets     []string
	proxyHeader bool
	l           net.Listener
	cut         atomic.Bool
	next        atomic.Uint64
	mu          sync.Mutex
	conns       map[net.Conn]bool
	wg          sync.WaitGroup
}

func newProxy(t *testing.T, addr string, proxyHeader bool, targets ...string) *relayProxy {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &relayProxy{addr: addr, targets: targets, proxyHeader: proxyHeader, l: l, conns: map[net.Conn]bool{}}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		l.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

func (p *relayProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		if p.cut.Load() {
			c.Close()
			continue
		}
		p.wg.Go(func() { p.forward(c) })
	}
}

func (p *relayProxy) track(c net.Conn, on bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		if p.cut.Load() {
			return false
		}
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *relayProxy) forward(c net.Conn) {
	defer c.Close()
	var up net.Conn
	n := int(p.next.Add(1))
	for i := range p.targets {
		target := p.targets[(n+i)%len(p.targets)]
		d := net.Dialer{}
		if p.proxyHeader {
			host, _, _ := net.SplitHostPort(p.addr)
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(host)}
		}
		var err error
		if up, err = d.Dial("tcp", target); err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	if !p.track(c, true) {
		return
	}
	defer p.track(c, false)
	p.track(up, true)
	defer p.track(up, false)
	if p.proxyHeader {
		src := c.RemoteAddr().(*net.TCPAddr)
		dst := up.RemoteAddr().(*net.TCPAddr)
		if _, err := fmt.Fprintf(up, "PROXY TCP4 %s %s %d %d\r\n", src.IP, dst.IP, src.Port, dst.Port); err != nil {
			return
		}
	}
	done := make(chan struct{})
	go func() {
		io.Copy(up, c)
		if tc, ok := up.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		close(done)
	}()
	io.Copy(c, up)
	c.Close()
	<-done
}

// Cut cuts every connection under way and refuses new ones.
func (p *relayProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut.Store(true)
	for c := range p.conns {
		c.Close()
	}
}

// Heal lets connections through again.
func (p *relayProxy) Heal() { p.cut.Store(false) }
