// Package serve owns a listener's life for the QMTP, QMQP and SMTP servers:
// the accept loop with backoff, connection admission (in total, per client
// address or IPv6 network, and a separate budget for unix-domain sockets),
// a capped polite refusal of connections over a limit, per-I/O deadlines,
// tracking of the connections, Shutdown and Close. It knows no protocol: a
// server gives it the bytes of its refusal and a function that serves one
// connection.
//
// One set of semantics for all three servers: Serve closes its listener
// when it returns, as net/http's does; in every limit field 0 means the
// default and a negative value means none.
package serve

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qmgate/qmgate/internal/connlimit"
	"github.com/qmgate/qmgate/internal/workers"
	"github.com/qmgate/qmgate/mail"
)

// Defaults shared by the servers and clients.
const (
	// DefaultReadTimeout and DefaultWriteTimeout bound each network read or
	// write (RFC 5321 4.5.3.2 suggests 5 minutes for SMTP commands; qmail
	// has no such bound).
	DefaultReadTimeout  = 5 * time.Minute
	DefaultWriteTimeout = 5 * time.Minute
	// DefaultSessionTimeout caps a whole connection: qmtp.txt and qmqp.txt
	// say a session should last at most an hour, as qmail's alarm(3600).
	DefaultSessionTimeout = time.Hour
	// DefaultFirstTimeout is how long a client has from its connection to
	// its first command or package: a handful of addresses that connect and
	// say nothing must not hold every slot for the session timeout.
	DefaultFirstTimeout = 30 * time.Second
	// DefaultMinDataRate is the slowest a client may send once it is
	// sending, in bytes a second over DefaultRateWindow: low enough for any
	// real link, high enough that a client trickling a byte now and then
	// cannot hold a slot for the session timeout.
	DefaultMinDataRate = 64
	DefaultRateWindow  = 2 * time.Minute
	// DefaultIPv6PrefixLen is how many leading bits of an IPv6 client
	// address are counted as one client: a /64 is one subscriber's network,
	// which hands out addresses freely.
	DefaultIPv6PrefixLen = 64
	// DefaultConnectTimeout bounds a client's TCP connect (QMTP, QMQP and
	// SMTP alike): long enough for the kernel's SYN retries over a lossy
	// path (1, 3, 7, 15 s), short enough to fail over to the next server.
	DefaultConnectTimeout = 30 * time.Second

	// MaxRejecting bounds the goroutines that answer connections over a
	// limit; beyond it such connections are closed without a word.
	MaxRejecting = 64
	// RejectTimeout bounds the whole exchange with a refused connection:
	// a TLS handshake, the one reply, and the drain before the close.
	RejectTimeout = 5 * time.Second
	// lingerBytes bounds what a lingering close reads and discards.
	lingerBytes = 1 << 20
)

// ErrClosed is what Serve returns after Shutdown or Close; each server
// maps it to its own ErrServerClosed.
var ErrClosed = errors.New("server closed")

// ErrNoTLSConfig is what Serve returns for an implicit-TLS listener
// without a TLS configuration.
var ErrNoTLSConfig = errors.New("ServeTLS needs a TLSConfig")

// Core is the state a server keeps about its listeners and connections.
// The zero value is ready to use.
type Core struct {
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*Conn]struct{}
	drained   chan struct{} // closed when conns empties after Shutdown
	shutting  atomic.Bool   // set under mu; read without it
	limOnce   sync.Once
	tcp, unix connlimit.Limiter
	rejecting atomic.Int32
	workers   workers.Pool // goroutines reused across connections
}

// Conn is one tracked connection.
type Conn struct {
	core   *Core
	closer io.Closer // nil if the stream cannot be closed
	cancel context.CancelFunc
	ctx    context.Context
	lim    *connlimit.Limiter // the slot to give back; nil if none
	key    netip.Addr         // what lim counts the connection under
	// idle: between requests with nothing buffered, so Shutdown may close
	// it. Paired with Core.shutting (both sequentially consistent atomics),
	// either the session sees shutting or Shutdown sees idle.
	idle atomic.Bool
	// kick, when set, replaces closing an idle connection at Shutdown.
	kick func()
	once sync.Once
}

// Context returns the connection's context, cancelled by Close and when
// the connection ends.
func (t *Conn) Context() context.Context { return t.ctx }

// SetIdle marks a connection as between requests (Shutdown may close it)
// or busy. It reports false once the server is shutting down: the session
// must end.
func (t *Conn) SetIdle(idle bool) bool {
	t.idle.Store(idle)
	return !t.core.shutting.Load()
}

// OnShutdown sets what Shutdown does to this connection instead of closing
// it when idle (the SMTP server makes an idle session answer 421 itself).
func (t *Conn) OnShutdown(kick func()) {
	t.core.mu.Lock()
	t.kick = kick
	t.core.mu.Unlock()
}

// Release gives back the connection's slot before the connection ends
// (a request fully read and answered no longer needs it). It is safe to
// call more than once.
func (t *Conn) Release() {
	t.once.Do(func() {
		if t.lim != nil {
			t.lim.Leave(t.key)
		}
	})
}

// Shutting reports whether Shutdown or Close has been called.
func (c *Core) Shutting() bool { return c.shutting.Load() }

func (c *Core) limits(l Limits) {
	c.limOnce.Do(func() {
		c.tcp = connlimit.Limiter{Max: l.MaxConns, PerIP: l.MaxConnsPerIP, IPv6PrefixLen: l.IPv6PrefixLen, Exempt: l.Exempt}
		c.unix = connlimit.Limiter{Max: l.MaxUnixConns}
	})
}

