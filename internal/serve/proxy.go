package serve

import (
	"bufio"
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): a load
// balancer in front of a TCP listener starts each connection with a header
// naming the real client. The header is believed only from the balancer's
// own addresses; anyone else who sends one is refused, so a client cannot
// choose the address that policy, limits, logs and Received lines see.
const (
	// DefaultProxyHeaderTimeout bounds the wait for a trusted balancer's
	// header: a balancer sends it at once, with the connection.
	DefaultProxyHeaderTimeout = 5 * time.Second
	// DefaultProxyPending bounds the headers being read at once; past it
	// the listener stops accepting until one is done.
	DefaultProxyPending = 256
)

// ErrProxyUntrusted is the read error of a connection that sent a PROXY
// header from an address not allowed to.
var ErrProxyUntrusted = errors.New("PROXY header from an address not trusted to send one")

// ProxyPolicy says which peers of a TCP listener may send a PROXY header.
type ProxyPolicy struct {
	// From are the balancers' networks: only connections from them may
	// (and, with Required, must) start with a header.
	From []netip.Prefix
	// Required refuses a connection from a trusted address that sends no
	// header (a balancer that always sends one).
	Required bool
	// HeaderTimeout bounds the wait for the header (0: the default). A
	// trusted peer that sends nothing that long, when Required is false,
	// is served under its own address.
	HeaderTimeout time.Duration
	// MaxPending bounds the headers read at once (0: the default).
	MaxPending int
	Log        *slog.Logger
}

