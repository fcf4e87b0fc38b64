package qmtp

import (
	"bufio"
	"context"
	"crypto/tls"
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
	"github.com/qmgate/qmgate/netstring"
)

// Defaults for the Server's zero-valued fields, and fixed bounds.
const (
	// DefaultPort is QMTP's TCP port [QMTP §7]. QMTPS has no registered
	// port; the package never assumes one.
	DefaultPort = 209

	// DefaultMaxMessageBytes is the message size limit (qmail's databytes),
	// counted as stored: after CR-mode conversion, without the Received line.
	DefaultMaxMessageBytes = 50 << 20
	// DefaultMaxRecipients is the number of well-formed recipients per
	// package handed to the Handler; it is Postfix's smtpd_recipient_limit.
	// Further recipients get a temporary failure (#4.5.3) and the client
	// sends them again in a later package.
	DefaultMaxRecipients = 1000
	// DefaultReadTimeout and DefaultWriteTimeout bound each network read or
	// write (Postfix's 300 s; qmail has none, PROTOCOLS.md 8.16).
	DefaultReadTimeout  = 5 * time.Minute
	DefaultWriteTimeout = 5 * time.Minute
	// DefaultSessionTimeout caps a whole connection, as qmail-qmtpd's
	// alarm(3600) and the QMTP spec's "at most 1 hour" do.
	DefaultSessionTimeout = time.Hour
	// DefaultMaxConns and DefaultMaxConnsPerIP bound the connections Serve
	// holds at once, overall and per client IP address.
	DefaultMaxConns      = 500
	DefaultMaxConnsPerIP = 50

	// MaxMessageNetstring is the largest declared message length the
	// server will read past, whatever MaxMessageBytes says (unless that is
	// larger); a longer declaration closes the connection. qmail's getlen
	// stops near 2·10^9 too.
	MaxMessageNetstring = 2 << 30
	// MaxSenderNetstring bounds the sender netstring. A sender of
	// mail.MaxAddressLen bytes or more is skipped and refused, as qmail
	// does; one longer than this closes the connection.
	MaxSenderNetstring = 64 << 10
	// recipientOverhead is the framing of one inner recipient netstring at
	// most: "999:" and ",". The recipient list's outer netstring may hold
	// MaxRecipients maximal well-formed recipients and no more.
	recipientOverhead = 5
)

// Per-session buffers: the reader's size sets how many pipelined packages
// one read can bring in (and so how often replies are flushed); replies are
// small, and a full writer buffer simply flushes early.
const (
	readBufferSize  = 32 << 10
	writeBufferSize = 4 << 10
)

// ErrServerClosed is returned by Serve, ServeTLS and ServeConn after
// Shutdown or Close.
var ErrServerClosed = errors.New("qmtp: server closed")

// Handler serves one QMTP package. See the package documentation for the
// contract.
type Handler interface {
	ServeQMTP(ctx context.Context, req *Request) []mail.Status
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) []mail.Status

// ServeQMTP calls f(ctx, req).
func (f HandlerFunc) ServeQMTP(ctx context.Context, req *Request) []mail.Status {
	return f(ctx, req)
}

