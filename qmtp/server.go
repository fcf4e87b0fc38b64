package qmtp

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/qmgate/qmgate/internal/serve"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/netstring"
)

// Defaults for the Server's zero-valued fields, and fixed bounds.
const (
	// DefaultPort is QMTP's TCP port (qmtp.txt). QMTPS has no registered
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
	// write (Postfix's 300 s; qmail has none). DefaultSessionTimeout caps a
	// whole connection, as qmail-qmtpd's alarm(3600) and qmtp.txt's "at
	// most 1 hour" do. DefaultFirstTimeout bounds the wait for the first
	// package.
	DefaultReadTimeout    = serve.DefaultReadTimeout
	DefaultWriteTimeout   = serve.DefaultWriteTimeout
	DefaultSessionTimeout = serve.DefaultSessionTimeout
	DefaultFirstTimeout   = serve.DefaultFirstTimeout
	// DefaultMaxConns and DefaultMaxConnsPerIP bound the connections Serve
	// holds at once, overall and per client IP address (or IPv6 /64);
	// DefaultMaxUnixConns those on unix-domain sockets, a budget apart.
	DefaultMaxConns      = 500
	DefaultMaxConnsPerIP = 50
	DefaultMaxUnixConns  = 100

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

// readerPool and writerPool recycle the session buffers: a client that
// sends one message per connection, as qmail-qmtpc does, would otherwise
// cost 36 KiB of garbage per message.
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufferSize) }}
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
	// the Handler; further ones get a temporary failure. 0 means
	// DefaultMaxRecipients; negative means no limit. It also bounds the
	// recipient list's netstring to MaxRecipients*(mail.MaxAddressLen+5)
	// bytes (without a limit, to MaxMessageNetstring); a longer list closes
	// the connection.
	MaxRecipients int
	// MaxHops is the loop limit: a message whose header holds this many
	// Received: and Delivered-To: lines gets mail.StatusTooManyHops. 0 means
	// mail.DefaultMaxHops (100); negative turns hop counting off. qmail's
	// QMTP server has no hop counting (qmail-qmtpd.c leaves it to
	// qmail-send).
	MaxHops int

	// TLSConfig is used by ServeTLS for implicit-TLS (QMTPS) listeners.
	TLSConfig *tls.Config

	// ReadTimeout and WriteTimeout bound each network read and write. 0
	// means the defaults (5 minutes); negative means none. They apply only
	// to connections that support deadlines (net.Conn).
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// SessionTimeout caps a connection's whole life. 0 means 1 hour;
	// negative means none.
	SessionTimeout time.Duration
	// FirstTimeout bounds the time from the connection to the start of its
	// first package (DefaultFirstTimeout when 0; none when negative), so
	// that silent connections do not hold slots for the session timeout.
	FirstTimeout time.Duration
	// MinDataRate is the slowest a client may send a package, in bytes a
	// second measured over two minutes (serve.DefaultMinDataRate, 64, when
	// 0; none when negative). A slower client is disconnected.
	MinDataRate int64

	// MaxConns and MaxConnsPerIP bound the connections Serve and ServeTLS
	// hold at once. 0 means the defaults (500 and 50); negative means no
	// limit. A connection over a limit gets one "Z…(#4.3.2)" reply and is
	// closed; the client treats it as a temporary failure. ServeConn is not
	// counted: its caller (tcpserver, say) does its own limiting.
	MaxConns      int
	MaxConnsPerIP int
	// MaxUnixConns bounds the connections on unix-domain listeners, a
	// budget apart from MaxConns (DefaultMaxUnixConns when 0; none when
	// negative).
	MaxUnixConns int
	// IPv6PrefixLen is how many leading bits of an IPv6 client address
	// count as one client for MaxConnsPerIP: 0 means 64, 128 (or negative)
	// the whole address.
	IPv6PrefixLen int
	// Exempt, when set, names client addresses that MaxConnsPerIP does not
	// apply to (trusted networks); they still count towards MaxConns.
	Exempt func(netip.Addr) bool

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

	core serve.Core

	now func() time.Time // for tests; nil means time.Now
}

func (s *Server) logger() *slog.Logger { return cmp.Or(s.ErrorLog, slog.Default()) }

func (s *Server) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

func (s *Server) maxMessageBytes() int64 {
	return serve.Pick(s.MaxMessageBytes, DefaultMaxMessageBytes)
}
func (s *Server) maxHops() int       { return serve.Pick(s.MaxHops, mail.DefaultMaxHops) }
func (s *Server) maxRecipients() int { return serve.Pick(s.MaxRecipients, DefaultMaxRecipients) }

