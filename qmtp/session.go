package qmtp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"

	"github.com/qmgate/qmgate/internal/serve"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/netstring"
)

// ErrProtocol is wrapped by every error that means the client broke the
// protocol (a malformed netstring, a zero-length message, an unknown mode
// byte, an empty recipient list). The server closes the connection without
// replying to the package, as qmail-qmtpd does.
var ErrProtocol = errors.New("qmtp: protocol error")

var (
	errZeroLength    = fmt.Errorf("%w: zero-length message netstring (no mode byte)", ErrProtocol)
	errMode          = fmt.Errorf("%w: unknown mode byte", ErrProtocol)
	errNoRecipients  = fmt.Errorf("%w: empty recipient list", ErrProtocol)
	errInnerDigit    = fmt.Errorf("%w: non-digit in recipient length", ErrProtocol)
	errInnerLength   = fmt.Errorf("%w: recipient netstring longer than its list", ErrProtocol)
	errInnerComma    = fmt.Errorf("%w: recipient netstring without comma", ErrProtocol)
	errBodyAfterRead = errors.New("qmtp: Body read after Envelope")
)

// statusTooManyRecipients answers well-formed recipients past
// MaxRecipients: temporary, so the client sends them again in another
// package (RFC 5321 4.5.3.1.10 does the same for SMTP with 452).
var statusTooManyRecipients = mail.Temp("4.5.3", "too many recipients in one package, send the rest later")

