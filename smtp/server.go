package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/qmgate/qmgate/internal/serve"
	"github.com/qmgate/qmgate/mail"
)

// Well-known ports.
const (
	DefaultPort     = 25  // relay (MX) SMTP, RFC 5321
	SubmissionPort  = 587 // message submission with STARTTLS, RFC 6409
	SubmissionsPort = 465 // message submission over implicit TLS, RFC 8314
)

// Defaults for the Server's limits. Each applies when the matching field is
// zero; a negative field means "no limit".
const (
	// DefaultMaxMessageBytes bounds a message as stored (LF line ends,
	// without the Received line the server adds): 50 MiB, the project's
	// max_message_bytes default.
	DefaultMaxMessageBytes = 50 << 20
	// DefaultMaxRecipients bounds the recipients of one transaction, as
	// Postfix's smtpd_recipient_limit does. More get 452 4.5.3, which tells
	// the client to send them in another transaction.
	DefaultMaxRecipients = 1000
	// DefaultMaxLineLength bounds a command line and, because go-smtp
	// applies one limit to both, a line of DATA. RFC 5321 needs 512 and
	// 1000; real mail has longer lines, which are accepted up to here. A
	// command line holds at most this much memory per connection; a longer
	// line ends the session with 500 5.4.0.
	DefaultMaxLineLength = 64 << 10
	// DefaultReadTimeout and DefaultWriteTimeout bound every single read
	// and write (RFC 5321 4.5.3.2 suggests 5 minutes for commands);
	// DefaultSessionTimeout caps a whole connection; DefaultFirstTimeout
	// bounds the wait for the first HELO or EHLO.
	DefaultReadTimeout, DefaultWriteTimeout    = serve.DefaultReadTimeout, serve.DefaultWriteTimeout
	DefaultSessionTimeout, DefaultFirstTimeout = serve.DefaultSessionTimeout, serve.DefaultFirstTimeout
	// DefaultMaxConns bounds concurrent connections, DefaultMaxConnsPerIP
	// those from one IP address or IPv6 /64 (Postfix's
	// smtpd_client_connection_count_limit is 50 too), DefaultMaxUnixConns
	// those on unix-domain sockets.
	DefaultMaxConns      = 200
	DefaultMaxConnsPerIP = 50
	DefaultMaxUnixConns  = 100
	// DefaultMaxAuthFailures is how many failed AUTH attempts a connection
	// gets; at the last the server answers 421 4.7.0 and closes.
	DefaultMaxAuthFailures = 3
	// DefaultAuthFailureDelay is the pause before each "535 5.7.8" reply,
	// which slows down password guessing (Postfix's smtpd_error_sleep_time
	// is 1s as well).
	DefaultAuthFailureDelay = time.Second
	// DefaultMaxAuthFailuresPerIP is how many failed AUTH attempts one
	// client address (or IPv6 /64) gets within DefaultAuthFailureWindow,
	// across all its connections; after that AUTH is refused without a
	// password check.
	DefaultMaxAuthFailuresPerIP = 10
	DefaultAuthFailureWindow    = 15 * time.Minute
)

// ErrServerClosed is returned by Serve, ServeTLS and ServeConn after
// Shutdown or Close.
var ErrServerClosed = errors.New("smtp: server closed")

