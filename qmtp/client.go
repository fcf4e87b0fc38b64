package qmtp

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/qmgate/qmgate/internal/serve"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/netstring"
)

// Client errors. Any error a Send returns leaves the statuses filled in; the
// errors are for logs and for deciding whether the connection can be reused.
var (
	// ErrNoRecipients: a message without recipients is never sent, since
	// qmail-qmtpd would answer nothing and the session would hang.
	ErrNoRecipients = errors.New("qmtp: message has no recipients")
	// ErrBadMessage: Size is negative, or Body is nil with Size > 0.
	ErrBadMessage = errors.New("qmtp: invalid message (size or body)")
	// ErrBody: the message body could not be read, or its length differed
	// from Size. The package was abandoned mid-way (the server discards it)
	// and the connection is no longer usable.
	ErrBody = errors.New("qmtp: message body failed or differs from Size")
	// ErrBadReply: the server sent something that is not a QMTP reply.
	ErrBadReply = errors.New("qmtp: malformed reply")
	// ErrConnBroken: the connection was already unusable before this Send.
	ErrConnBroken = errors.New("qmtp: connection no longer usable")
	// ErrSessionExpired: the connection outlived SessionTimeout.
	ErrSessionExpired = errors.New("qmtp: session time limit reached")
	// ErrUnexpectedData: the server sent bytes that answer nothing we sent.
	ErrUnexpectedData = errors.New("qmtp: unsolicited data from server")
)

// Client defaults.
const (
	// DefaultConnectTimeout bounds the TCP connect, the same for the QMTP,
	// QMQP and SMTP clients (see serve.DefaultConnectTimeout).
	DefaultConnectTimeout = serve.DefaultConnectTimeout
	// DefaultIOTimeout bounds each write and each wait for a reply: the
	// RFC 5321 4.5.3.2.6 ten minutes for the answer after the end of the
	// data, which is what a server committing a message may take.
	DefaultIOTimeout = 10 * time.Minute
	// DefaultClientSessionTimeout caps a connection's life; the QMTP spec
	// says a session should take at most an hour.
	DefaultClientSessionTimeout = time.Hour
	// MaxReplyBytes bounds one reply netstring. Replies are short texts
	// (mail.MaxStatusText); a longer one is treated as garbage.
	MaxReplyBytes = 4 << 10
)

var errDeadline = os.ErrDeadlineExceeded

// statusBodyFailed answers recipients of a message whose body could not be
// sent as declared: temporary, since nothing is known to be wrong with the
// message itself.
var statusBodyFailed = mail.Temp("4.3.0", "message body could not be read")

// Message is one package to send.
type Message struct {
	// Envelope is the sender and recipients, as raw addresses (no SMTP
	// quoting). There must be at least one recipient.
	Envelope mail.Envelope
	// Body is the message: exactly Size bytes, then io.EOF (the byte after
	// is read to make sure). It is read once, by a goroutine of Send, and
	// must not be used by anyone else meanwhile. Nil means empty.
	Body io.Reader
	// Size is the exact length of Body.
	Size int64
	// CRLF says Body has CRLF line ends; it is sent with mode byte '\r'
	// (encoding #1) and the server converts it. Otherwise Body has LF line
	// ends and goes with mode byte '\n' (encoding #2), which every QMTP
	// server stores verbatim.
	CRLF bool
	// Replied, if set, is called once with the message's statuses, the
	// slice Send returns for it, as soon as they are final: when the reply
	// to its last recipient arrives, while later packages may still be
	// under way; for a message that was not answered, just before Send
	// returns. It runs on Send's goroutine. A relay uses it to record each
	// message at once, so that a crash repeats as few deliveries as
	// possible.
	Replied func([]mail.Status)
}

// Client holds the settings for QMTP connections. The zero value is usable.
type Client struct {
	// Dialer makes the TCP connection; nil means a zero net.Dialer.
	Dialer *net.Dialer
	// TLSConfig, if set, makes every connection implicit TLS (QMTPS). An
	// empty ServerName is filled from the address.
	TLSConfig *tls.Config
	// ConnectTimeout bounds the TCP connect plus any TLS handshake. 0 means
	// DefaultConnectTimeout; negative means only ctx bounds it.
	ConnectTimeout time.Duration
	// IOTimeout bounds each write and each wait for a reply. 0 means
	// DefaultIOTimeout; negative means none.
	IOTimeout time.Duration
	// SessionTimeout caps the life of a connection. 0 means
	// DefaultClientSessionTimeout; negative means none.
	SessionTimeout time.Duration
}

