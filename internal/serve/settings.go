package serve

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Pick returns v when positive, def when v is 0, and 0 (none) when v is
// negative: the meaning of every limit field of the servers.
func Pick[T ~int | ~int64](v, def T) T {
	switch {
	case v > 0:
		return v
	case v < 0:
		return 0
	}
	return def
}

// Limits are a server's admission limits, resolved (0 means none).
type Limits struct {
	MaxConns      int // connections over TCP (or any non-unix listener)
	MaxConnsPerIP int // per client address (or IPv6 network)
	MaxUnixConns  int // connections on unix-domain sockets, a budget of their own
	IPv6PrefixLen int // leading bits of an IPv6 address counted as one client
	// Exempt, when set, names addresses that count towards MaxConns only,
	// never towards MaxConnsPerIP (trusted networks behind one NAT).
	Exempt func(netip.Addr) bool
}

// Settings are a server's connection fields as its user set them: 0 means
// the default, negative means none.
type Settings struct {
	MaxConns, MaxConnsPerIP, MaxUnixConns, IPv6PrefixLen int
	Exempt                                               func(netip.Addr) bool
	ReadTimeout, WriteTimeout                            time.Duration
	SessionTimeout, FirstTimeout                         time.Duration
	MinDataRate                                          int64
}

// Limits resolves the admission limits, with the server's own defaults for
// the connection counts.
func (s Settings) Limits(defMax, defPerIP, defUnix int) Limits {
	v6 := s.IPv6PrefixLen
	if v6 == 0 {
		v6 = DefaultIPv6PrefixLen
	}
	return Limits{
		MaxConns:      Pick(s.MaxConns, defMax),
		MaxConnsPerIP: Pick(s.MaxConnsPerIP, defPerIP),
		MaxUnixConns:  Pick(s.MaxUnixConns, defUnix),
		IPv6PrefixLen: v6,
		Exempt:        s.Exempt,
	}
}

// Timing resolves the clocks of a connection that starts at start.
func (s Settings) Timing(start time.Time) Timing {
	t := Timing{
		ReadTimeout:  Pick(s.ReadTimeout, DefaultReadTimeout),
		WriteTimeout: Pick(s.WriteTimeout, DefaultWriteTimeout),
		MinRate:      Pick(s.MinDataRate, DefaultMinDataRate),
		RateWindow:   DefaultRateWindow,
	}
	if d := Pick(s.SessionTimeout, DefaultSessionTimeout); d > 0 {
		t.End = start.Add(d)
	}
	if d := Pick(s.FirstTimeout, DefaultFirstTimeout); d > 0 {
		t.First = start.Add(d)
	}
	return t
}

// Listener describes how Serve answers on one listener.
type Listener struct {
	// Closed is what Serve returns after Shutdown or Close (the server's
	// ErrServerClosed); nil means ErrClosed.
	Closed error
	// Limits are the admission limits; those of the first Serve apply to
	// every listener of the Core.
	Limits Limits
	// Serve serves one admitted connection; the connection is closed and
	// untracked when it returns.
	Serve func(t *Conn, c net.Conn)
	// Uncounted, when set, names connections that are served without a
	// slot: the QMQP server's clients off its allow list, whose session is
	// one refusal and must not be answered as over a limit instead.
	Uncounted func(c net.Conn) bool
	// Refusal is the whole reply to a connection over a limit.
	Refusal []byte
	// ImplicitTLS says every connection starts with a TLS handshake under
	// TLS (which must then be set): the refusal goes out after one too.
	ImplicitTLS bool
	TLS         *tls.Config
	// Log receives one line per refusal and accept error.
	Log *slog.Logger
	// OnRefuse, when set, is called with "limit" for each connection
	// refused; it must not block.
	OnRefuse func(reason string)
}
