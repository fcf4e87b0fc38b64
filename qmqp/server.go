package qmqp

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qmgate/qmgate/internal/serve"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/netstring"
)

// Defaults for the Server's limits. Each applies when the matching field is
// zero; a negative field means "no limit" where the field says so.
const (
	// DefaultPort is QMQP's TCP port (qmail CHANGES 19980420).
	DefaultPort = 628
	// DefaultMaxMessageBytes bounds the message as the client sent it
	// (without the Received line the server adds): 50 MiB, the project's
	// max_message_bytes default. qmail-qmqpd has no limit at all; Postfix
	// uses 10240000.
	DefaultMaxMessageBytes = 50 << 20
	// DefaultMaxRecipients bounds the recipients of one message. It is high
	// because QMQP carries mailing-list mail (ezmlm hands a whole subscriber
	// chunk to one qmail-queue run with a VERP sender); each address is
	// under mail.MaxAddressLen, so a request holds at most about 10 MB of
	// addresses in memory.
	DefaultMaxRecipients = 10000
	// DefaultReadTimeout and DefaultWriteTimeout bound each read and write,
	// as Postfix's qmqpd_timeout does; DefaultSessionTimeout caps a whole
	// connection, as qmqp.txt asks and qmail-qmqpd's alarm(3600) does;
	// DefaultFirstTimeout bounds the wait for the request to begin.
	DefaultReadTimeout, DefaultWriteTimeout    = serve.DefaultReadTimeout, serve.DefaultWriteTimeout
	DefaultSessionTimeout, DefaultFirstTimeout = serve.DefaultSessionTimeout, serve.DefaultFirstTimeout
	// DefaultMaxConns bounds concurrent TCP connections;
	// DefaultMaxConnsPerIP bounds them per client IP address (or IPv6 /64);
	// DefaultMaxUnixConns bounds those on unix-domain sockets, a budget of
	// their own so that local submitters and network clients cannot lock
	// each other out.
	DefaultMaxConns      = 200
	DefaultMaxConnsPerIP = 50
	DefaultMaxUnixConns  = 100
)

// ErrServerClosed is returned by Serve and ServeConn after Shutdown or Close.
var ErrServerClosed = errors.New("qmqp: server closed")

// ErrMalformed marks a request that broke the QMQP grammar: a bad netstring,
// a missing comma, inner netstrings overrunning the outer one. The server
// closes such a connection without a reply and the message is discarded.
var ErrMalformed = errors.New("qmqp: malformed request")

// A Handler queues one message. ServeQMQP streams req.Body first, then calls
// req.Envelope, and commits the message only if Envelope returned no error;
// its result is the reply. See Request for the exact contract.
type Handler interface {
	ServeQMQP(ctx context.Context, req *Request) mail.Status
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, req *Request) mail.Status

// ServeQMQP calls f(ctx, req).
func (f HandlerFunc) ServeQMQP(ctx context.Context, req *Request) mail.Status { return f(ctx, req) }

