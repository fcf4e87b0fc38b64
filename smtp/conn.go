package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/qmgate/qmgate/internal/serve"
	"github.com/qmgate/qmgate/mail"
)

// Limits of the lingering close that ends a session the server gave up on.
const (
	// lingerTimeout bounds how long the server keeps reading (and
	// discarding) after its last reply on a connection it is closing, so that
	// the reply is not destroyed by a TCP reset while the client is still
	// sending.
	lingerTimeout = 10 * time.Second
	// lingerMaxBytes bounds what it discards meanwhile.
	lingerMaxBytes = 64 << 20
)

// serverConn is the server's view of one client connection. go-smtp reads and
// writes through it (under its tls.Conn after STARTTLS or on an implicit-TLS
// listener, so it only ever sees ciphertext there). It is where the limits
// that go-smtp lacks live:
//
//   - a deadline on every single read and write (ReadTimeout, WriteTimeout;
//     go-smtp's own timeouts are per command, and none covers a DATA
//     transfer), and a cap on the whole session (SessionTimeout);
//   - the graceful shutdown: an idle connection's pending read times out, so
//     go-smtp answers "421 4.4.2" and closes;
//   - closing after a given reply (too many AUTH failures, a DATA transfer
//     the server cannot follow any more), with a lingering drain so the reply
//     survives.
type serverConn struct {
	net.Conn // the raw connection
	srv      *Server
	ctx      context.Context // the handler's calls; ConnContext may replace it

	// info is the connection's part of every session's ConnInfo; only the
	// connection's goroutine touches it after setup.
	info     mail.ConnInfo
	infoDone bool

	// engine is go-smtp's server instance for this connection only, so that
	// per-connection settings (its MaxMessageBytes) can change safely.
	engine *gosmtp.Server

	mu            sync.Mutex
	tm            serve.Timing // the connection's clocks, under mu
	writeDeadline time.Time    // set from outside (tls.Conn's close_notify)

	busy            atomic.Bool  // a mail transaction is open
	kicked          atomic.Bool  // Shutdown asked idle sessions to end
	stopped         atomic.Bool  // reads return EOF: the session is over
	closeAfterWrite atomic.Int32 // closePlain or closeLinger: end after the next write

	authFailures int // owned by the connection's goroutine

	// The plaintext view (plain.go). The server terminates TLS itself,
	// implicit or after STARTTLS, so that go-smtp and this view see
	// plaintext. stream, tlsConn, sess, lastRead and startTLS belong to
	// go-smtp's goroutine for the connection.
	stream   net.Conn  // what Read and Write use: the connection or its TLS
	tlsConn  *tls.Conn // nil until TLS is on
	sess     *session  // the current session, for its TLS state
	lastRead []byte    // the end of the last read, to spot commands after STARTTLS
	startTLS bool      // the reply being written accepts STARTTLS
	dcState  int       // scanDotCR's state
	dotCR    atomic.Bool
	dotLine  atomic.Bool // a line "." CR CR LF was read (scanDotCR)
	inData   atomic.Bool // go-smtp's DATA reader is reading

	// Replies wait in pending until go-smtp would block for input
	// (Read), so that the lines of a multi-line reply, and the replies
	// to commands a client pipelined (RFC 2920), leave in one write
	// instead of one each: go-smtp flushes every line. wmu guards
	// pending and the writes.
	wmu     sync.Mutex
	pending []byte
	// replyBuf backs pending and rewritten for a session's usual replies,
	// so that holding them back allocates nothing.
	replyBuf   [512]byte
	rewriteBuf [256]byte

	closeOnce sync.Once
	done      chan struct{}
}

// maxPendingReplies bounds the replies held back for one write; past it
// they go out at once.
const maxPendingReplies = 16 << 10

func newServerConn(srv *Server, c net.Conn, t *serve.Conn) *serverConn {
	sc := &serverConn{
		Conn:   c,
		stream: c,
		srv:    srv,
		ctx:    t.Context(),
		tm:     srv.settings().Timing(time.Now()),
		done:   make(chan struct{}),
	}
	sc.pending = sc.replyBuf[:0]
	t.OnShutdown(sc.kick)
	sc.info = mail.ConnInfo{
		Proto:      "SMTP",
		RemoteAddr: c.RemoteAddr(),
		LocalAddr:  c.LocalAddr(),
		LocalHost:  srv.Hostname,
	}
	return sc
}

// started records the first HELO or EHLO: FirstTimeout no longer applies.
func (sc *serverConn) started() {
	sc.mu.Lock()
	sc.tm.Started()
	sc.mu.Unlock()
}