// Server is an SMTP server on go-smtp, with qmgate's limits and policy
// hooks. Its exported fields are set before the first Serve and not changed
// afterwards. The zero Server with a Handler is usable: plain SMTP with the
// default limits, no STARTTLS, no AUTH.
//
// One Server serves one kind of listener; a daemon with a relay port (25)
// and a submission port (587, 465) runs two Servers that differ in
// RequireAuth.
type Server struct {
	// Handler decides and commits; nil answers every MAIL with 451.
	Handler Handler

	// Hostname names the server in its greeting and in the "by" clause of
	// the Received line. Empty means the system's host name.
	Hostname string

	// TLSConfig enables STARTTLS on Serve, and is the configuration of
	// ServeTLS (implicit TLS, the "submissions" port 465).
	TLSConfig *tls.Config

	// Auth enables AUTH PLAIN and AUTH LOGIN. Without it AUTH is not
	// offered.
	Auth Authenticator
	// AllowInsecureAuth offers and accepts AUTH on connections without TLS.
	// By default (false) AUTH is offered only after STARTTLS or on an
	// implicit-TLS listener, and refused before with 538 5.7.11, so that no
	// password crosses the network in clear.
	AllowInsecureAuth bool
	// RequireAuth refuses MAIL with 530 5.7.0 until the client has
	// authenticated: the submission listener's setting.
	RequireAuth bool
	// MaxAuthFailures is how many failed attempts a connection gets
	// (DefaultMaxAuthFailures when 0, no limit when negative); the last
	// failure is answered with 421 4.7.0 and the connection closes.
	MaxAuthFailures int
	// AuthFailureDelay pauses before each failure reply
	// (DefaultAuthFailureDelay when 0, none when negative).
	AuthFailureDelay time.Duration
	// MaxAuthChecks bounds the password checks running at once (0: the
	// number of CPUs; negative: no bound); further AUTH attempts wait for
	// a free slot, so a flood of attempts cannot take every core.
	MaxAuthChecks int
	// MaxAuthFailuresPerIP bounds the failed AUTH attempts of one client
	// address (or IPv6 network, see IPv6PrefixLen) within
	// AuthFailureWindow, across connections (DefaultMaxAuthFailuresPerIP
	// when 0; none when negative). Past it, AUTH is answered
	// 421 4.7.0 without a password check and the connection closes.
	MaxAuthFailuresPerIP int
	// AuthFailureWindow is how long failures are counted against an
	// address, and how long a (user, password) pair that just failed is
	// refused again without a check (DefaultAuthFailureWindow when 0).
	AuthFailureWindow time.Duration

	// MaxMessageBytes bounds a message as stored: LF line ends, without
	// the server's Received line (DefaultMaxMessageBytes when 0, no limit
	// when negative). It is advertised as SIZE; a MAIL declaring more gets
	// 552 5.3.4 at once, a longer message is read to its end and refused
	// with 552 5.3.4.
	MaxMessageBytes int64
	// MaxRecipients bounds the recipients of one transaction
	// (DefaultMaxRecipients when 0, no limit when negative); more get
	// 452 4.5.3.
	MaxRecipients int
	// MaxLineLength bounds command lines and lines of DATA
	// (DefaultMaxLineLength when 0, no limit when negative; see
	// DefaultMaxLineLength).
	MaxLineLength int
	// MaxHops is the loop limit: a message whose header has this many
	// Received: and Delivered-To: lines is refused with 554 5.4.6
	// (mail.DefaultMaxHops, 100, when 0; no hop counting when negative).
	MaxHops int

	// ReadTimeout and WriteTimeout bound every single read and write
	// (DefaultReadTimeout, DefaultWriteTimeout when 0; none when negative).
	// SessionTimeout caps a whole connection (DefaultSessionTimeout when 0;
	// none when negative). When a read times out the server answers
	// "421 4.4.2 Idle timeout" (go-smtp's text) and closes.
	ReadTimeout    time.Duration
	WriteTimeout   time.Duration
	SessionTimeout time.Duration
	// FirstTimeout bounds the time from the connection to the client's
	// first HELO or EHLO (DefaultFirstTimeout when 0; none when negative).
	FirstTimeout time.Duration

	// MaxConns bounds concurrent connections and MaxConnsPerIP those from
	// one IP address or IPv6 network (DefaultMaxConns,
	// DefaultMaxConnsPerIP when 0; none when negative). A client over a
	// limit gets "421 4.3.2 too many connections, try again later" before
	// anything is read, and the connection closes.
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
	// MinDataRate is the slowest a client may send, in bytes a second,
	// measured over two minutes from its first byte after each reply
	// (serve.DefaultMinDataRate, 64, when 0; none when negative). A
	// slower client gets 421 4.4.2 and is disconnected.
	MinDataRate int64

	// ConnContext, when set, is called once per connection, at its first
	// HELO or EHLO, to complete the ConnInfo the handler will see:
	// RemoteHost (a verified reverse lookup), RelayClient. The server has
	// set Proto, the addresses and LocalHost; it keeps Helo, TLS and
	// AuthUser up to date itself. It returns the context of the handler's
	// calls (nil keeps ctx); an error answers the greeting with 421 4.3.0
	// and closes the connection. It is the hook of the same name in the
	// QMTP and QMQP servers.
	ConnContext func(ctx context.Context, info *mail.ConnInfo) (context.Context, error)

	// ErrorLog receives the server's log lines; slog.Default() when nil.
	ErrorLog *slog.Logger

	// OnRefuse, when set, is called for each connection refused before it
	// is served: reason "limit" for one over MaxConns or MaxConnsPerIP.
	// It must not block.
	OnRefuse func(reason string)

	core serve.Core
	auth authGuard
	log  atomic.Pointer[taggedLog] // logger's result, made once per ErrorLog
}

