package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/qmgate/qmgate/internal/serve"
	"github.com/qmgate/qmgate/mail"
)

// TLSPolicy says how a Client uses TLS on an smtp:// connection (smtps://
// is TLS from the first byte whatever the policy).
type TLSPolicy int

const (
	// TLSRequired (the zero value, for smarthosts) demands STARTTLS with a
	// verified certificate. A server that does not offer STARTTLS, or whose
	// certificate does not verify, gets nothing: every recipient is a
	// temporary failure, and the message waits in the queue.
	TLSRequired TLSPolicy = iota
	// TLSOpportunistic (for MX delivery) uses STARTTLS when the server
	// offers it, without verifying the certificate (RFC 7435: encryption
	// against passive eavesdroppers; MX certificates rarely match). When
	// the server offers STARTTLS but the handshake fails, the Client
	// connects again and delivers in plaintext, as Postfix's "may" level
	// does: the mail gets through, exactly as it would to a server that
	// never offered TLS. A STARTTLS command the server refuses goes on in
	// plaintext on the same connection.
	TLSOpportunistic
	// TLSNone never uses STARTTLS.
	TLSNone
)

func (p TLSPolicy) String() string {
	switch p {
	case TLSRequired:
		return "required"
	case TLSOpportunistic:
		return "opportunistic"
	case TLSNone:
		return "none"
	}
	return "TLSPolicy(" + strconv.Itoa(int(p)) + ")"
}

// Defaults for the Client's timeouts (each applies when the field is zero).
const (
	// DefaultConnectTimeout bounds the TCP connect, the same for the QMTP,
	// QMQP and SMTP clients (see serve.DefaultConnectTimeout).
	DefaultConnectTimeout = serve.DefaultConnectTimeout
	// DefaultCommandTimeout bounds each reply and each write of the message
	// (RFC 5321 4.5.3.2: 5 minutes for commands, 3 for a data block).
	DefaultCommandTimeout = 5 * time.Minute
	// DefaultDataTimeout bounds the wait for the reply to the final "."
	// (RFC 5321 4.5.3.2.6: 10 minutes).
	DefaultDataTimeout = 10 * time.Minute
)

// Client delivers messages to one SMTP server at a time: a smarthost or an
// MX. Its fields are set before the first Dial and not changed afterwards;
// one Client may Dial many connections concurrently.
type Client struct {
	// TLS is the STARTTLS policy; the zero value is TLSRequired.
	TLS TLSPolicy
	// TLSConfig is the TLS configuration (RootCAs, client certificates).
	// Nil means the system roots. ServerName defaults to the host of the
	// address dialled. Under TLSOpportunistic certificates are not verified.
	TLSConfig *tls.Config

	// Username and Password, when Username is set, authenticate with AUTH
	// PLAIN (or LOGIN when the server offers only that). Credentials are
	// sent only over TLS unless AllowInsecureAuth is set. A server that
	// refuses them makes every recipient a temporary failure: a wrong
	// password is the administrator's to fix, not the sender's.
	Username, Password string
	AllowInsecureAuth  bool
	// Authenticate, when set, runs instead of Username/Password once the
	// session is up (after TLS): its own SASL exchange over gc (OAuth2, with
	// a token refreshed between tries), for the host and port dialled. Its
	// mail.Status (errors.As) is kept, temporary; any other error becomes a
	// temporary authentication failure. Same TLS rule as a password.
	Authenticate func(ctx context.Context, gc *gosmtp.Client, host string, port int) error

	// LocalName is the EHLO name; the system's host name when empty.
	LocalName string

	// ConnectTimeout bounds the TCP connection and the greeting,
	// CommandTimeout each reply and each write, DataTimeout the reply to
	// the end of the message. Zero means the Default; negative, none.
	ConnectTimeout time.Duration
	CommandTimeout time.Duration
	DataTimeout    time.Duration

	// Dialer makes the TCP connections (source address, keep-alive...), as
	// in the QMTP and QMQP clients; nil means a zero net.Dialer.
	Dialer *net.Dialer
	// DialContext, when set, opens the TCP connections instead of Dialer
	// (for proxies and tests).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// ErrorLog receives the Client's log lines; slog.Default() when nil.
	ErrorLog *slog.Logger
}