// DialError is the error of a failed Dial: nothing was sent, so under MXPS
// the caller may fall back to SMTP on the same host (MXPS: only a failed
// QMTP connection attempt may fall back, never a failed delivery).
type DialError struct {
	Addr string
	Err  error
	// Timeout is the connect timeout that was in force, named in the
	// status when it ran out.
	Timeout time.Duration
}

func (e *DialError) Error() string { return "qmtp: connect to " + e.Addr + ": " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// Status is mail.StatusConnectFailed with the cause in plain words
// ("connection refused", "certificate signed by unknown authority").
func (e *DialError) Status() mail.Status { return mail.ConnectStatus(e.Err, e.Timeout) }

// As lets mail.StatusOf (and errors.As with a *mail.Status) see Status.
func (e *DialError) As(target any) bool {
	if p, ok := target.(*mail.Status); ok {
		*p = e.Status()
		return true
	}
	return false
}

// Dial connects to addr ("host:port"; a missing port means DefaultPort for
// plain QMTP, and is an error for QMTPS, which has no registered port).
// Errors are *DialError.
func (c *Client) Dial(ctx context.Context, addr string) (*Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		if c.TLSConfig != nil {
			return nil, &DialError{Addr: addr, Err: errors.New("QMTPS needs an explicit port")}
		}
		host = addr
		addr = net.JoinHostPort(host, strconv.Itoa(DefaultPort))
	}
	t := serve.Pick(c.ConnectTimeout, DefaultConnectTimeout)
	if t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	var d net.Dialer
	if c.Dialer != nil {
		d = *c.Dialer
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &DialError{Addr: addr, Err: err, Timeout: max(t, 0)}
	}
	if c.TLSConfig != nil {
		cfg := c.TLSConfig.Clone()
		cfg.ServerName = cmp.Or(cfg.ServerName, host)
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, &DialError{Addr: addr, Err: err, Timeout: max(t, 0)}
		}
		nc = tc
	}
	return c.NewConn(nc), nil
}

// NewConn starts a QMTP session on a connection the caller made (a unix
// socket, a TLS connection set up by hand, a test pipe).
func (c *Client) NewConn(nc net.Conn) *Conn {
	var end time.Time
	if st := serve.Pick(c.SessionTimeout, DefaultClientSessionTimeout); st > 0 {
		end = time.Now().Add(st)
	}
	io := serve.Pick(c.IOTimeout, DefaultIOTimeout)
	ioc := serve.NewIOConn(nc, serve.Timing{ReadTimeout: io, WriteTimeout: io, End: end})
	br := bufio.NewReaderSize(ioc, 4<<10)
	return &Conn{
		nc:  nc,
		io:  ioc,
		br:  br,
		ns:  netstring.NewReader(br),
		bw:  bufio.NewWriterSize(ioc, 32<<10),
		end: end,
	}
}

// Send is Client.Send with a zero Client.
func Send(ctx context.Context, addr string, msgs ...*Message) ([][]mail.Status, error) {
	var c Client
	return c.Send(ctx, addr, msgs...)
}

// Send dials addr, sends msgs pipelined on one connection and closes it. If
// the connection cannot be made, every recipient gets
// mail.StatusConnectFailed with the cause in its text (DialError.Status)
// and the error is a *DialError.
func (c *Client) Send(ctx context.Context, addr string, msgs ...*Message) ([][]mail.Status, error) {
	cn, err := c.Dial(ctx, addr)
	if err != nil {
		return fillAll(msgs, mail.StatusOf(err)), err
	}
	defer cn.Close()
	return cn.Send(ctx, msgs...)
}

// Conn is one QMTP client connection. It can carry any number of Send calls
// while Err reports nil; one Send runs at a time.
type Conn struct {
	nc  net.Conn
	io  *serve.IOConn
	br  *bufio.Reader
	ns  *netstring.Reader
	bw  *bufio.Writer
	end time.Time

	mu     sync.Mutex // one Send at a time
	errMu  sync.Mutex
	err    error // sticky: the connection is unusable
	closed bool
}

// Err returns why the connection can no longer be used, or nil if it can:
// an I/O or protocol error, a body failure, Close, or the session limit.
func (cn *Conn) Err() error {
	cn.errMu.Lock()
	defer cn.errMu.Unlock()
	if cn.err == nil && !cn.end.IsZero() && !time.Now().Before(cn.end) {
		cn.err = ErrSessionExpired
	}
	return cn.err
}

// Broken reports whether Err is non-nil.
func (cn *Conn) Broken() bool { return cn.Err() != nil }