// Serve accepts connections on l and serves QMTP on each in its own
// goroutine. It returns ErrServerClosed after Shutdown or Close, or the
// listener's error. l is closed on return, as net/http's Serve does.
func (s *Server) Serve(l net.Listener) error { return s.serve(l, false) }

// ServeTLS is Serve for implicit-TLS (QMTPS) listeners: each connection
// starts with a TLS handshake using TLSConfig, and the Received line says
// "with QMTPS".
func (s *Server) ServeTLS(l net.Listener) error { return s.serve(l, true) }

func (s *Server) serve(l net.Listener, useTLS bool) error {
	h := serve.Listener{
		Closed: ErrServerClosed,
		Serve: func(t *serve.Conn, c net.Conn) {
			info := &mail.ConnInfo{Proto: "QMTP", RemoteAddr: c.RemoteAddr(), LocalAddr: c.LocalAddr()}
			var rw net.Conn = c
			if useTLS {
				rw = tls.Server(c, s.TLSConfig)
				info.Proto = "QMTPS"
			}
			s.serveSession(t, rw, info)
		},
		Refusal:     netstring.Append(nil, mail.StatusTooManyConns.Reply()),
		Log:         s.logger().With("proto", "QMTP"),
		OnRefuse:    s.OnRefuse,
		Limits:      s.settings().Limits(DefaultMaxConns, DefaultMaxConnsPerIP, DefaultMaxUnixConns),
		ImplicitTLS: useTLS, TLS: s.TLSConfig,
	}
	return s.core.Serve(l, h)
}

// settings gathers the connection fields for the shared server core.
func (s *Server) settings() serve.Settings {
	return serve.Settings{MaxConns: s.MaxConns, MaxConnsPerIP: s.MaxConnsPerIP, MaxUnixConns: s.MaxUnixConns, IPv6PrefixLen: s.IPv6PrefixLen, Exempt: s.Exempt,
		ReadTimeout: s.ReadTimeout, WriteTimeout: s.WriteTimeout, SessionTimeout: s.SessionTimeout, FirstTimeout: s.FirstTimeout, MinDataRate: s.MinDataRate}
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
	t, ok := s.core.Track(ctx, closer)
	if !ok {
		return ErrServerClosed
	}
	defer s.core.Done(t)
	return s.serveSession(t, rw, info)
}

// Shutdown stops the server gracefully: it closes the listeners, closes the
// sessions that sit between packages, lets the others finish the package
// they are reading (and reply to it), then returns once every session has
// ended. If ctx ends first it returns ctx.Err(); call Close then.
func (s *Server) Shutdown(ctx context.Context) error { return s.core.Shutdown(ctx) }

// Close stops the server at once: it closes the listeners and every
// connection and cancels the handlers' contexts. Packages in progress get no
// reply (the client counts that as a temporary failure). It does not wait
// for the handlers to return.
func (s *Server) Close() error { return s.core.Close() }

// serveSession runs the packages of one connection.
func (s *Server) serveSession(t *serve.Conn, rw io.ReadWriter, info *mail.ConnInfo) error {
	ctx := t.Context()
	if cl, ok := rw.(io.Closer); ok {
		// The only way to interrupt a blocked read.
		stop := context.AfterFunc(ctx, func() { cl.Close() })
		defer stop()
	}
	c := serve.NewIOConn(rw, s.settings().Timing(time.Now()))
	// One spelling of the protocol in every log line (QMTPS, the Received
	// line's word for it over TLS, is tls=true here).
	log := s.logger().With("client", info.Client(), "proto", "QMTP")
	if tc, ok := rw.(*tls.Conn); ok {
		log = log.With("tls", true)
		tc.SetDeadline(c.Deadline(c.ReadTimeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			log.Info("qmtp: TLS handshake failed", "err", err)
			return err
		}
		st := tc.ConnectionState()
		info.TLS = &st
	}
	info.LocalHost = cmp.Or(info.LocalHost, s.Hostname)
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

	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(c)
	c.Flush = bw
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(c)
	defer func() {
		// The session and its handlers are done with both buffers.
		c.Flush = nil
		bw.Reset(nil)
		writerPool.Put(bw)
		br.Reset(nil)
		readerPool.Put(br)
	}()
	sess := &session{
		srv:      s,
		t:        t,
		io:       c,
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
	sess.maxListNS = MaxMessageNetstring
	if sess.maxRcpts > 0 {
		sess.maxListNS = int64(sess.maxRcpts) * (mail.MaxAddressLen + recipientOverhead)
	}
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