func (c *Client) logger() *slog.Logger {
	if c.ErrorLog != nil {
		return c.ErrorLog
	}
	return slog.Default()
}

// orHostname returns name, or when it is empty the system's host name
// (localhost when that is unknown too).
func orHostname(name string) string {
	if name != "" {
		return name
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// target is a parsed address to dial.
type target struct {
	host, addr string
	implicit   bool // smtps://
}

// parseTarget accepts "host", "host:port", "smtp://host[:port]" and
// "smtps://host[:port]" (with IPv6 hosts in brackets). The default port is
// 25 for smtp and 465 for smtps.
func parseTarget(s string) (target, error) {
	var t target
	port := "25"
	switch {
	case strings.HasPrefix(s, "smtps://"):
		s, t.implicit, port = s[len("smtps://"):], true, "465"
	case strings.HasPrefix(s, "smtp://"):
		s = s[len("smtp://"):]
	case strings.Contains(s, "://"):
		return t, fmt.Errorf("smtp: unsupported scheme in %q", s)
	}
	s = strings.TrimSuffix(s, "/")
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		host = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	} else {
		port = p
	}
	if host == "" || strings.ContainsAny(host, "/?#@ ") {
		return t, fmt.Errorf("smtp: bad address %q", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return t, fmt.Errorf("smtp: bad port in %q", s)
	}
	t.host = host
	t.addr = net.JoinHostPort(host, port)
	return t, nil
}

// StatusConnectTimedOut is Dial's failure when the TCP connection timed
// out (a filtered port, such as 25 on many networks), as opposed to
// mail.StatusConnectFailed for a refused or unreachable one.
var StatusConnectTimedOut = mail.Status{Class: mail.Temporary, Code: "4.4.1", Text: "timeout connecting to remote host"}

// errHandshake marks a failed TLS handshake after STARTTLS: the case where
// TLSOpportunistic connects again without TLS.
var errHandshake = errors.New("smtp: TLS handshake failed")

// Dial connects to addr ("host[:port]", "smtp://host[:port]" for SMTP with
// STARTTLS per the TLS policy, "smtps://host[:port]" for implicit TLS),
// reads the greeting, says EHLO, negotiates TLS and authenticates. The
// connection can carry many messages (Send), one after the other.
//
// A failure is returned as a mail.Status (use mail.StatusOf): temporary for
// anything that can go away, a refused greeting included.
func (c *Client) Dial(ctx context.Context, addr string) (*Conn, error) {
	t, err := parseTarget(addr)
	if err != nil {
		st := mail.StatusConnectFailed
		st.Text = "bad SMTP address"
		return nil, st
	}
	tryTLS := c.TLS != TLSNone
	cn, err := c.dial(ctx, t, tryTLS)
	if errors.Is(err, errHandshake) && c.TLS == TLSOpportunistic {
		c.logger().Info("smtp STARTTLS failed, delivering without TLS", "host", t.addr, "err", err)
		cn, err = c.dial(ctx, t, false)
	}
	if err != nil {
		var st mail.Status
		if !errors.As(err, &st) {
			st = mail.StatusConnectFailed
		}
		return nil, st
	}
	return cn, nil
}

func (c *Client) dial(ctx context.Context, t target, tryTLS bool) (*Conn, error) {
	connectTimeout := serve.Pick(c.ConnectTimeout, DefaultConnectTimeout)
	dctx := ctx
	if connectTimeout > 0 {
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, connectTimeout)
		defer cancel()
	}
	dial := c.DialContext
	if dial == nil {
		d := c.Dialer
		if d == nil {
			d = &net.Dialer{}
		}
		dial = d.DialContext
	}
	raw, err := dial(dctx, "tcp", t.addr)
	if err != nil {
		if isTimeout(err) || errors.Is(err, context.DeadlineExceeded) {
			c.logger().Info("smtp connect failed", "host", t.addr, "cause", "timeout after "+connectTimeout.String())
			// Compared by the MX transport to count filtered ports.
			return nil, StatusConnectTimedOut
		}
		st := mail.ConnectStatus(err, connectTimeout)
		c.logger().Info("smtp connect failed", "host", t.addr, "cause", st.Text)
		return nil, st
	}
	cc := &clientConn{Conn: raw, writeTimeout: serve.Pick(c.CommandTimeout, DefaultCommandTimeout)}
	// The greeting and the STARTTLS exchange fall under ConnectTimeout too.
	stop := context.AfterFunc(dctx, cc.cancel)
	cn, err := c.setup(ctx, cc, t, tryTLS)
	if !stop() && err == nil {
		// The connect deadline passed just as setup finished.
		cn.gc.Close()
		return nil, statusTimedOut("connecting")
	}
	if err != nil {
		raw.Close()
		return nil, err
	}
	return cn, nil
}

func statusTimedOut(what string) mail.Status {
	st := mail.StatusNoReply
	st.Text = "timeout " + what
	return st
}

// setup runs the session up to the first MAIL.
//
// go-smtp's client has no STARTTLS that keeps our EHLO name and lets us go
// on without TLS (its NewClientStartTLS says "EHLO localhost" and fails
// outright when STARTTLS is missing). So the greeting, the first EHLO and
// STARTTLS are done here with net/textproto; go-smtp takes over after the
// handshake, reading a stand-in greeting and saying EHLO again, as RFC 3207
// requires anyway.
func (c *Client) setup(ctx context.Context, cc *clientConn, t target, tryTLS bool) (*Conn, error) {
	cmdTimeout := serve.Pick(c.CommandTimeout, DefaultCommandTimeout)
	name := orHostname(c.LocalName)
	var nc net.Conn = cc
	var tlsState *tls.ConnectionState

	switch {
	case t.implicit:
		tc := tls.Client(cc, c.tlsConfig(t.host, c.TLS != TLSOpportunistic))
		cc.SetDeadline(deadline(cmdTimeout))
		if err := tc.Handshake(); err != nil {
			st := mail.ConnectStatus(err, cmdTimeout)
			st.Text = "TLS handshake with remote host failed"
			st = st.WithCause(mail.Cause(err, cmdTimeout))
			c.logger().Info("smtp TLS handshake failed", "host", t.addr, "cause", st.Text)
			return nil, st
		}
		cs := tc.ConnectionState()
		tlsState = &cs
		nc = tc
	case tryTLS:
		text := textproto.NewConn(cc)
		cc.SetDeadline(deadline(cmdTimeout))
		if _, msg, err := text.ReadResponse(220); err != nil {
			return nil, greetingStatus(err, msg)
		}
		offered, err := ehloOffersSTARTTLS(text, name)
		if err != nil {
			return nil, err
		}
		switch {
		case offered:
			code, msg, err := 0, "", text.PrintfLine("STARTTLS")
			if err == nil {
				code, msg, err = text.ReadResponse(220)
			}
			if err == nil && text.R.Buffered() > 0 {
				// Plaintext after the 220 would be taken for data from
				// inside TLS by a careless client (CVE-2011-0411); here it
				// is a broken or hostile server.
				err = errors.New("data after STARTTLS reply")
				code = 0
			}
			if err != nil && code == 0 && c.TLS == TLSOpportunistic {
				return nil, fmt.Errorf("%w: %v", errHandshake, err)
			}
			if err != nil {
				if c.TLS == TLSRequired || code == 0 {
					st := replyStatus(code, gosmtp.EnhancedCodeNotSet, msg)
					st.Class, st.Code, st.SMTP = mail.Temporary, "4.7.0", 0
					st.Text = "remote host refused STARTTLS: " + st.Text
					if code == 0 {
						st.Text = "STARTTLS failed: " + err.Error()
					}
					return nil, st
				}
				// Opportunistic: a refused STARTTLS leaves plaintext SMTP.
				nc = &greetedConn{Conn: cc}
				break
			}
			tc := tls.Client(cc, c.tlsConfig(t.host, c.TLS == TLSRequired))
			cc.SetDeadline(deadline(cmdTimeout))
			if err := tc.Handshake(); err != nil {
				c.logger().Info("smtp TLS handshake failed", "host", t.addr, "err", err)
				if c.TLS == TLSOpportunistic {
					return nil, fmt.Errorf("%w: %v", errHandshake, err)
				}
				cause := mail.Cause(err, cmdTimeout)
				if cause == "" {
					cause = "reason unknown"
				}
				st := mail.Status{Class: mail.Temporary, Code: "4.7.5", Text: "TLS handshake with remote host failed"}
				return nil, st.WithCause(cause)
			}
			cs := tc.ConnectionState()
			tlsState = &cs
			nc = &greetedConn{Conn: tc}
		case c.TLS == TLSRequired:
			return nil, mail.Status{Class: mail.Temporary, Code: "4.7.4", Text: "TLS required but remote host does not offer STARTTLS"}
		default:
			nc = &greetedConn{Conn: cc}
		}
	}

	gc := gosmtp.NewClient(nc)
	gc.CommandTimeout = serve.Pick(c.CommandTimeout, DefaultCommandTimeout)
	gc.SubmissionTimeout = serve.Pick(c.DataTimeout, DefaultDataTimeout)
	if err := gc.Hello(name); err != nil {
		return nil, greetingStatus(err, "")
	}
	cn := &Conn{client: c, gc: gc, cc: cc, tls: tlsState, host: t.addr}
	if c.Authenticate == nil && c.Username == "" {
		return cn, nil
	}
	var err error
	switch {
	case tlsState == nil && !c.AllowInsecureAuth:
		err = mail.Status{Class: mail.Temporary, Code: "4.7.0", Text: "not sending credentials without TLS"}
	case c.Authenticate != nil:
		err = cn.authHook(ctx, t)
	default:
		err = cn.auth()
	}
	if err != nil {
		gc.Close()
		return nil, err
	}
	return cn, nil
}

// tlsConfig returns the configuration for a connection to host.
func (c *Client) tlsConfig(host string, verify bool) *tls.Config {
	var cfg *tls.Config
	if c.TLSConfig != nil {
		cfg = c.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if !verify {
		cfg.InsecureSkipVerify = true
	}
	return cfg
}

func deadline(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

// greetingStatus turns a failed greeting or EHLO into a temporary failure:
// even a 554 greeting says nothing about the message (qmail-remote
// does the same).
func greetingStatus(err error, msg string) mail.Status {
	st := clientErrorStatus(err)
	var te *textproto.Error
	if errors.As(err, &te) {
		st = replyStatus(te.Code, gosmtp.EnhancedCodeNotSet, te.Msg)
	}
	if !st.IsAccept() {
		st.Class, st.SMTP = mail.Temporary, 0
		if st.Code != "" {
			st.Code = "4" + st.Code[1:]
		}
		st.Text = "greeting failed: " + st.Text
	}
	return st
}

// ehloOffersSTARTTLS says EHLO and reports whether STARTTLS is among the
// extensions offered, falling back to HELO (and no extensions) when EHLO is
// not understood.
func ehloOffersSTARTTLS(text *textproto.Conn, name string) (bool, error) {
	if err := text.PrintfLine("EHLO %s", name); err != nil {
		return false, greetingStatus(err, "")
	}
	code, msg, err := text.ReadResponse(250)
	if err != nil {
		if code == 500 || code == 502 {
			if err := text.PrintfLine("HELO %s", name); err != nil {
				return false, greetingStatus(err, "")
			}
			if _, _, err := text.ReadResponse(250); err != nil {
				return false, greetingStatus(err, "")
			}
			return false, nil
		}
		return false, greetingStatus(err, msg)
	}
	for _, l := range strings.Split(msg, "\n")[1:] {
		if k, _, _ := strings.Cut(l, " "); strings.EqualFold(k, "STARTTLS") {
			return true, nil
		}
	}
	return false, nil
}

// greetedConn stands in front of a connection on which the greeting was
// already read (before STARTTLS, or by setup's own EHLO), so that go-smtp's
// client, which insists on reading one, finds a greeting.
type greetedConn struct {
	net.Conn
	done bool
}

var standInGreeting = []byte("220 greeting already received\r\n")

func (g *greetedConn) Read(p []byte) (int, error) {
	if !g.done {
		g.done = true
		if len(p) >= len(standInGreeting) {
			return copy(p, standInGreeting), nil
		}
	}
	return g.Conn.Read(p)
}

// clientConn is the raw connection under go-smtp's client (and under TLS):
// every write gets a deadline (go-smtp sets none while the message is
// written), and cancel makes every operation fail at once (the caller's
// context ended).
type clientConn struct {
	net.Conn
	writeTimeout time.Duration
	cancelled    atomic.Bool
}

var errCancelled = errors.New("smtp: delivery cancelled")

func (cc *clientConn) cancel() {
	cc.cancelled.Store(true)
	cc.Conn.SetDeadline(time.Unix(1, 0))
}

func (cc *clientConn) Read(p []byte) (int, error) {
	if cc.cancelled.Load() {
		return 0, errCancelled
	}
	return cc.Conn.Read(p)
}

func (cc *clientConn) Write(p []byte) (int, error) {
	if cc.cancelled.Load() {
		return 0, errCancelled
	}
	if cc.writeTimeout > 0 {
		cc.Conn.SetWriteDeadline(time.Now().Add(cc.writeTimeout))
	}
	return cc.Conn.Write(p)
}

// The deadline setters do nothing once cancelled: the deadline in the past
// that cancel set stays.
func (cc *clientConn) SetDeadline(t time.Time) error { return cc.setDeadline(cc.Conn.SetDeadline, t) }
func (cc *clientConn) SetReadDeadline(t time.Time) error {
	return cc.setDeadline(cc.Conn.SetReadDeadline, t)
}
func (cc *clientConn) SetWriteDeadline(t time.Time) error {
	return cc.setDeadline(cc.Conn.SetWriteDeadline, t)
}

func (cc *clientConn) setDeadline(set func(time.Time) error, t time.Time) error {
	if cc.cancelled.Load() {
		return nil
	}
	return set(t)
}

// auth authenticates with PLAIN, or LOGIN when that is all the server has.
func (cn *Conn) auth() error {
	c := cn.client
	var mech sasl.Client
	switch {
	case cn.gc.SupportsAuth(sasl.Plain):
		mech = sasl.NewPlainClient("", c.Username, c.Password)
	case cn.gc.SupportsAuth(sasl.Login):
		mech = sasl.NewLoginClient(c.Username, c.Password)
	default:
		return mail.Status{Class: mail.Temporary, Code: "4.7.0", Text: "remote host does not offer AUTH PLAIN or LOGIN"}
	}
	if err := cn.gc.Auth(mech); err != nil {
		st := clientErrorStatus(err)
		st.Class, st.SMTP = mail.Temporary, 0
		st.Code = "4.7.0"
		st.Text = "authentication failed: " + st.Text
		return st
	}
	return nil
}

// authHook runs the Client's Authenticate.
func (cn *Conn) authHook(ctx context.Context, t target) error {
	_, p, _ := net.SplitHostPort(t.addr)
	port, _ := strconv.Atoi(p)
	err := cn.client.Authenticate(ctx, cn.gc, t.host, port)
	if err == nil {
		return nil
	}
	var st mail.Status
	if !errors.As(err, &st) {
		st = clientErrorStatus(err)
		st.Text = "authentication failed: " + st.Text
	}
	if !st.IsAccept() {
		st.Class, st.SMTP = mail.Temporary, 0
		if st.Code == "" || st.Code[0] != '4' {
			st.Code = "4.7.0"
		}
	}
	return st
}