// taggedLog is a logger with proto=SMTP, and the ErrorLog it was made from.
type taggedLog struct{ from, tagged *slog.Logger }

// logger is ErrorLog (or slog's default) with proto=SMTP, the one place
// the server's log lines get their protocol. Deriving a logger formats its
// attributes in advance, so the result is kept; it is made again only if
// the logger it came from changes.
func (s *Server) logger() *slog.Logger {
	l := s.ErrorLog
	if l == nil {
		l = slog.Default()
	}
	if t := s.log.Load(); t != nil && t.from == l {
		return t.tagged
	}
	t := &taggedLog{from: l, tagged: l.With("proto", "SMTP")}
	s.log.Store(t)
	return t.tagged
}

func (s *Server) hostname() string { return orHostname(s.Hostname) }

func (s *Server) maxMessageBytes() int64 {
	return serve.Pick(s.MaxMessageBytes, DefaultMaxMessageBytes)
}
func (s *Server) maxHops() int { return serve.Pick(s.MaxHops, mail.DefaultMaxHops) }

// Serve accepts connections on l and serves each in its own goroutine:
// plain SMTP, with STARTTLS when TLSConfig is set. It returns
// ErrServerClosed after Shutdown or Close, or the listener's error. l is
// closed on return.
func (s *Server) Serve(l net.Listener) error { return s.serve(l, false) }

// ServeTLS is Serve for implicit TLS (RFC 8314 "submissions", port 465):
// every connection starts with a TLS handshake under TLSConfig, which must be
// set.
func (s *Server) ServeTLS(l net.Listener) error { return s.serve(l, true) }

// settings gathers the connection fields for the shared server core.
func (s *Server) settings() serve.Settings {
	return serve.Settings{
		MaxConns: s.MaxConns, MaxConnsPerIP: s.MaxConnsPerIP, MaxUnixConns: s.MaxUnixConns, IPv6PrefixLen: s.IPv6PrefixLen,
		Exempt: s.Exempt, ReadTimeout: s.ReadTimeout, WriteTimeout: s.WriteTimeout, SessionTimeout: s.SessionTimeout,
		FirstTimeout: s.FirstTimeout, MinDataRate: s.MinDataRate,
	}
}

func (s *Server) serve(l net.Listener, implicitTLS bool) error {
	h := serve.Listener{
		Closed: ErrServerClosed,
		Serve: func(t *serve.Conn, c net.Conn) {
			s.serveConn(newServerConn(s, c, t), implicitTLS)
		},
		Refusal:     replyLine(mail.StatusTooManyConns),
		Log:         s.logger(),
		OnRefuse:    s.OnRefuse,
		Limits:      s.settings().Limits(DefaultMaxConns, DefaultMaxConnsPerIP, DefaultMaxUnixConns),
		ImplicitTLS: implicitTLS, TLS: s.TLSConfig,
	}
	return s.core.Serve(l, h)
}