// Server is a QMTP server. The zero value is usable: every zero field means
// its documented default, and a nil Handler answers every recipient with a
// temporary failure. Fields must not change once serving has started.
type Server struct {
	// Handler receives each package. Nil: every recipient gets a temporary
	// failure.
	Handler Handler

	// Hostname is this server's name in the "by" part of the Received line
	// when ConnInfo.LocalHost is empty. Empty: the local IP address.
	Hostname string

	// MaxMessageBytes is the size limit of a message as stored (after
	// CR-mode conversion, without the added Received line). 0 means
	// DefaultMaxMessageBytes; negative means no limit. A message over it
	// gets mail.StatusTooBig for every recipient.
	MaxMessageBytes int64
	// MaxRecipients is how many well-formed recipients of one package reach
	// the Handler; further ones get a temporary failure. 0 (or negative)
	// means DefaultMaxRecipients. It also bounds the recipient list's
	// netstring to MaxRecipients*(mail.MaxAddressLen+5) bytes; a longer list
	// closes the connection.
	MaxRecipients int
	// MaxHops is the loop limit: a message whose header holds this many
	// Received: and Delivered-To: lines gets mail.StatusTooManyHops. 0 means
	// mail.DefaultMaxHops (100); negative turns hop counting off. qmail's
	// QMTP server has no hop counting (PROTOCOLS.md 8.12).
	MaxHops int

	// ReadTimeout and WriteTimeout bound each network read and write. 0
	// means the defaults (5 minutes); negative means none. They apply only
	// to connections that support deadlines (net.Conn).
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// SessionTimeout caps a connection's whole life. 0 means 1 hour;
	// negative means none.
	SessionTimeout time.Duration

	// MaxConns and MaxConnsPerIP bound the connections Serve and ServeTLS
	// hold at once. 0 means the defaults (500 and 50); negative means no
	// limit. A connection over a limit gets one "Z…(#4.3.2)" reply and is
	// closed; the client treats it as a temporary failure. ServeConn is not
	// counted: its caller (tcpserver, say) does its own limiting.
	MaxConns      int
	MaxConnsPerIP int

	// TLSConfig is used by ServeTLS for implicit-TLS (QMTPS) listeners.
	TLSConfig *tls.Config

	// ErrorLog receives one line per notable event (handler panics, protocol
	// errors, limit rejections). Nil means slog.Default().
	ErrorLog *slog.Logger

	// ConnContext, if set, is called once per connection after the TLS
	// handshake and before the first package. It may fill fields of info
	// (RemoteHost, LocalHost, RelayClient, …) and return the context the
	// Handler gets for this connection's packages (nil keeps ctx). A
	// non-nil error closes the connection without a reply.
	ConnContext func(ctx context.Context, info *mail.ConnInfo) (context.Context, error)

	// OnRefuse, when set, is called for each connection refused before it
	// is served: reason "limit" for one over MaxConns or MaxConnsPerIP.
	// It must not block (the accept loop calls it).
	OnRefuse func(reason string)

	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	conns      map[*trackedConn]struct{}
	lim        connlimit.Limiter // connections from Serve: MaxConns, MaxConnsPerIP
	limOnce    sync.Once
	shutting   atomic.Bool   // set under mu; read without it on hot paths
	drained    chan struct{} // closed when conns empties after Shutdown
	drainedSet bool
	rejecting  atomic.Int32
	workers    workers.Pool // goroutines reused across connections

	now func() time.Time // for tests; nil means time.Now
}

// trackedConn is one connection the server may have to interrupt.
type trackedConn struct {
	closer  io.Closer // nil if the stream cannot be closed
	cancel  context.CancelFunc
	ip      netip.Addr
	counted bool
	// idle: between packages with nothing buffered, so Shutdown may close
	// it. Paired with Server.shutting (both sequentially consistent
	// atomics), either the session sees shutting or Shutdown sees idle.
	idle atomic.Bool
}

func (s *Server) logger() *slog.Logger {
	if s.ErrorLog != nil {
		return s.ErrorLog
	}
	return slog.Default()
}

func (s *Server) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

func pick[T ~int | ~int64](v, def T) T {
	switch {
	case v > 0:
		return v
	case v < 0:
		return 0
	}
	return def
}

func (s *Server) maxMessageBytes() int64 { return pick(s.MaxMessageBytes, DefaultMaxMessageBytes) }
func (s *Server) maxHops() int           { return pick(s.MaxHops, mail.DefaultMaxHops) }
func (s *Server) maxRecipients() int {
	if s.MaxRecipients > 0 {
		return s.MaxRecipients
	}
	return DefaultMaxRecipients
}
func (s *Server) readTimeout() time.Duration  { return pick(s.ReadTimeout, DefaultReadTimeout) }
func (s *Server) writeTimeout() time.Duration { return pick(s.WriteTimeout, DefaultWriteTimeout) }
func (s *Server) sessionTimeout() time.Duration {
	return pick(s.SessionTimeout, DefaultSessionTimeout)
}