// protocolError marks netstring errors as protocol errors; I/O errors
// (EOF mid-package, timeouts) pass unchanged.
func protocolError(err error) error {
	switch {
	case err == nil, errors.Is(err, ErrProtocol):
		return err
	case netstring.Malformed(err):
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return err
}

// Request is one QMTP package as the Handler sees it. QMTP sends the message
// before the envelope, so the Handler streams Body first and calls Envelope
// afterwards. A Request must not be used after ServeQMTP returns.
type Request struct {
	// Conn describes the connection; shared by the packages of a session.
	Conn *mail.ConnInfo
	// Body is the server's Received line followed by the message as it is
	// to be stored (CR-mode converted to LF). It ends with io.EOF, or with
	// mail.StatusTooBig or mail.StatusTooManyHops once a limit is crossed,
	// or with another error if the client went away.
	Body io.Reader
	// Size is the client's declared message length without the mode byte:
	// the exact stored size in LF mode, an upper bound in CR mode. The
	// Received line is not counted.
	Size int64
	// CRLF reports that the client used encoding #1 (mode byte '\r').
	CRLF bool

	pkg *pkg
}

// Envelope drains whatever of Body the handler did not read, then reads the
// sender and the recipient list to the end of the package. See the package
// documentation for what the result means; in short:
//
//   - err == nil: the package is complete and within limits; Recipients
//     holds the well-formed recipients (possibly none), and the Handler
//     returns one Status per element.
//   - err is a mail.Status (StatusTooBig, StatusTooManyHops,
//     StatusBadSender): the package is complete but must not be committed;
//     the server answers every recipient with that status, whatever the
//     Handler returns.
//   - any other err: the package is broken or cut off; nothing is replied
//     and the connection closes.
//
// Envelope may be called more than once; it returns the same result.
func (r *Request) Envelope() (mail.Envelope, error) {
	p := r.pkg
	p.handlerEnv = true
	if !p.envDone {
		p.readEnvelope()
	}
	return p.env, p.envErr()
}

// pkg is the server's state for one package.
type pkg struct {
	s        *session
	body     *mail.BodyReader
	hdr      string // Received line not yet handed out
	bodyEOF  bool
	limitErr error // mail.StatusTooBig, mail.StatusTooManyHops or serve.StatusNUL
	ioErr    error // protocol or I/O error: close without reply

	envDone    bool
	handlerEnv bool // the handler called Envelope
	badSender  bool
	env        mail.Envelope
	kinds      []byte // per recipient in wire order
}

// Recipient kinds, in wire order, for merging the replies back.
const (
	kindGood   byte = iota // handed to the handler
	kindBad                // >= 1000 bytes or NUL: StatusBadRecipient
	kindExcess             // well-formed past MaxRecipients: temporary
)

func (p *pkg) envErr() error {
	switch {
	case p.ioErr != nil:
		return p.ioErr
	case p.limitErr != nil:
		return p.limitErr
	case p.badSender:
		return mail.StatusBadSender
	}
	return nil
}

// bodyReader is Request.Body.
type bodyReader struct{ p *pkg }

func (b bodyReader) Read(q []byte) (int, error) {
	p := b.p
	switch {
	case p.envDone:
		return 0, errBodyAfterRead
	case p.ioErr != nil:
		return 0, p.ioErr
	case p.limitErr != nil:
		return 0, p.limitErr
	case p.bodyEOF:
		return 0, io.EOF
	case len(p.hdr) > 0:
		n := copy(q, p.hdr)
		p.hdr = p.hdr[n:]
		return n, nil
	}
	n, err := p.body.Read(q)
	if err != nil {
		err = p.noteBodyErr(err)
	}
	return n, err
}

func (p *pkg) noteBodyErr(err error) error {
	if err == io.EOF {
		p.bodyEOF = true
		return err
	}
	if _, ok := err.(mail.Status); ok {
		p.limitErr = err
		return err
	}
	p.ioErr = protocolError(err)
	return p.ioErr
}

// session is one connection's package loop.
type session struct {
	srv  *Server
	t    *serve.Conn
	io   *serve.IOConn
	ctx  context.Context
	info *mail.ConnInfo
	br   *bufio.Reader
	bw   *bufio.Writer
	ns   *netstring.Reader
	log  *slog.Logger

	maxBytes  int64
	maxHops   int
	maxRcpts  int
	maxMsgNS  int64
	maxListNS int64

	crlf  crlfReader
	addr  [mail.MaxAddressLen]byte
	kinds []byte
	out   []byte // one rendered reply netstring
	last  mail.Status
	ready bool // out holds the rendering of last
}

func (s *session) run() error {
	for {
		if s.br.Buffered() == 0 {
			// Nothing more has arrived: the replies go out now, before we
			// wait, and only then may Shutdown close us as idle.
			if err := s.bw.Flush(); err != nil {
				return err
			}
			if !s.t.SetIdle(true) {
				return ErrServerClosed
			}
			_, err := s.br.Peek(1)
			if !s.t.SetIdle(false) {
				return ErrServerClosed
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		} else if s.srv.core.Shutting() {
			s.bw.Flush()
			return ErrServerClosed
		}
		if err := s.servePackage(); err != nil {
			// Replies to earlier packages are owed even so: those
			// messages were accepted.
			s.bw.Flush()
			return err
		}
	}
}

func (s *session) servePackage() error {
	data, n, err := s.ns.Next(s.maxMsgNS)
	if err != nil {
		return protocolError(err)
	}
	s.io.Started() // the first package has begun: FirstTimeout is met
	if n == 0 {
		return errZeroLength
	}
	mode, err := s.ns.ReadByte()
	if err != nil {
		return protocolError(err)
	}
	if mode != '\n' && mode != '\r' {
		return errMode
	}
	p := &pkg{s: s, hdr: s.info.Received(s.srv.clock())}
	src := data
	if mode == '\r' {
		s.crlf = crlfReader{r: data}
		src = &s.crlf
	} else if s.maxBytes > 0 && n-1 > s.maxBytes {
		// Known from the declaration alone; the data is still drained.
		p.limitErr = mail.StatusTooBig
	}
	p.body = mail.NewBodyReader(serve.RefuseNUL(src), s.maxBytes, s.maxHops)
	req := &Request{Conn: s.info, Body: bodyReader{p}, Size: n - 1, CRLF: mode == '\r', pkg: p}

	statuses, handled := s.callHandler(req)
	if !p.envDone {
		p.readEnvelope()
	}
	if p.ioErr != nil {
		return p.ioErr
	}
	if !p.handlerEnv {
		// The handler cannot have committed a message whose envelope it
		// never saw; whatever it returned is not about these recipients.
		handled = false
	}
	return s.reply(p, statuses, handled)
}

// callHandler runs the Handler, turning a panic into "not handled".
func (s *session) callHandler(req *Request) (st []mail.Status, handled bool) {
	h := s.srv.Handler
	if h == nil {
		return nil, false
	}
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("qmtp: handler panic", "panic", v, "stack", string(debug.Stack()))
			st, handled = nil, false
		}
	}()
	return h.ServeQMTP(s.ctx, req), true
}

// readEnvelope drains the body and reads the sender and recipients up to the
// package's last byte. Any error lands in p.ioErr or p.limitErr.
func (p *pkg) readEnvelope() {
	p.envDone = true
	if p.ioErr == nil && p.limitErr == nil && !p.bodyEOF {
		// Through the BodyReader, so limits hold for bytes the handler
		// did not read too.
		if _, err := io.Copy(io.Discard, p.body); err != nil {
			p.noteBodyErr(err)
		} else {
			p.bodyEOF = true
		}
	}
	if p.ioErr != nil {
		return
	}
	p.ioErr = protocolError(p.readAddresses())
}