// ServeConn serves one plaintext connection in the calling goroutine and
// closes it: for a connection accepted elsewhere, or a program's
// stdin/stdout joined into a net.Conn under tcpserver. STARTTLS is offered
// when TLSConfig is set. info, when not nil, replaces the ConnInfo the
// server would build from the connection's addresses (tcpserver's
// TCPREMOTEIP and friends); ConnContext still runs. ctx bounds the
// handler's calls. No connection limits apply.
func (s *Server) ServeConn(ctx context.Context, c net.Conn, info *mail.ConnInfo) error {
	t, ok := s.core.Track(ctx, c)
	if !ok {
		c.Close()
		return ErrServerClosed
	}
	defer s.core.Done(t)
	sc := newServerConn(s, c, t)
	if info != nil {
		sc.info = *info
		if sc.info.Proto == "" {
			sc.info.Proto = "SMTP"
		}
		if sc.info.LocalHost == "" {
			sc.info.LocalHost = s.Hostname
		}
	}
	s.serveConn(sc, false)
	return nil
}

// serveConn runs go-smtp on one connection. Each connection gets its own
// go-smtp Server value: go-smtp reads its limits from there at every
// command, and the session changes one of them (see session.Mail).
func (s *Server) serveConn(sc *serverConn, implicitTLS bool) {
	e := gosmtp.NewServer(backend{sc: sc})
	e.Domain = s.hostname()
	e.TLSConfig = s.TLSConfig
	e.MaxMessageBytes = s.maxMessageBytes()
	e.MaxRecipients = serve.Pick(s.MaxRecipients, DefaultMaxRecipients)
	e.MaxLineLength = serve.Pick(s.MaxLineLength, DefaultMaxLineLength)
	// The session enforces the TLS requirement itself; go-smtp's own check
	// would keep it from asking the session for its mechanisms, which is
	// how the session learns that the client said EHLO (see AuthMechanisms).
	e.AllowInsecureAuth = true
	e.EnableSMTPUTF8 = true
	// Deadlines are set per read and write by serverConn.
	e.ReadTimeout, e.WriteTimeout = 0, 0
	e.ErrorLog = engineLog{log: s.logger(), client: sc.info.RemoteAddr}
	sc.engine = e

	var nc net.Conn = sc
	if implicitTLS {
		// The server terminates implicit TLS below serverConn, so that
		// it sees the plaintext (plain.go).
		sc.tlsConn = tls.Server(sc.Conn, s.TLSConfig)
		sc.stream = sc.tlsConn
		sc.Conn.SetReadDeadline(sc.tm.Deadline(sc.tm.ReadTimeout))
		sc.info.Proto = "ESMTPS"
	}
	// STARTTLS too is the server's (plain.go): go-smtp would wrap the
	// connection in a TLS of its own, below which nothing can be seen.
	e.TLSConfig = nil
	l := newOneConnListener(nc, sc.done)
	e.Serve(l)
	// Serve returns once the connection is closed; Shutdown waits for
	// go-smtp's connection goroutine to finish as well.
	e.Shutdown(context.Background())
	sc.Close()
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// Shutdown stops the server gracefully: it closes the listeners, ends every
// idle session (the client gets "421 4.4.2" and may come back later), lets
// every open mail transaction finish, and returns when no connection is
// left, or with ctx's error when ctx ends first (call Close then).
func (s *Server) Shutdown(ctx context.Context) error { return s.core.Shutdown(ctx) }

// Close stops the server at once: it closes the listeners and every
// connection and cancels the handlers' contexts. A message in progress is
// not acknowledged, so its client will send it again.
func (s *Server) Close() error { return s.core.Close() }