// Serve accepts connections on l and serves QMTP on each in its own
// goroutine. It returns ErrServerClosed after Shutdown or Close, or the
// listener's error.
func (s *Server) Serve(l net.Listener) error { return s.serve(l, false) }

// ServeTLS is Serve for implicit-TLS (QMTPS) listeners: each connection
// starts with a TLS handshake using TLSConfig, and the Received line says
// "with QMTPS".
func (s *Server) ServeTLS(l net.Listener) error {
	if s.TLSConfig == nil {
		return errors.New("qmtp: ServeTLS needs Server.TLSConfig")
	}
	return s.serve(l, true)
}

func (s *Server) serve(l net.Listener, useTLS bool) error {
	if !s.trackListener(l, true) {
		return ErrServerClosed
	}
	defer s.trackListener(l, false)
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isShutting() {
				return ErrServerClosed
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				// Out of descriptors and the like: back off as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logger().Warn("qmtp: accept", "err", err, "retry", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		t, ok := s.admit(c)
		if !ok {
			s.reject(c, useTLS)
			continue
		}
		s.workers.Go(func() { s.serveNet(t, c, useTLS) })
	}
}

func (s *Server) trackListener(l net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.listeners, l)
		return true
	}
	if s.shutting.Load() {
		return false
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
	}
	s.listeners[l] = struct{}{}
	return true
}

// admit registers an accepted connection unless it is over a limit.
func (s *Server) admit(c net.Conn) (*trackedConn, bool) {
	ip := addrIP(c.RemoteAddr())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return nil, false
	}
	s.limOnce.Do(func() {
		s.lim.Max = pick(s.MaxConns, DefaultMaxConns)
		s.lim.PerIP = pick(s.MaxConnsPerIP, DefaultMaxConnsPerIP)
	})
	if !s.lim.Acquire(ip) {
		return nil, false
	}
	t := &trackedConn{closer: c, ip: ip, counted: true}
	s.addLocked(t)
	return t, true
}

// track registers a connection that is not counted against MaxConns.
func (s *Server) track(closer io.Closer) (*trackedConn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return nil, false
	}
	t := &trackedConn{closer: closer}
	s.addLocked(t)
	return t, true
}

func (s *Server) addLocked(t *trackedConn) {
	if s.conns == nil {
		s.conns = make(map[*trackedConn]struct{})
	}
	s.conns[t] = struct{}{}
}

func (s *Server) untrack(t *trackedConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, t)
	if t.counted {
		s.lim.Release(t.ip)
	}
	if s.shutting.Load() && len(s.conns) == 0 && s.drained != nil && !s.drainedSet {
		s.drainedSet = true
		close(s.drained)
	}
}

// setIdle marks a session as between packages (Shutdown may close it then)
// or busy. It reports false once the server is shutting down: the session
// must end.
func (s *Server) setIdle(t *trackedConn, idle bool) bool {
	t.idle.Store(idle)
	return !s.shutting.Load()
}

func (s *Server) isShutting() bool { return s.shutting.Load() }

// maxRejecting bounds the goroutines that answer connections over the limit;
// beyond it such connections are closed without a word.
const maxRejecting = 64

// rejectTimeout bounds the whole exchange with a connection over the limit.
const rejectTimeout = 5 * time.Second

