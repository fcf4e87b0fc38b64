package qmqp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/qmgate/qmgate/internal/serve"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/netstring"
)

// Client defaults. The I/O timeout is qmail-qmqpc's (60 s per read and
// write); the connect timeout is the one all three clients share
// (serve.DefaultConnectTimeout; qmail-qmqpc uses 10 s).
const (
	// MaxReplyBytes bounds the reply netstring the client reads. Replies
	// are one human-readable line; Postfix's qmqp-source allows 10240.
	MaxReplyBytes = 10240

	DefaultConnectTimeout       = serve.DefaultConnectTimeout
	DefaultIOTimeout            = 60 * time.Second
	DefaultClientSessionTimeout = time.Hour
)

// Client errors. ConnectError and TransferError carry the details.
var (
	// ErrNoServers: the Client has an empty server list.
	ErrNoServers = errors.New("qmqp: no servers configured")
	// ErrInvalidEnvelope: the envelope can never be accepted (no
	// recipients, or an address of 1000 bytes or more or with a NUL);
	// nothing was sent. The Result's Status is permanent.
	ErrInvalidEnvelope = errors.New("qmqp: invalid envelope")
	// ErrBadReply: the server's reply was not a netstring starting with K,
	// Z or D, or was longer than MaxReplyBytes.
	ErrBadReply = errors.New("qmqp: server did not talk proper QMQP")
	// ErrEarlyAccept: the server said K before the whole request was sent,
	// which cannot be a real acceptance.
	ErrEarlyAccept = errors.New("qmqp: server accepted an incomplete request")
)

// Client sends messages to an ordered list of QMQP servers, the way
// qmail-qmqpc does: the servers are tried in order and the next one only when
// the connection to the current one cannot be made. Once connected, any
// failure is a temporary failure for the message and no other server is
// tried, because the first server may already have queued it (qmail-qmqpc.c
// fails over only when connect fails).
//
// The zero Client has no servers; the other zero fields mean the defaults. A
// Client is safe for concurrent use; it keeps no connections (QMQP carries
// one message per connection).
type Client struct {
	// Servers, in order of preference: "host:port", "[v6addr]:port", a bare
	// host or address (port 628), or "unix:/path/to/socket".
	Servers []string
	// ConnectTimeout bounds each connection attempt (DefaultConnectTimeout
	// when 0). IOTimeout bounds each read and write (DefaultIOTimeout when
	// 0). SessionTimeout caps a whole transfer (DefaultClientSessionTimeout
	// when 0). A negative value means no timeout.
	ConnectTimeout time.Duration
	IOTimeout      time.Duration
	SessionTimeout time.Duration
	// Dialer makes the connections (source address, keep-alive...); nil
	// means a zero net.Dialer. ConnectTimeout applies on top of its own
	// Timeout, if any.
	Dialer *net.Dialer
}

// Result is the outcome of Send.
type Result struct {
	// Status is the server's reply when one was received. Otherwise it is
	// a temporary failure (or, for ErrInvalidEnvelope, a permanent one).
	Status mail.Status
	// Server is the entry of Servers that was connected; empty if none.
	Server string
}

// ConnectError reports that no server could be connected: nothing was sent,
// so the message may be tried elsewhere or later without risk of duplicates.
// qmail-qmqpc exits 72 when the last attempt timed out, 73 otherwise.
type ConnectError struct {
	Attempts []ConnectAttempt
	// ConnectTimeout is the timeout of each attempt, named in the status
	// when it ran out; 0 if none.
	ConnectTimeout time.Duration
}

// Status is mail.StatusConnectFailed with the cause of the last attempt in
// plain words ("connection refused", "no such host", "timeout after 10s").
func (e *ConnectError) Status() mail.Status {
	if len(e.Attempts) == 0 {
		return mail.StatusConnectFailed
	}
	return mail.ConnectStatus(e.Attempts[len(e.Attempts)-1].Err, e.ConnectTimeout)
}

// As lets mail.StatusOf (and errors.As with a *mail.Status) see Status.
func (e *ConnectError) As(target any) bool {
	if p, ok := target.(*mail.Status); ok {
		*p = e.Status()
		return true
	}
	return false
}

// ConnectAttempt is one failed connection attempt.
type ConnectAttempt struct {
	Server string
	Err    error
}

func (e *ConnectError) Error() string {
	var tried []string
	for _, a := range e.Attempts {
		tried = append(tried, a.Server+": "+a.Err.Error())
	}
	if len(tried) == 0 {
		return "qmqp: could not connect to any server"
	}
	return "qmqp: could not connect to any server: " + strings.Join(tried, "; ")
}