// Server is a QMQP server. Its exported fields are set before the first Serve
// or ServeConn and not changed afterwards, except the allow list, which
// SetAllow replaces at any time. The zero Server with a Handler is usable and
// refuses every TCP client: QMQP has no authentication, so access is an
// explicit allow list, as qmail-qmqpd relies on tcpserver rules for.
type Server struct {
	// Handler queues messages. A nil Handler answers every message with a
	// temporary failure.
	Handler Handler

	// Allow lists the client networks that may use the server. Empty means
	// nobody (over TCP). It is checked before anything is read; a refused
	// client gets one D reply naming its address, and the connection
	// closes. SetAllow replaces the list while the server runs.
	//
	// Connections on unix-domain sockets carry no IP address and are always
	// allowed: the socket file's permissions are their access control.
	Allow []netip.Prefix
	// AllowFunc, when set, decides instead of the allow list, for every
	// connection that is not on a unix-domain socket.
	AllowFunc func(info *mail.ConnInfo) bool

	// ConnContext, when set, is called for each allowed connection before
	// the request is read. It may complete the ConnInfo the handler will
	// see (RemoteHost from a verified reverse lookup or TCPREMOTEHOST,
	// LocalHost, RelayClient) and return the context the Handler gets (nil
	// keeps ctx). A non-nil error closes the connection without a reply.
	// The server has already set Proto, the addresses, LocalHost from
	// Hostname, and RelayClient to true: an allowed QMQP client is trusted
	// to relay, as with qmail-qmqpd.
	ConnContext func(ctx context.Context, info *mail.ConnInfo) (context.Context, error)

	// OnRefuse, when set, is called for each connection refused before it
	// is served: reason "limit" for one over MaxConns or MaxConnsPerIP, "access" for a client off the Allow list.
	// It must not block (the accept loop calls it).
	OnRefuse func(reason string)

	// Hostname is the name in the "by" clause of the Received line. Empty
	// means the local IP address, as qmail does without TCPLOCALHOST.
	Hostname string

	// MaxMessageBytes bounds the message (DefaultMaxMessageBytes when 0, no
	// limit when negative). A message over it is read to its end and
	// refused with D (#5.3.4), whatever the handler said; a declared
	// length over it is refused without calling the handler.
	MaxMessageBytes int64
	// MaxRecipients bounds the recipients (DefaultMaxRecipients when 0, no
	// limit when negative). More get D (#5.5.3) after the whole request.
	MaxRecipients int
	// MaxHops is the loop limit: a message whose header has this many
	// Received: and Delivered-To: lines is refused with D (#5.4.6).
	// mail.DefaultMaxHops (100) when 0; no hop counting when negative.
	MaxHops int

	// ReadTimeout and WriteTimeout bound each read and write on the
	// connection (DefaultReadTimeout, DefaultWriteTimeout when 0; none when
	// negative). SessionTimeout caps the whole connection, the handler's
	// time included (DefaultSessionTimeout when 0; none when negative).
	ReadTimeout, WriteTimeout, SessionTimeout time.Duration
	// FirstTimeout bounds the time from the connection to the start of the
	// request (DefaultFirstTimeout when 0; none when negative).
	FirstTimeout time.Duration
	// MinDataRate is the slowest a client may send its request, in bytes a
	// second measured over two minutes (serve.DefaultMinDataRate, 64, when
	// 0; none when negative). A slower client is disconnected.
	MinDataRate int64

	// MaxConns bounds the TCP connections Serve holds at once and
	// MaxConnsPerIP those from one IP address or IPv6 network
	// (DefaultMaxConns, DefaultMaxConnsPerIP when 0; none when negative).
	// A client over a limit gets one Z reply (#4.3.2), sent before
	// anything is read, and the connection closes. ServeConn is not
	// counted: its caller (tcpserver, say) does its own limiting.
	MaxConns, MaxConnsPerIP int
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

	// ErrorLog receives the server's log lines; slog.Default() when nil.
	ErrorLog *slog.Logger

	allow    atomic.Pointer[[]netip.Prefix]
	refusing atomic.Int32 // refusals lingering before close
	core     serve.Core
}

// SetAllow replaces the allow list while the server runs, for a daemon that
// reloads its configuration on SIGHUP. Connections already accepted keep the
// decision made for them. It takes precedence over the Allow field.
func (s *Server) SetAllow(prefixes []netip.Prefix) {
	p := append([]netip.Prefix(nil), prefixes...)
	s.allow.Store(&p)
}

func (s *Server) logger() *slog.Logger { return cmp.Or(s.ErrorLog, slog.Default()) }

func (s *Server) maxMessageBytes() int64 {
	return serve.Pick(s.MaxMessageBytes, DefaultMaxMessageBytes)
}
func (s *Server) maxRecipients() int { return serve.Pick(s.MaxRecipients, DefaultMaxRecipients) }
func (s *Server) maxHops() int       { return serve.Pick(s.MaxHops, mail.DefaultMaxHops) }