// reject answers a connection over a limit with one temporary failure and
// closes it gracefully, so the reply is not lost to a reset.
func (s *Server) reject(c net.Conn, useTLS bool) {
	s.logger().Info("qmtp: too many connections", "client", c.RemoteAddr().String())
	if s.OnRefuse != nil {
		s.OnRefuse("limit")
	}
	if s.rejecting.Add(1) > maxRejecting {
		s.rejecting.Add(-1)
		c.Close()
		return
	}
	t, ok := s.track(c)
	if !ok {
		s.rejecting.Add(-1)
		c.Close()
		return
	}
	go func() {
		defer s.rejecting.Add(-1)
		defer s.untrack(t)
		defer c.Close()
		c.SetDeadline(time.Now().Add(rejectTimeout))
		var rw net.Conn = c
		if useTLS {
			tc := tls.Server(c, s.TLSConfig)
			if tc.Handshake() != nil {
				return
			}
			rw = tc
		}
		if _, err := rw.Write(netstring.Append(nil, mail.StatusTooManyConns.Reply())); err != nil {
			return
		}
		// Half-close and read until the client closes: closing with its
		// package unread would send a reset that can destroy our reply.
		if cw, ok := rw.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			io.Copy(io.Discard, io.LimitReader(rw, 1<<20))
		}
	}()
}

func (s *Server) serveNet(t *trackedConn, c net.Conn, useTLS bool) {
	defer s.untrack(t)
	defer c.Close()
	info := &mail.ConnInfo{Proto: "QMTP", RemoteAddr: c.RemoteAddr(), LocalAddr: c.LocalAddr()}
	var rw net.Conn = c
	if useTLS {
		rw = tls.Server(c, s.TLSConfig)
		info.Proto = "QMTPS"
	}
	s.serveSession(context.Background(), t, rw, info)
}

// ServeConn serves one QMTP session on rw until the client closes it, an
// error, Shutdown or Close. It is the entry point for a stream someone else
// accepted: a net.Conn, or stdin/stdout under tcpserver or inetd.
//
// info describes the connection (for tcpserver, built from TCPREMOTEIP,
// TCPREMOTEHOST, TCPREMOTEINFO, TCPLOCALHOST and TCPLOCALIP); nil builds one
// from rw's addresses if rw is a net.Conn. An empty Proto becomes "QMTP", or
// "QMTPS" if rw is a *tls.Conn (whose handshake ServeConn then performs).
//
// Deadlines apply only if rw has SetReadDeadline/SetWriteDeadline that work
// (a net.Conn does; for a socket on stdin use net.FileConn(os.Stdin)). Without
// them a stalled client holds the session until the caller stops it.
// ServeConn does not close rw when the session ends, but Close, Shutdown
// (between packages) and the cancellation of ctx do close it if it is an
// io.Closer, since that is the only way to interrupt a blocked read.
//
// It returns nil when the client ended the session cleanly, ErrServerClosed
// after Shutdown or Close, and otherwise the error that ended the session.
// ServeConn is not counted against MaxConns.
func (s *Server) ServeConn(ctx context.Context, rw io.ReadWriter, info *mail.ConnInfo) error {
	if info == nil {
		info = &mail.ConnInfo{}
		if nc, ok := rw.(net.Conn); ok {
			info.RemoteAddr, info.LocalAddr = nc.RemoteAddr(), nc.LocalAddr()
		}
	}
	if info.Proto == "" {
		info.Proto = "QMTP"
		if _, ok := rw.(*tls.Conn); ok {
			info.Proto = "QMTPS"
		}
	}
	closer, _ := rw.(io.Closer)
	t, ok := s.track(closer)
	if !ok {
		return ErrServerClosed
	}
	defer s.untrack(t)
	return s.serveSession(ctx, t, rw, info)
}