// Unwrap returns the attempts' errors.
func (e *ConnectError) Unwrap() []error {
	errs := make([]error, len(e.Attempts))
	for i, a := range e.Attempts {
		errs[i] = a.Err
	}
	return errs
}

// Timeout reports whether the last attempt timed out.
func (e *ConnectError) Timeout() bool {
	return len(e.Attempts) > 0 && isTimeout(e.Attempts[len(e.Attempts)-1].Err)
}

// TransferError reports a failure after the connection to Server was made:
// the message may or may not have been queued there, so it is a temporary
// failure and must not be sent to another server now (qmail-qmqpc exit 74).
type TransferError struct {
	Server string
	Err    error
}

func (e *TransferError) Error() string { return "qmqp: " + e.Server + ": " + e.Err.Error() }
func (e *TransferError) Unwrap() error { return e.Err }

// Send sends one message with a zero Client's defaults to the servers given.
func Send(ctx context.Context, servers []string, env mail.Envelope, body io.Reader, size int64) (Result, error) {
	c := &Client{Servers: servers}
	return c.Send(ctx, env, body, size)
}

// ParseServer turns a server list entry into a network and address for
// net.Dial: "unix:/path" is a unix-domain socket; "host:port" and
// "[v6addr]:port" are TCP; a bare host name or IP address (IPv6 with or
// without brackets, with a zone if link-local) gets port 628.
func ParseServer(s string) (network, address string, err error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if path == "" {
			return "", "", fmt.Errorf("qmqp: server %q: empty socket path", s)
		}
		return "unix", path, nil
	}
	if s == "" {
		return "", "", errors.New("qmqp: empty server name")
	}
	if host, port, err := net.SplitHostPort(s); err == nil {
		if host == "" {
			return "", "", fmt.Errorf("qmqp: server %q: empty host", s)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return "", "", fmt.Errorf("qmqp: server %q: bad port", s)
		}
		return "tcp", s, nil
	}
	host := s
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if strings.ContainsAny(host, "[]/ \t") || (strings.Contains(host, ":") && !isIPv6(host)) {
		return "", "", fmt.Errorf("qmqp: server %q: not host, host:port, [v6]:port or unix:/path", s)
	}
	return "tcp", net.JoinHostPort(host, strconv.Itoa(DefaultPort)), nil
}

func isIPv6(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is6()
}

// Send sends one message: env is the envelope (raw addresses, not
// SMTP-quoted), body yields exactly size bytes with LF line ends. The body is
// streamed, never held in memory.
//
// The error is nil when the server replied, whatever it replied: the
// Result's Status is then the reply (K accept, Z temporary, D permanent).
// Otherwise the Status is a failure and the error says why: *ConnectError
// (no server could be connected; nothing was sent), *TransferError
// (connected to Result.Server, then the transfer or the reply failed; the
// message may have been queued), ErrInvalidEnvelope, ErrNoServers, or an
// error from reading body.
//
// A server that refuses early (Postfix answers D to an unauthorized client
// before reading) may close while the request is still being written; the
// client still reads that reply, and trusts it unless it is K.
func (c *Client) Send(ctx context.Context, env mail.Envelope, body io.Reader, size int64) (Result, error) {
	if st, ok := checkEnvelope(env); !ok {
		return Result{Status: st}, fmt.Errorf("%w: %s", ErrInvalidEnvelope, st.Text)
	}
	if size < 0 {
		return Result{Status: mail.StatusTempFailure}, errors.New("qmqp: message size unknown")
	}
	if len(c.Servers) == 0 {
		return Result{Status: mail.StatusConnectFailed}, ErrNoServers
	}
	dialer := c.Dialer
	if dialer == nil {
		dialer = &net.Dialer{}
	}
	connectTimeout := serve.Pick(c.ConnectTimeout, DefaultConnectTimeout)
	cerr := ConnectError{ConnectTimeout: max(connectTimeout, 0)}
	for _, srv := range c.Servers {
		network, addr, err := ParseServer(srv)
		if err != nil {
			cerr.Attempts = append(cerr.Attempts, ConnectAttempt{srv, err})
			continue
		}
		dctx, cancel := ctx, context.CancelFunc(func() {})
		if connectTimeout > 0 {
			dctx, cancel = context.WithTimeout(ctx, connectTimeout)
		}
		conn, err := dialer.DialContext(dctx, network, addr)
		cancel()
		if err != nil {
			cerr.Attempts = append(cerr.Attempts, ConnectAttempt{srv, err})
			if ctx.Err() != nil {
				break // the caller gave up: try no further server
			}
			continue
		}
		st, err := c.transfer(ctx, conn, env, body, size)
		if err != nil {
			var te *TransferError
			if errors.As(err, &te) {
				te.Server = srv
			}
		}
		return Result{Status: st, Server: srv}, err
	}
	return Result{Status: cerr.Status()}, &cerr
}