// readAddresses reads the sender and the recipient list, to the package's
// last byte, after the body.
func (p *pkg) readAddresses() error {
	s := p.s
	// After a limit error the rest of the message is skipped unconverted.
	if err := s.ns.End(); err != nil {
		return err
	}

	sender, n, err := s.ns.Next(MaxSenderNetstring)
	if err != nil {
		return err
	}
	if n >= mail.MaxAddressLen {
		p.badSender = true // skipped by End below, as qmail does
	} else {
		if _, err := io.ReadFull(sender, s.addr[:n]); err != nil {
			return err
		}
		a := s.addr[:n]
		p.badSender = bytes.IndexByte(a, 0) >= 0
		if !p.badSender {
			p.env.Sender = string(a)
		}
	}
	if err := s.ns.End(); err != nil {
		return err
	}

	list, n, err := s.ns.Next(s.maxListNS)
	if err != nil {
		return err
	}
	if n == 0 {
		// qmail answers nothing and waits for the next package, so a
		// client expecting a reply hangs; we close instead.
		return errNoRecipients
	}
	kinds := s.kinds[:0]
	good := 0
	for s.ns.Remaining() > 0 {
		l, err := s.innerLength()
		if err != nil {
			return err
		}
		if l >= s.ns.Remaining() {
			return errInnerLength // no room for the data and its comma
		}
		kind := kindBad
		if l < mail.MaxAddressLen {
			if _, err := io.ReadFull(list, s.addr[:l]); err != nil {
				return err
			}
			a := s.addr[:l]
			switch {
			case bytes.IndexByte(a, 0) >= 0:
			case s.maxRcpts > 0 && good >= s.maxRcpts:
				kind = kindExcess
			default:
				kind = kindGood
				good++
				p.env.Recipients = append(p.env.Recipients, string(a))
			}
		} else if _, err := io.CopyN(io.Discard, list, l); err != nil {
			return err
		}
		if c, err := s.ns.ReadByte(); err != nil || c != ',' {
			if err == nil || err == io.EOF {
				err = errInnerComma
			}
			return err
		}
		kinds = append(kinds, kind)
	}
	s.kinds = kinds
	p.kinds = kinds
	return s.ns.End()
}

// innerLength reads the length field of a recipient netstring inside the
// list. Like qmail it accepts leading zeros and an empty length; unlike
// qmail it refuses non-digits, and a value beyond the list's remaining bytes
// stops at once, so no digit string can overflow.
func (s *session) innerLength() (int64, error) {
	var v int64
	for {
		c, err := s.ns.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = errInnerLength
			}
			return 0, err
		}
		if c == ':' {
			return v, nil
		}
		if c < '0' || c > '9' {
			return 0, errInnerDigit
		}
		v = v*10 + int64(c-'0')
		if v > s.ns.Remaining() {
			return 0, errInnerLength
		}
	}
}

// reply writes one reply per recipient in wire order: the package-wide
// override if any, the server's own verdict on malformed and excess
// recipients, and the handler's statuses for the rest.
func (s *session) reply(p *pkg, statuses []mail.Status, handled bool) error {
	var override *mail.Status
	if err := p.envErr(); err != nil {
		st := mail.StatusOf(err)
		override = &st
	}
	good, refused := 0, 0
	var first mail.Status
	for _, k := range p.kinds {
		var st mail.Status
		switch {
		case override != nil:
			st = *override
		case k == kindBad:
			st = mail.StatusBadRecipient
		case k == kindExcess:
			st = statusTooManyRecipients
		default:
			st = mail.StatusTempFailure
			if handled && good < len(statuses) {
				st = statuses[good]
			}
			good++
		}
		// The line names the first refusal, else an acceptance.
		if refused == 0 {
			first = st
		}
		if !st.IsAccept() {
			refused++
		}
		if err := s.writeReply(st); err != nil {
			return err
		}
	}
	// One line per package, as the QMQP server logs one per message: at
	// Info when a recipient was refused, in words (the letters stay on the
	// wire).
	level := slog.LevelDebug
	if refused > 0 {
		level = slog.LevelInfo
	}
	s.log.Log(context.Background(), level, "qmtp message", "rcpts", len(p.kinds), "refused", refused,
		"status", first.SMTPText(), "code", first.EnhancedCode(), "result", first.Outcome())
	if override != nil || !handled || len(statuses) != good {
		var reason string
		if override != nil {
			reason = string(override.Reply())
		}
		s.log.Debug("qmtp: package answered by the server", "rcpts", len(p.kinds), "handled", handled,
			"statuses", len(statuses), "good", good, "status", reason)
	}
	return nil
}

func (s *session) writeReply(st mail.Status) error {
	if !s.ready || st != s.last {
		s.out = netstring.Append(s.out[:0], st.Reply())
		s.last, s.ready = st, true
	}
	_, err := s.bw.Write(s.out)
	return err
}