// Shutdown stops the server gracefully: it closes the listeners, closes the
// sessions that sit between packages, lets the others finish the package
// they are reading (and reply to it), then returns once every session has
// ended. If ctx ends first it returns ctx.Err(); call Close then.
func (s *Server) Shutdown(ctx context.Context) error {
	defer s.workers.Close() // no goroutine left idle behind a stopped server
	s.mu.Lock()
	s.shutting.Store(true)
	for l := range s.listeners {
		l.Close()
	}
	for t := range s.conns {
		if t.idle.Load() && t.closer != nil {
			t.closer.Close()
		}
	}
	if len(s.conns) == 0 {
		s.mu.Unlock()
		return nil
	}
	if s.drained == nil {
		s.drained = make(chan struct{})
	}
	ch := s.drained
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the server at once: it closes the listeners and every
// connection and cancels the handlers' contexts. Packages in progress get no
// reply (the client counts that as a temporary failure). It does not wait
// for the handlers to return.
func (s *Server) Close() error {
	defer s.workers.Close() // no goroutine left idle behind a stopped server
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutting.Store(true)
	var err error
	for l := range s.listeners {
		if e := l.Close(); e != nil && err == nil && !errors.Is(e, net.ErrClosed) {
			err = e
		}
	}
	for t := range s.conns {
		if t.cancel != nil {
			t.cancel()
		}
		if t.closer != nil {
			t.closer.Close()
		}
	}
	return err
}

// serveSession runs the packages of one connection.
func (s *Server) serveSession(ctx context.Context, t *trackedConn, rw io.ReadWriter, info *mail.ConnInfo) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	t.cancel = cancel
	s.mu.Unlock()
	if t.closer != nil {
		stop := context.AfterFunc(ctx, func() { t.closer.Close() })
		defer stop()
	}

	var end time.Time
	if st := s.sessionTimeout(); st > 0 {
		end = time.Now().Add(st)
	}
	c := newIOConn(rw, s.readTimeout(), s.writeTimeout(), end)
	log := s.logger().With("client", clientName(info), "proto", info.Proto)

	if tc, ok := rw.(*tls.Conn); ok {
		tc.SetDeadline(c.deadline(c.readTimeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			log.Info("qmtp: TLS handshake failed", "err", err)
			return err
		}
		st := tc.ConnectionState()
		info.TLS = &st
	}
	if info.LocalHost == "" {
		info.LocalHost = s.Hostname
	}
	if s.ConnContext != nil {
		cctx, err := s.ConnContext(ctx, info)
		if err != nil {
			log.Info("qmtp: connection refused by ConnContext", "err", err)
			return err
		}
		if cctx != nil {
			ctx = cctx
		}
	}

	bw := bufio.NewWriterSize(c, writeBufferSize)
	c.flush = bw
	br := bufio.NewReaderSize(c, readBufferSize)
	sess := &session{
		srv:      s,
		t:        t,
		ctx:      ctx,
		info:     info,
		br:       br,
		bw:       bw,
		ns:       netstring.NewReader(br),
		log:      log,
		maxBytes: s.maxMessageBytes(),
		maxHops:  s.maxHops(),
		maxRcpts: s.maxRecipients(),
	}
	sess.maxMsgNS = max(int64(MaxMessageNetstring), sess.maxBytes+1)
	sess.maxListNS = int64(sess.maxRcpts) * (mail.MaxAddressLen + recipientOverhead)
	err := sess.run()
	switch {
	case err == nil, errors.Is(err, ErrServerClosed):
	case errors.Is(err, ErrProtocol):
		log.Info("qmtp: protocol error, closing", "err", err)
	default:
		log.Debug("qmtp: session ended", "err", err)
	}
	return err
}

// clientName is the client's address for logs.
func clientName(info *mail.ConnInfo) string {
	if ip := info.RemoteIP(); ip.IsValid() {
		return ip.String()
	}
	if info.RemoteAddr != nil {
		return info.RemoteAddr.String()
	}
	return "unknown"
}

// addrIP returns the IP of a network address, or the zero Addr.
func addrIP(a net.Addr) netip.Addr {
	return (&mail.ConnInfo{RemoteAddr: a}).RemoteIP()
}