// Trusted reports whether ip may send a PROXY header.
func (p *ProxyPolicy) Trusted(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, n := range p.From {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// NewProxyListener returns a listener that reads the PROXY header of every
// connection from a trusted address before handing the connection out, so
// that admission by client address already sees the real client. The
// headers are read on goroutines of their own: a balancer that is slow to
// send one does not hold up the accept loop.
func NewProxyListener(l net.Listener, p ProxyPolicy) net.Listener {
	if p.HeaderTimeout <= 0 {
		p.HeaderTimeout = DefaultProxyHeaderTimeout
	}
	if p.MaxPending <= 0 {
		p.MaxPending = DefaultProxyPending
	}
	if p.Log == nil {
		p.Log = slog.Default()
	}
	pl := &proxyListener{
		Listener: l,
		p:        p,
		ch:       make(chan accepted),
		done:     make(chan struct{}),
		sem:      make(chan struct{}, p.MaxPending),
		pending:  map[net.Conn]struct{}{},
	}
	pl.wg.Add(1)
	go pl.loop()
	return pl
}

type accepted struct {
	c   net.Conn
	err error
}

type proxyListener struct {
	net.Listener
	p    ProxyPolicy
	ch   chan accepted
	done chan struct{}
	sem  chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu      sync.Mutex
	pending map[net.Conn]struct{}
}

func (pl *proxyListener) Accept() (net.Conn, error) {
	select {
	case a := <-pl.ch:
		return a.c, a.err
	case <-pl.done:
		return nil, net.ErrClosed
	}
}

// Close closes the listener and every connection whose header is still
// being read, and waits for the goroutines that read them.
func (pl *proxyListener) Close() error {
	var err error
	pl.once.Do(func() {
		close(pl.done)
		err = pl.Listener.Close()
		pl.mu.Lock()
		for c := range pl.pending {
			c.Close()
		}
		pl.mu.Unlock()
	})
	pl.wg.Wait()
	return err
}

func (pl *proxyListener) hand(a accepted) bool {
	select {
	case pl.ch <- a:
		return true
	case <-pl.done:
		if a.c != nil {
			a.c.Close()
		}
		return false
	}
}

func (pl *proxyListener) loop() {
	defer pl.wg.Done()
	for {
		c, err := pl.Listener.Accept()
		if err != nil {
			if !pl.hand(accepted{err: err}) || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !pl.p.Trusted(AddrIP(c.RemoteAddr())) {
			if !pl.hand(accepted{c: &guardConn{Conn: c, log: pl.p.Log}}) {
				return
			}
			continue
		}
		select {
		case pl.sem <- struct{}{}:
		case <-pl.done:
			c.Close()
			return
		}
		pl.mu.Lock()
		pl.pending[c] = struct{}{}
		pl.mu.Unlock()
		pl.wg.Add(1)
		go func() {
			defer pl.wg.Done()
			pc := pl.readHeader(c)
			pl.mu.Lock()
			delete(pl.pending, c)
			pl.mu.Unlock()
			<-pl.sem
			if pc != nil {
				pl.hand(accepted{c: pc})
			}
		}()
	}
}

// readHeader reads the header of a connection from a trusted address; it
// returns nil (the connection closed) when the connection is refused.
func (pl *proxyListener) readHeader(c net.Conn) net.Conn {
	peer := addrString(c.RemoteAddr())
	c.SetReadDeadline(time.Now().Add(pl.p.HeaderTimeout))
	br := bufio.NewReader(c)
	h, err := proxyproto.Read(br)
	c.SetReadDeadline(time.Time{})
	pc := &proxyConn{Conn: c, r: br, remote: c.RemoteAddr(), local: c.LocalAddr()}
	switch {
	case err == nil:
		if h.Command.IsProxy() {
			if src, dst, ok := h.TCPAddrs(); ok {
				pc.remote, pc.local = src, dst
			}
		}
		return pc
	case (errors.Is(err, proxyproto.ErrNoProxyProtocol) || isTimeout(err) && br.Buffered() == 0) && !pl.p.Required:
		return pc
	case errors.Is(err, proxyproto.ErrNoProxyProtocol) || isTimeout(err) && br.Buffered() == 0:
		pl.p.Log.Warn("no PROXY header from a balancer that must send one, refused", "balancer", peer)
	default:
		pl.p.Log.Warn("bad PROXY header, refused", "balancer", peer, "err", err)
	}
	c.Close()
	return nil
}

// proxyConn is a connection whose header has been read: its addresses are
// those the header named, and what was read past the header is served
// first.
type proxyConn struct {
	net.Conn
	r             *bufio.Reader // nil once drained
	remote, local net.Addr
}

func (c *proxyConn) Read(p []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(p)
		}
		c.r = nil
	}
	return c.Conn.Read(p)
}

func (c *proxyConn) RemoteAddr() net.Addr { return c.remote }
func (c *proxyConn) LocalAddr() net.Addr  { return c.local }

// guardConn is a connection from an address not trusted to send a PROXY
// header: its first bytes are checked, and a header makes every read fail.
type guardConn struct {
	net.Conn
	log     *slog.Logger
	checked bool
	buf     []byte
	err     error
}

// maybeHeader reports whether b could be the start of a PROXY header, and
// whether it is one for certain.
func maybeHeader(b []byte) (maybe, sure bool) {
	for _, sig := range [][]byte{proxyproto.SIGV1, proxyproto.SIGV2} {
		n := min(len(b), len(sig))
		if bytes.Equal(b[:n], sig[:n]) {
			maybe = true
			sure = sure || n == len(sig)
		}
	}
	return maybe, sure
}

func (g *guardConn) Read(p []byte) (int, error) {
	if !g.checked {
		var b [12]byte
		n := 0
		for {
			m, err := g.Conn.Read(b[n:])
			n += m
			maybe, sure := maybeHeader(b[:n])
			if sure {
				g.log.Warn("PROXY header from an address not trusted to send one, refused", "client", addrString(g.Conn.RemoteAddr()))
				g.err = ErrProxyUntrusted
				g.checked = true
				break
			}
			if !maybe || err != nil || n == len(b) {
				g.buf = append([]byte(nil), b[:n]...)
				g.err = err
				g.checked = true
				break
			}
		}
	}
	if g.err == ErrProxyUntrusted {
		return 0, g.err
	}
	if len(g.buf) > 0 {
		n := copy(p, g.buf)
		g.buf = g.buf[n:]
		return n, nil
	}
	if g.err != nil {
		err := g.err
		g.err = nil
		return 0, err
	}
	return g.Conn.Read(p)
}