// timeoutError is an idle session's read timeout, the server's own or a
// Shutdown kick: go-smtp answers it with "421 4.4.2 Idle timeout" and closes.
type timeoutError struct{}

func (timeoutError) Error() string   { return "smtp: read timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var errStopped = io.EOF

// Read reads with a fresh deadline per call: ReadTimeout from now, but never
// past the session's end.
func (sc *serverConn) Read(p []byte) (int, error) {
	for {
		if sc.stopped.Load() {
			return 0, errStopped
		}
		if sc.kicked.Load() && !sc.busy.Load() {
			return 0, sc.timedOut()
		}
		if sc.inData.Load() && sc.dotLine.Load() {
			// go-smtp has taken in everything read so far and lost its
			// place in the data (scanDotCR): end the transfer now
			// instead of waiting for the client, who may be waiting for
			// a reply.
			return 0, errDotLineCR
		}
		// About to wait for the client: the replies so far must be out
		// (before the read's deadline is armed, so that writing them
		// does not take from it).
		if err := sc.flushPending(); err != nil {
			return 0, err
		}
		sc.mu.Lock()
		dl := sc.tm.Deadline(sc.tm.ReadTimeout)
		sc.mu.Unlock()
		sc.Conn.SetReadDeadline(dl)
		// Shutdown sets kicked before it moves the deadline into the past;
		// checking after our own SetReadDeadline means one of the two
		// always wins.
		if sc.kicked.Load() && !sc.busy.Load() {
			return 0, sc.timedOut()
		}
		n, err := sc.stream.Read(p)
		if n > 0 {
			sc.scanDotCR(p[:n])
			sc.lastRead = append(sc.lastRead[:0], p[max(0, n-16):n]...)
		}
		sc.mu.Lock()
		if e := sc.tm.ReadDone(n, err); e != err {
			// Too slow, or no greeting in time: like a timeout.
			sc.mu.Unlock()
			sc.srv.logger().Info("smtp client dropped", "client", addrString(sc.info.RemoteAddr), "reason", e.Error())
			return 0, sc.timedOut()
		}
		sc.mu.Unlock()
		if n == 0 && err != nil && isTimeout(err) {
			if sc.kicked.Load() && sc.busy.Load() && (dl.IsZero() || time.Now().Before(dl)) {
				// The shutdown kick hit a session that had just opened a
				// transaction: let that transaction finish.
				continue
			}
			return 0, sc.timedOut()
		}
		return n, err
	}
}

// timedOut ends the session after the next reply and returns the error for
// go-smtp. Outside a transaction that is a net.Error timeout, which go-smtp
// answers with 421 4.4.2. Inside one, go-smtp may be reading a BDAT chunk,
// and there it would answer anything but a *SMTPError with a permanent 554
// carrying the error's text; a 421 reply error it passes on unchanged (and
// between commands it answers it with 421 4.4.0).
func (sc *serverConn) timedOut() error {
	sc.stopped.Store(true)
	if !sc.busy.Load() {
		return timeoutError{}
	}
	if sc.kicked.Load() {
		return replyError(mail.StatusShuttingDown)
	}
	return replyError(statusTimeout421)
}

// Write holds a reply back for the next read (see pending), or writes it
// with what is held back, with a fresh deadline per call; it ends the
// connection after the reply that closeAfterWrite was armed for.
func (sc *serverConn) Write(p []byte) (int, error) {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	sc.logSyntax(p)
	q, changed := sc.rewrite(p)
	if !sc.startTLS && sc.closeAfterWrite.Load() == 0 && !sc.stopped.Load() &&
		len(sc.pending)+len(q) <= maxPendingReplies {
		sc.pending = append(sc.pending, q...)
		return len(p), nil
	}
	if len(sc.pending) > 0 {
		q, changed = append(sc.pending, q...), true
		sc.pending = sc.pending[:0]
	}
	n, err := sc.writeNow(q)
	if changed {
		// The caller counts what it asked to write.
		n = len(p)
		if err != nil {
			n = 0
		}
	}
	if sc.startTLS {
		sc.startTLS = false
		if err == nil {
			err = sc.handshake()
		}
	}
	switch sc.closeAfterWrite.Swap(0) {
	case closePlain:
		sc.closeLocked()
	case closeLinger:
		sc.lingerCloseLocked()
	}
	return n, err
}

// flushPending writes the replies held back, if any.
func (sc *serverConn) flushPending() error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	return sc.flushPendingLocked()
}