// Serve accepts connections on l, which may be a TCP or a unix-domain
// listener, and serves each in its own goroutine. It returns ErrServerClosed
// after Shutdown or Close, or the listener's error. l is closed on return.
func (s *Server) Serve(l net.Listener) error {
	return s.core.Serve(l, serve.Listener{
		Closed: ErrServerClosed,
		Serve: func(t *serve.Conn, c net.Conn) {
			info := &mail.ConnInfo{RemoteAddr: c.RemoteAddr(), LocalAddr: c.LocalAddr()}
			_ = s.serve(t, c, info)
		},
		Uncounted: func(c net.Conn) bool {
			return !s.allowed(&mail.ConnInfo{RemoteAddr: c.RemoteAddr(), LocalAddr: c.LocalAddr()})
		},
		Refusal:  netstring.Append(nil, mail.StatusTooManyConns.Reply()),
		Log:      s.logger().With("proto", "QMQP"),
		OnRefuse: s.OnRefuse,
		Limits:   s.settings().Limits(DefaultMaxConns, DefaultMaxConnsPerIP, DefaultMaxUnixConns),
	})
}

// settings gathers the connection fields for the shared server core.
func (s *Server) settings() serve.Settings {
	return serve.Settings{MaxConns: s.MaxConns, MaxConnsPerIP: s.MaxConnsPerIP, MaxUnixConns: s.MaxUnixConns,
		IPv6PrefixLen: s.IPv6PrefixLen, Exempt: s.Exempt, ReadTimeout: s.ReadTimeout, WriteTimeout: s.WriteTimeout,
		SessionTimeout: s.SessionTimeout, FirstTimeout: s.FirstTimeout, MinDataRate: s.MinDataRate}
}

// ServeConn serves one QMQP session on rw: a connection someone else
// accepted, or stdin/stdout under tcpserver or inetd. info describes the
// connection (under tcpserver, built from TCPREMOTEIP, TCPREMOTEHOST,
// TCPREMOTEINFO, TCPLOCALHOST and TCPLOCALIP); nil builds one from rw's
// addresses if rw is a net.Conn. The access policy applies as for Serve, so
// a caller that has already decided (tcpserver's rules) sets AllowFunc.
//
// Deadlines apply only if rw has SetReadDeadline and SetWriteDeadline (a
// net.Conn does; for a socket on stdin use net.FileConn(os.Stdin)). QMQP
// carries one message per connection and the server closes it after the
// reply, so ServeConn half-closes and closes rw when it can (CloseWrite,
// io.Closer); Close and the cancellation of ctx close it too, the only way to
// interrupt a blocked read. ServeConn is not counted against MaxConns.
//
// It returns nil once a reply was sent (refusals included), an error
// wrapping ErrMalformed when the request broke the grammar (no reply was
// sent), the read or write error that ended the session, or ErrServerClosed.
func (s *Server) ServeConn(ctx context.Context, rw io.ReadWriter, info *mail.ConnInfo) error {
	if info == nil {
		info = &mail.ConnInfo{}
		if nc, ok := rw.(net.Conn); ok {
			info.RemoteAddr, info.LocalAddr = nc.RemoteAddr(), nc.LocalAddr()
		}
	}
	closer, _ := rw.(io.Closer)
	t, ok := s.core.Track(ctx, closer)
	if !ok {
		closeRW(rw)
		return ErrServerClosed
	}
	defer s.core.Done(t)
	return s.serve(t, rw, info)
}

// Shutdown stops the server gracefully: it closes the listeners, lets every
// connection in progress finish its message, and returns when none is left,
// or with ctx's error when ctx ends first (the connections then go on; call
// Close to end them).
func (s *Server) Shutdown(ctx context.Context) error { return s.core.Shutdown(ctx) }

// Close stops the server at once: it closes the listeners and every
// connection and cancels the handlers' contexts. A message in progress is
// not acknowledged, so its client will retry it.
func (s *Server) Close() error { return s.core.Close() }