// checkEnvelope refuses what no QMQP server accepts: no recipients, or an
// address qmail-qmqpd.c would refuse (1000 bytes or more, or a NUL).
func checkEnvelope(env mail.Envelope) (mail.Status, bool) {
	if len(env.Recipients) == 0 {
		return mail.StatusNoRecipients, false
	}
	if !mail.ValidAddress(env.Sender) {
		return mail.StatusBadAddresses, false
	}
	for _, r := range env.Recipients {
		if !mail.ValidAddress(r) {
			return mail.StatusBadAddresses, false
		}
	}
	return mail.Status{}, true
}

// transfer writes the request on conn and reads the reply.
func (c *Client) transfer(ctx context.Context, conn net.Conn, env mail.Envelope, body io.Reader, size int64) (mail.Status, error) {
	defer conn.Close()
	// Cancelling ctx ends the transfer at once: closing the connection
	// interrupts any read or write in progress.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	ioTimeout := serve.Pick(c.IOTimeout, DefaultIOTimeout)
	var end time.Time
	if d := serve.Pick(c.SessionTimeout, DefaultClientSessionTimeout); d > 0 {
		end = time.Now().Add(d)
	}
	dc := serve.NewIOConn(conn, serve.Timing{ReadTimeout: ioTimeout, WriteTimeout: ioTimeout, End: end})

	werr := writeRequest(dc, env, body, size)
	var re *netstring.ReadError
	if errors.As(werr, &re) {
		werr = fmt.Errorf("qmqp: reading message: %w", werr)
	}
	if re != nil || errors.Is(werr, netstring.ErrShortBody) {
		// Our own side failed; the server saw a truncated request and
		// discards it.
		return mail.StatusTempFailure, werr
	}
	if werr != nil && (ctx.Err() != nil || isTimeout(werr)) {
		return mail.StatusNoReply, &TransferError{Err: werr}
	}
	st, rerr := readReply(dc)
	switch {
	case werr != nil && rerr == nil && st.IsAccept():
		return mail.StatusNoReply, &TransferError{Err: fmt.Errorf("%w (write: %v)", ErrEarlyAccept, werr)}
	case werr != nil && rerr == nil:
		return st, nil // an early refusal: the server's word stands
	case werr != nil:
		return mail.StatusNoReply, &TransferError{Err: werr}
	case errors.Is(rerr, ErrBadReply):
		return mail.StatusBadReply, &TransferError{Err: rerr}
	case rerr != nil:
		return mail.StatusNoReply, &TransferError{Err: rerr}
	}
	return st, nil
}

// writeRequest writes the whole request: the outer netstring around the
// message, the sender and the recipients. The outer length is computed up
// front from the declared size, so the body streams through.
func writeRequest(w *serve.IOConn, env mail.Envelope, body io.Reader, size int64) error {
	outer := netstring.Len(size) + netstring.Len(int64(len(env.Sender)))
	for _, r := range env.Recipients {
		outer += netstring.Len(int64(len(r)))
	}
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(w)
	defer func() {
		bw.Reset(nil)
		writerPool.Put(bw)
	}()
	b := netstring.AppendHeader(make([]byte, 0, 48), outer)
	b = netstring.AppendHeader(b, size)
	if _, err := bw.Write(b); err != nil {
		return err
	}
	if err := netstring.CopyExactly(bw, body, size); err != nil {
		if w.WriteErr != nil {
			return w.WriteErr
		}
		return err
	}
	b = append(b[:0], ',')
	b = netstring.AppendString(b, env.Sender)
	if _, err := bw.Write(b); err != nil {
		return err
	}
	for _, r := range env.Recipients {
		b = netstring.AppendString(b[:0], r)
		if _, err := bw.Write(b); err != nil {
			return err
		}
	}
	if err := bw.WriteByte(','); err != nil {
		return err
	}
	return bw.Flush()
}

// readReply reads and parses the one reply netstring, strictly.
func readReply(r io.Reader) (mail.Status, error) {
	nr := netstring.NewReader(bufio.NewReaderSize(r, 512))
	nr.Strict = true
	data, err := nr.ReadBytes(MaxReplyBytes)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) || isTimeout(err) {
			return mail.StatusNoReply, fmt.Errorf("no reply: %w", err)
		}
		return mail.StatusBadReply, fmt.Errorf("%w: %w", ErrBadReply, err)
	}
	if len(data) == 0 || (data[0] != 'K' && data[0] != 'Z' && data[0] != 'D') {
		return mail.StatusBadReply, fmt.Errorf("%w: reply %q", ErrBadReply, data[:min(len(data), 64)])
	}
	return mail.ParseReply(data), nil
}

// writerPool recycles the clients' write buffers.
var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}