func (sc *serverConn) flushPendingLocked() error {
	if len(sc.pending) == 0 {
		return nil
	}
	_, err := sc.writeNow(sc.pending)
	sc.pending = sc.pending[:0]
	return err
}

// writeNow writes p with a fresh deadline. Caller holds wmu.
func (sc *serverConn) writeNow(p []byte) (int, error) {
	sc.mu.Lock()
	sc.tm.Wrote()
	// Not capped by the session's end: the 421 that ends it must go out.
	var dl time.Time
	if sc.tm.WriteTimeout > 0 {
		dl = time.Now().Add(sc.tm.WriteTimeout)
	}
	if w := sc.writeDeadline; !w.IsZero() && (dl.IsZero() || w.Before(dl)) {
		dl = w
	}
	sc.mu.Unlock()
	sc.Conn.SetWriteDeadline(dl)
	return sc.stream.Write(p)
}

// Values of closeAfterWrite.
const (
	closePlain  = 1
	closeLinger = 2
)

// SetDeadline and friends record a write deadline set from outside (tls.Conn
// bounds its close_notify this way); read deadlines are the server's own.
func (sc *serverConn) SetDeadline(t time.Time) error {
	sc.SetWriteDeadline(t)
	return nil
}

func (sc *serverConn) SetReadDeadline(time.Time) error { return nil }

func (sc *serverConn) SetWriteDeadline(t time.Time) error {
	sc.mu.Lock()
	sc.writeDeadline = t
	sc.mu.Unlock()
	return sc.Conn.SetWriteDeadline(t)
}

// abort ends the session in the middle of a transfer: reads stop at once
// (go-smtp's drain of the DATA ends there), and once the reply is written
// the connection is closed the lingering way, since the client may still be
// sending.
func (sc *serverConn) abort() {
	sc.stopped.Store(true)
	sc.closeAfterWrite.Store(closeLinger)
}

// closeAfterReply ends the session after the next reply, with nothing left
// to read (the client waits for that reply).
func (sc *serverConn) closeAfterReply() {
	sc.stopped.Store(true)
	sc.closeAfterWrite.Store(closePlain)
}

// lingerCloseLocked half-closes the connection after the final reply and discards
// what the client still sends for a short while before closing: closing with
// unread input makes the kernel send a reset, which can destroy the reply
// before the client reads it.
// Caller holds wmu.
func (sc *serverConn) lingerCloseLocked() {
	sc.flushPendingLocked()
	sc.stopped.Store(true)
	if cw, ok := sc.Conn.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			sc.Conn.SetReadDeadline(time.Now().Add(lingerTimeout))
			io.CopyN(io.Discard, sc.Conn, lingerMaxBytes)
		}
	}
	sc.closeLocked()
}

// Close sends the replies held back, unless a write is under way on
// another goroutine (a hard close), then closes the connection once and
// gives back its connection slot.
func (sc *serverConn) Close() error {
	if sc.wmu.TryLock() {
		defer sc.wmu.Unlock()
		return sc.closeLocked()
	}
	return sc.closeConn()
}

// closeLocked is Close with wmu held.
func (sc *serverConn) closeLocked() error {
	sc.flushPendingLocked()
	return sc.closeConn()
}

func (sc *serverConn) closeConn() error {
	var err error
	sc.closeOnce.Do(func() {
		sc.stopped.Store(true)
		err = sc.Conn.Close()
		close(sc.done)
	})
	return err
}

// kick makes an idle session end now (Shutdown).
func (sc *serverConn) kick() {
	sc.kicked.Store(true)
	if !sc.busy.Load() {
		sc.Conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// oneConnListener hands one connection to go-smtp's accept loop, then blocks
// until that connection is closed, so that go-smtp's Serve returns when the
// session is over.
type oneConnListener struct {
	c      chan net.Conn // holds the connection until Accept takes it
	done   <-chan struct{}
	closed chan struct{}
	once   sync.Once
}

func newOneConnListener(c net.Conn, done <-chan struct{}) *oneConnListener {
	l := &oneConnListener{c: make(chan net.Conn, 1), done: done, closed: make(chan struct{})}
	l.c <- c
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	default:
	}
	select {
	case <-l.done:
	case <-l.closed:
	}
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return oneConnAddr{} }

type oneConnAddr struct{}

func (oneConnAddr) Network() string { return "smtp-conn" }
func (oneConnAddr) String() string  { return "smtp-conn" }

// isTimeout reports whether err is a deadline expiry.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