// Serve accepts connections on l until Shutdown or Close (then it returns
// h.Closed) or a permanent accept error. It closes l when it returns.
func (c *Core) Serve(l net.Listener, h Listener) error {
	err := c.serve(l, h)
	if err == ErrClosed && h.Closed != nil {
		return h.Closed
	}
	return err
}

func (c *Core) serve(l net.Listener, h Listener) error {
	defer l.Close()
	if h.ImplicitTLS && h.TLS == nil {
		return ErrNoTLSConfig
	}
	if !c.trackListener(l, true) {
		return ErrClosed
	}
	defer c.trackListener(l, false)
	log := h.Log
	if log == nil {
		log = slog.Default()
	}
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if c.shutting.Load() {
				return ErrClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors and the like: back off and retry, as
			// net/http does, rather than stop serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			log.Warn("accept failed", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		var t *Conn
		var ok bool
		if h.Uncounted != nil && h.Uncounted(nc) {
			t, ok = c.Track(context.Background(), nc)
		} else {
			t, ok = c.admit(nc, h.Limits)
		}
		if !ok {
			if c.shutting.Load() {
				nc.Close()
				continue
			}
			log.Info("too many connections, refused", "client", addrString(nc.RemoteAddr()))
			if h.OnRefuse != nil {
				h.OnRefuse("limit")
			}
			c.reject(nc, h)
			continue
		}
		c.workers.Go(func() {
			defer c.Done(t)
			defer nc.Close()
			h.Serve(t, nc)
		})
	}
}

// admit registers an accepted connection unless it is over a limit.
func (c *Core) admit(nc net.Conn, l Limits) (*Conn, bool) {
	c.limits(l)
	lim, ip := &c.tcp, AddrIP(nc.RemoteAddr())
	if IsUnix(nc.LocalAddr()) {
		lim, ip = &c.unix, netip.Addr{}
	}
	if c.shutting.Load() {
		return nil, false
	}
	key, ok := lim.Admit(ip)
	if !ok {
		return nil, false
	}
	t, ok := c.Track(context.Background(), nc)
	if !ok {
		lim.Leave(key)
		return nil, false
	}
	t.lim, t.key = lim, key
	return t, true
}

// Track registers a connection that holds no slot (one a caller such as
// tcpserver accepted and limits itself), so that Shutdown waits for it and
// Close ends it. closer may be nil. It reports false once the server is
// shutting down. Each true must be matched by Done.
func (c *Core) Track(ctx context.Context, closer io.Closer) (*Conn, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shutting.Load() {
		return nil, false
	}
	t := &Conn{core: c, closer: closer}
	t.ctx, t.cancel = context.WithCancel(ctx)
	if c.conns == nil {
		c.conns = make(map[*Conn]struct{})
	}
	c.conns[t] = struct{}{}
	return t, true
}

// Done ends the tracking of t and gives back its slot.
func (c *Core) Done(t *Conn) {
	t.cancel()
	t.Release()
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.conns, t)
	if c.shutting.Load() && len(c.conns) == 0 && c.drained != nil {
		close(c.drained)
		c.drained = nil
	}
}

func (c *Core) trackListener(l net.Listener, add bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !add {
		delete(c.listeners, l)
		return true
	}
	if c.shutting.Load() {
		return false
	}
	if c.listeners == nil {
		c.listeners = make(map[net.Listener]struct{})
	}
	c.listeners[l] = struct{}{}
	return true
}

// Go runs f on a reused goroutine (ServeConn-style entry points do not need
// it; Serve uses it for every connection).
func (c *Core) Go(f func()) { c.workers.Go(f) }

// Shutdown closes the listeners, then every idle connection (or calls its
// OnShutdown function), and waits until every connection has ended or ctx
// is done (then it returns ctx.Err()).
func (c *Core) Shutdown(ctx context.Context) error {
	defer c.workers.Close() // no goroutine left idle behind a stopped server
	c.mu.Lock()
	c.shutting.Store(true)
	for l := range c.listeners {
		l.Close()
	}
	for t := range c.conns {
		switch {
		case t.kick != nil:
			t.kick()
		case t.idle.Load() && t.closer != nil:
			t.closer.Close()
		}
	}
	if len(c.conns) == 0 {
		c.mu.Unlock()
		return nil
	}
	if c.drained == nil {
		c.drained = make(chan struct{})
	}
	ch := c.drained
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the listeners and every connection and cancels their
// contexts at once; it does not wait for the sessions to return.
func (c *Core) Close() error {
	defer c.workers.Close()
	c.mu.Lock()
	c.shutting.Store(true)
	var err error
	for l := range c.listeners {
		if e := l.Close(); e != nil && err == nil && !errors.Is(e, net.ErrClosed) {
			err = e
		}
	}
	conns := make([]*Conn, 0, len(c.conns))
	for t := range c.conns {
		conns = append(conns, t)
	}
	c.mu.Unlock()
	// Outside the lock: a closer may give back a slot or call Done.
	for _, t := range conns {
		t.cancel()
		if t.closer != nil {
			t.closer.Close()
		}
	}
	return err
}

// AddrIP returns the IP of a network address, or the zero Addr.
func AddrIP(a net.Addr) netip.Addr { return (&mail.ConnInfo{RemoteAddr: a}).RemoteIP() }

// IsUnix reports whether a is a unix-domain socket address.
func IsUnix(a net.Addr) bool {
	switch v := a.(type) {
	case *net.UnixAddr:
		return v != nil
	case nil:
		return false
	}
	return a.Network() == "unix"
}

func addrString(a net.Addr) string {
	if a == nil {
		return "unknown"
	}
	return a.String()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