// isUnix reports whether the connection is on a unix-domain socket.
func isUnix(info *mail.ConnInfo) bool {
	return serve.IsUnix(info.RemoteAddr) || serve.IsUnix(info.LocalAddr)
}

// allowed applies the access policy.
func (s *Server) allowed(info *mail.ConnInfo) bool {
	if isUnix(info) {
		return true
	}
	if s.AllowFunc != nil {
		return s.AllowFunc(info)
	}
	ip := info.RemoteIP()
	if !ip.IsValid() {
		return false
	}
	list := s.Allow
	if p := s.allow.Load(); p != nil {
		list = *p
	}
	for _, pfx := range list {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

// serve runs one session on a tracked connection.
func (s *Server) serve(t *serve.Conn, rw io.ReadWriter, info *mail.ConnInfo) error {
	ctx := t.Context()
	start := time.Now()
	info.Proto = cmp.Or(info.Proto, "QMQP")
	info.LocalHost = cmp.Or(info.LocalHost, s.Hostname)
	timing := s.settings().Timing(start)
	if !timing.End.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, timing.End)
		defer cancel()
	}
	if cl, ok := rw.(io.Closer); ok {
		// The only way to interrupt a blocked read.
		stop := context.AfterFunc(ctx, func() { cl.Close() })
		defer stop()
	}
	c := serve.NewIOConn(rw, timing)
	log := s.logger().With("proto", "QMQP", "client", info.Client())

	// Refusals come before anything is read: an unauthorised client must
	// not get to send a byte more than it already has.
	if !s.allowed(info) {
		s.refused("access")
		st := mail.Perm("5.7.1", "client "+info.Client()+" is not authorized to use this service")
		// The door's refusal line (relay logs the others the same way);
		// no envelope has been read, so it names no sender or recipient.
		log.Info("refused", "reason", "access", "reply", st.SMTPText(), "code", st.EnhancedCode(), "result", st.Outcome())
		return s.refuse(c, rw, st, log)
	}
	release := t.Release

	info.RelayClient = true
	if s.ConnContext != nil {
		cctx, err := s.ConnContext(ctx, info)
		if err != nil {
			log.Info("qmqp connection refused by ConnContext", "err", err)
			closeRW(rw)
			return err
		}
		if cctx != nil {
			ctx = cctx
		}
	}

	req, err := s.readHeader(c, info, start)
	if err != nil {
		s.logReadError(log, err)
		closeRW(rw)
		return err
	}
	var st mail.Status
	if req.tooBig {
		st = mail.StatusTooBig // decided by the declared length: no handler
	} else {
		st = s.callHandler(ctx, req, log)
	}
	req.Envelope() // reads what the handler left, up to the outer comma
	req.release()
	if req.proto != nil {
		s.logReadError(log, req.proto)
		closeRW(rw)
		return req.proto
	}
	var override mail.Status
	if errors.As(req.envErr, &override) {
		st = override
	}
	level := slog.LevelInfo
	if st.IsAccept() {
		level = slog.LevelDebug
	}
	log.Log(context.Background(), level, "qmqp message", "size", req.Size, "rcpts", len(req.env.Recipients), "status", st.SMTPText(), "code", st.EnhancedCode(), "result", st.Outcome(), "delay", time.Since(start))
	return s.reply(c, rw, st, log, release)
}

// maxLingeringRefusals bounds the refused connections that wait for their
// client's close after the reply; beyond it, under a flood, a refused
// connection gets its reply and is closed at once.
const maxLingeringRefusals = 64

func (s *Server) refused(reason string) {
	if s.OnRefuse != nil {
		s.OnRefuse(reason)
	}
}

// refuse sends a refusal before anything was read, and closes.
func (s *Server) refuse(c *serve.IOConn, rw io.ReadWriter, st mail.Status, log *slog.Logger) error {
	if s.refusing.Add(1) > maxLingeringRefusals {
		s.refusing.Add(-1)
		_, err := c.Write(netstring.Append(nil, st.Reply()))
		closeRW(rw)
		return err
	}
	defer s.refusing.Add(-1)
	return s.reply(c, rw, st, log, nil)
}