func (cn *Conn) fail(err error) {
	cn.errMu.Lock()
	defer cn.errMu.Unlock()
	if cn.err == nil {
		cn.err = err
	}
}

// Close closes the connection. It may be called while a Send is running, to
// abort it; that Send's unanswered recipients get temporary failures.
func (cn *Conn) Close() error { return cn.abort(net.ErrClosed) }

// abort records err (unless an earlier error is recorded) and closes the
// connection once.
func (cn *Conn) abort(err error) error {
	cn.errMu.Lock()
	if cn.err == nil {
		cn.err = err
	}
	already := cn.closed
	cn.closed = true
	cn.errMu.Unlock()
	if already {
		return nil
	}
	return cn.nc.Close()
}

// Send sends msgs as pipelined packages and returns one []mail.Status per
// message, one Status per recipient in order. The statuses are always
// complete: a recipient the server did not answer gets a temporary failure
// (mail.StatusNoReply, or mail.StatusBadReply if the server talked
// nonsense); only a 'D' from the server is permanent. A message without
// recipients is not sent (empty slice, ErrNoRecipients in the error).
//
// A writer goroutine sends the packages while Send reads the replies, so a
// server that answers each package as it arrives cannot deadlock us. The
// returned error joins the per-message problems and the connection's
// failure, if any; after a connection failure Err is non-nil and the Conn
// must be closed. Cancelling ctx aborts the connection.
func (cn *Conn) Send(ctx context.Context, msgs ...*Message) ([][]mail.Status, error) {
	cn.mu.Lock()
	defer cn.mu.Unlock()

	res := make([][]mail.Status, len(msgs))
	reported := make([]bool, len(msgs))
	defer func() {
		// Every message hears its outcome once, answered or not.
		for i, m := range msgs {
			if m != nil && m.Replied != nil && !reported[i] && res[i] != nil {
				m.Replied(res[i])
			}
		}
	}()
	var errs []error
	var todo []int
	for i, m := range msgs {
		switch {
		case m == nil:
			errs = append(errs, fmt.Errorf("message %d: %w", i, ErrBadMessage))
		case len(m.Envelope.Recipients) == 0:
			res[i] = []mail.Status{}
			errs = append(errs, fmt.Errorf("message %d: %w", i, ErrNoRecipients))
		case m.Size < 0 || m.Body == nil && m.Size > 0:
			res[i] = fill(len(m.Envelope.Recipients), mail.StatusTempFailure)
			errs = append(errs, fmt.Errorf("message %d: %w", i, ErrBadMessage))
		default:
			todo = append(todo, i)
		}
	}
	// unsent answers the messages todo[k:] with st.
	unsent := func(k int, st mail.Status) {
		for _, i := range todo[k:] {
			res[i] = fill(len(msgs[i].Envelope.Recipients), st)
		}
	}
	if len(todo) == 0 {
		return res, errors.Join(errs...)
	}
	if err := cn.Err(); err != nil {
		unsent(0, mail.StatusNoReply)
		return res, errors.Join(append(errs, fmt.Errorf("%w: %w", ErrConnBroken, err))...)
	}
	if err := ctx.Err(); err != nil {
		// Nothing sent, and the connection stays good for another call.
		unsent(0, mail.StatusTempFailure)
		return res, errors.Join(append(errs, err)...)
	}
	if err := cn.probe(); err != nil {
		cn.abort(err)
		unsent(0, mail.StatusNoReply)
		return res, errors.Join(append(errs, err)...)
	}

	stop := context.AfterFunc(ctx, func() { cn.abort(ctx.Err()) })
	defer stop()

	// written carries one value per message in todo, in order: nil once the
	// package is fully written, or the error that stopped the writer.
	written := make(chan error, len(todo))
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		cn.writePackages(msgs, todo, written)
	}()

	var connErr error
	k := 0
	for ; k < len(todo); k++ {
		i := todo[k]
		m := msgs[i]
		if werr := <-written; werr != nil {
			connErr = werr
			break
		}
		st := make([]mail.Status, len(m.Envelope.Recipients))
		res[i] = st
		for j := range st {
			b, err := cn.ns.ReadBytes(MaxReplyBytes)
			if err == nil && (len(b) == 0 || b[0] != 'K' && b[0] != 'Z' && b[0] != 'D') {
				err = ErrBadReply
			}
			if err != nil {
				connErr = cn.replyError(err)
				fillFrom(st, j, statusFor(connErr))
				break
			}
			st[j] = mail.ParseReply(b)
		}
		if connErr != nil {
			k++
			break
		}
		if m.Replied != nil {
			reported[i] = true
			m.Replied(st)
		}
	}
	unsent(k, statusFor(connErr))
	if connErr != nil {
		cn.abort(connErr) // also unblocks the writer
	} else if cn.br.Buffered() > 0 {
		// More replies than recipients: the server is out of step, and the
		// extra bytes would be taken for the next Send's answers.
		cn.fail(ErrUnexpectedData)
	}
	<-writerDone
	if connErr != nil {
		errs = append(errs, connErr)
	}
	if err := ctx.Err(); err != nil && connErr != nil {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

// replyError classifies a failure to read a reply.
func (cn *Conn) replyError(err error) error {
	if errors.Is(err, ErrBadReply) {
		return err
	}
	if netstring.Malformed(err) {
		return fmt.Errorf("%w: %w", ErrBadReply, err)
	}
	// The connection ended or stalled. If the writer failed on a body,
	// that is the cause worth reporting.
	cn.errMu.Lock()
	defer cn.errMu.Unlock()
	if cn.err != nil && errors.Is(cn.err, ErrBody) {
		return cn.err
	}
	return fmt.Errorf("qmtp: reading reply: %w", err)
}

// statusFor is what an unanswered recipient gets after err.
func statusFor(err error) mail.Status {
	switch {
	case errors.Is(err, ErrBadReply):
		return mail.StatusBadReply
	case errors.Is(err, ErrBody):
		return statusBodyFailed
	}
	return mail.StatusNoReply
}

// probe checks, without waiting, that the idle connection has not been
// closed by the server and holds no stray bytes, so a reused connection
// fails before we send rather than after.
func (cn *Conn) probe() error {
	if cn.br.Buffered() > 0 {
		return ErrUnexpectedData
	}
	cn.nc.SetReadDeadline(time.Now())
	var b [1]byte
	n, err := cn.nc.Read(b[:])
	switch {
	case n > 0:
		return ErrUnexpectedData
	case err == nil:
		return nil
	case errors.Is(err, errDeadline):
		return nil
	case err == io.EOF:
		return fmt.Errorf("%w: closed by server", ErrConnBroken)
	}
	return fmt.Errorf("%w: %w", ErrConnBroken, err)
}

// writePackages is the writer goroutine of Send.
// writePackages is the writer goroutine of Send.
func (cn *Conn) writePackages(msgs []*Message, todo []int, written chan<- error) {
	for _, i := range todo {
		err := cn.writePackage(msgs[i])
		if err == nil {
			err = cn.bw.Flush()
		}
		if err != nil {
			if errors.Is(err, ErrBody) {
				cn.fail(err)
				// Let the server see the package cut off (it discards it)
				// while we still read the replies to the earlier ones.
				if cw, ok := cn.nc.(interface{ CloseWrite() error }); ok {
					cn.bw.Flush()
					cw.CloseWrite()
				} else {
					cn.abort(err)
				}
			}
			written <- err
			return
		}
		written <- nil
	}
}

func (cn *Conn) writePackage(m *Message) error {
	mode := byte('\n')
	if m.CRLF {
		mode = '\r'
	}
	b := append(netstring.AppendHeader(make([]byte, 0, 24), m.Size+1), mode)
	if _, err := cn.bw.Write(b); err != nil {
		return err
	}
	if m.Body != nil {
		err := netstring.CopyExactly(cn.bw, m.Body, m.Size)
		var re *netstring.ReadError
		if errors.As(err, &re) || errors.Is(err, netstring.ErrShortBody) {
			return fmt.Errorf("%w: %w", ErrBody, err)
		}
		if err != nil {
			return err
		}
	}
	var list int64
	for _, r := range m.Envelope.Recipients {
		list += netstring.Len(int64(len(r)))
	}
	b = netstring.AppendString(append(b[:0], ','), m.Envelope.Sender)
	b = netstring.AppendHeader(b, list)
	for _, r := range m.Envelope.Recipients {
		b = netstring.AppendString(b, r)
	}
	_, err := cn.bw.Write(append(b, ','))
	return err
}

func fill(n int, st mail.Status) []mail.Status { return slices.Repeat([]mail.Status{st}, n) }

func fillFrom(s []mail.Status, from int, st mail.Status) {
	for i := from; i < len(s); i++ {
		s[i] = st
	}
}

func fillAll(msgs []*Message, st mail.Status) [][]mail.Status {
	res := make([][]mail.Status, len(msgs))
	for i, m := range msgs {
		if m != nil {
			res[i] = fill(len(m.Envelope.Recipients), st)
		}
	}
	return res
}