// reply sends st as the session's one reply and closes the connection.
// release is nil for a refusal sent before the request was read; otherwise
// the request was read to its end, and the connection slot, if any, is
// released before the close: the message is done.
func (s *Server) reply(c *serve.IOConn, rw io.ReadWriter, st mail.Status, log *slog.Logger, release func()) error {
	_, err := c.Write(netstring.Append(nil, st.Reply()))
	if release != nil {
		release()
	}
	if err != nil {
		if isReset(err) {
			log.Debug("qmqp client went away before the reply", "err", err)
		} else {
			log.Info("qmqp reply failed", "err", err)
		}
		closeRW(rw)
		return err
	}
	if release != nil {
		// The request was read through its final comma, so nothing of
		// the client's is left unread and a plain close sends a FIN
		// behind the reply, never a reset (as qmail-qmqpd and Postfix's
		// qmqpd do, which exit after the reply). A lingering close
		// would cost a shutdown, a read and a wake-up per message.
		closeRW(rw)
		return nil
	}
	lingerClose(rw) // a refusal: the client's request is still unread
	return nil
}

// callHandler runs the handler, turning a panic into a temporary failure.
func (s *Server) callHandler(ctx context.Context, req *Request, log *slog.Logger) (st mail.Status) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("qmqp handler panic", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			st = mail.StatusTempFailure
		}
	}()
	if s.Handler == nil {
		return mail.StatusTempFailure
	}
	return s.Handler.ServeQMQP(ctx, req)
}

func (s *Server) logReadError(log *slog.Logger, err error) {
	switch {
	case errors.Is(err, ErrMalformed):
		log.Info("qmqp malformed request, dropped", "err", err)
	case isTimeout(err):
		log.Info("qmqp read timeout, dropped", "err", err)
	default:
		log.Debug("qmqp client went away mid-request", "err", err)
	}
}

// readHeader reads the outer length and the message length and prepares the
// Request whose body streams from the connection.
func (s *Server) readHeader(c *serve.IOConn, info *mail.ConnInfo, now time.Time) (*Request, error) {
	// The outer reader parses the outer length and comma; its first read
	// takes in a small message whole, or the start of a large one, in one
	// system call. The inner reader's buffer does the rest of the
	// buffering, and its reads of whole buffers, like the body's large
	// reads, bypass the outer buffer.
	ob := getReader(c)
	outer := netstring.NewReader(ob)
	outerData, _, err := outer.Next(-1)
	if err != nil {
		putReader(ob)
		return nil, readErr(err)
	}
	c.Started() // the request has begun: FirstTimeout is met
	br := getReader(outerData)
	r := &Request{
		Conn:     info,
		outer:    outer,
		ob:       ob,
		br:       br,
		inner:    netstring.NewReader(br),
		maxRcpts: s.maxRecipients(),
	}
	msg, n, err := r.inner.Next(-1)
	if err == nil {
		err = r.fits(n)
	}
	if err != nil {
		r.release()
		return nil, readErr(err)
	}
	r.Size = n
	r.tooBig = s.maxMessageBytes() > 0 && n > s.maxMessageBytes()
	r.msg = msg
	r.nul = serve.RefuseNUL(msg)
	r.body = mail.NewBodyReader(r.nul, s.maxMessageBytes(), s.maxHops())
	r.Body = &bodyReader{req: r, received: info.Received(now), body: r.body}
	return r, nil
}

// readErr classifies an error from the netstring reader: grammar errors wrap
// ErrMalformed; I/O errors (EOF, reset, timeout) are returned as they are.
func readErr(err error) error {
	if netstring.Malformed(err) || errors.Is(err, netstring.ErrPending) {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return err
}

// readerPool recycles the 16 KiB read buffers of requests (two each: the
// connection's and the request's): at thousands of connections a second
// they would otherwise be most of the garbage.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

func getReader(r io.Reader) *bufio.Reader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readerPool.Put(br)
}
