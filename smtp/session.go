package smtp

import (
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/qmgate/qmgate/internal/serve"
	"github.com/qmgate/qmgate/mail"
)

// backend makes go-smtp's sessions for one connection.
type backend struct{ sc *serverConn }

// NewSession runs at the first HELO/EHLO of a connection and again at the
// first one after STARTTLS (go-smtp starts over then, as RFC 3207 4.2 asks).
func (b backend) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	sc := b.sc
	if !sc.infoDone {
		sc.infoDone = true
		sc.started()
		if f := sc.srv.ConnContext; f != nil {
			ctx, err := f(sc.ctx, &sc.info)
			if err != nil {
				sc.srv.logger().Info("smtp connection refused by ConnContext", "client", addrString(sc.info.RemoteAddr), "err", err)
				sc.closeAfterReply()
				return nil, replyError(statusConnRefused)
			}
			if ctx != nil {
				sc.ctx = ctx
			}
		}
	}
	s := &session{sc: sc, conn: c, info: sc.info}
	if st, ok := c.TLSConnectionState(); ok {
		s.info.TLS = &st
	} else if sc.tlsConn != nil {
		st := sc.tlsConn.ConnectionState()
		s.info.TLS = &st
	}
	sc.sess = s
	return s, nil
}

// session is go-smtp's Session for one stretch of a connection between
// greetings: it tracks the envelope and asks the Handler.
//
// go-smtp calls its methods from the connection's goroutine, except Data
// for BDAT, which runs in a goroutine of its own while go-smtp reads the
// chunks; mu guards what both touch.
type session struct {
	sc   *serverConn
	conn *gosmtp.Conn
	info mail.ConnInfo // Helo, TLS and AuthUser kept current
	// esmtp records that the client greeted with EHLO (RFC 3848's ESMTP).
	esmtp bool

	mu    sync.Mutex
	from  string
	utf8  bool
	rcpts []string
	tx    mail.ConnInfo // the ConnInfo of the open transaction
}

var _ gosmtp.AuthSession = (*session)(nil)

func (s *session) srv() *Server { return s.sc.srv }

// proto is the Received line's protocol word: RFC 3848's SMTP, ESMTP,
// ESMTPS, ESMTPA, ESMTPSA, or RFC 6531's UTF8SMTP forms for a transaction
// that used SMTPUTF8.
func (s *session) proto(utf8 bool) string {
	if !s.esmtp {
		return "SMTP"
	}
	p := "ESMTP"
	if utf8 {
		p = "UTF8SMTP"
	}
	if s.info.TLS != nil {
		p += "S"
	}
	if s.info.AuthUser != "" {
		p += "A"
	}
	return p
}

// snapshot returns a copy of the session's ConnInfo for one handler call.
func (s *session) snapshot(utf8 bool) mail.ConnInfo {
	ci := s.info
	ci.Helo = s.conn.Hostname()
	ci.Proto = s.proto(utf8)
	return ci
}

func (s *session) Mail(from string, opts *gosmtp.MailOptions) error {
	srv := s.srv()
	if s.sc.stopped.Load() {
		return replyError(statusConnError)
	}
	if s.sc.busy.Load() {
		// go-smtp lets a second MAIL through and keeps the recipients of
		// the first (RFC 5321 4.1.4 wants 503 here).
		return replyError(statusNestedMail)
	}
	if srv.RequireAuth && s.info.AuthUser == "" {
		return s.refuse("auth", from, "", statusAuthRequired)
	}
	if !acceptableAddress(from) {
		return s.refuse("address", from, "", mail.StatusBadSender)
	}
	max := srv.maxMessageBytes()
	if opts != nil && opts.Size > 0 && max > 0 && opts.Size > max {
		return s.refuse("size", from, "", mail.StatusTooBig)
	}
	utf8 := opts != nil && opts.UTF8
	info := s.snapshot(utf8)
	if srv.Handler == nil {
		return replyError(statusNoHandler)
	}
	if err := statusReply(srv.Handler.Sender(s.sc.ctx, &info, from)); err != nil {
		return err
	}
	s.sc.newTransaction()
	s.mu.Lock()
	s.from, s.utf8, s.rcpts, s.tx = from, utf8, nil, info
	s.mu.Unlock()
	s.sc.busy.Store(true)
	// go-smtp has by now checked a SIZE parameter against its limit, which
	// is also what it advertises in EHLO. Its data reader would count the
	// limit in wire bytes (CRLF) and refuse to be drained past it; the
	// server counts stored bytes itself (mail.BodyReader), so go-smtp's
	// limit is off for the transaction and back on at Reset.
	s.sc.engine.MaxMessageBytes = 0
	return nil
}

// acceptableAddress reports whether an address from MAIL or RCPT may enter
// the queue: shorter than qmail's bound, and with an SMTP form again, so
// that what came in over SMTP can leave over SMTP (go-smtp's parser lets
// control characters through in quoted local parts and domains).
func acceptableAddress(a string) bool {
	return mail.ValidAddress(a) && mail.QuotableSMTP(a)
}

func (s *session) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	if s.sc.stopped.Load() {
		return replyError(statusConnError)
	}
	if strings.EqualFold(to, "postmaster") {
		// RCPT TO:<Postmaster> (RFC 5321 4.1.1.3): this host's postmaster.
		to = "postmaster@" + s.srv().hostname()
	}
	s.mu.Lock()
	from, info := s.from, s.tx
	s.mu.Unlock()
	if !acceptableAddress(to) || to == "" {
		return s.refuse("address", from, to, mail.StatusBadAddresses)
	}
	if s.srv().Handler == nil {
		return replyError(statusNoHandler)
	}
	if err := statusReply(s.srv().Handler.Recipient(s.sc.ctx, &info, from, to)); err != nil {
		return err
	}
	s.mu.Lock()
	s.rcpts = append(s.rcpts, to)
	s.mu.Unlock()
	return nil
}

func (s *session) Reset() {
	s.mu.Lock()
	s.from, s.utf8, s.rcpts = "", false, nil
	s.mu.Unlock()
	s.sc.busy.Store(false)
	s.sc.engine.MaxMessageBytes = s.srv().maxMessageBytes()
}

func (s *session) Logout() error {
	s.sc.busy.Store(false)
	return nil
}

// Data reads one message and hands it to the handler. See dataFilter for
// what the server does with line ends, and why it sometimes has to end the
// connection after its reply.
func (s *session) Data(r io.Reader) error {
	srv := s.srv()
	s.mu.Lock()
	env := mail.Envelope{Sender: s.from, Recipients: append([]string(nil), s.rcpts...)}
	info := s.tx
	s.mu.Unlock()

	_, bdat := r.(*io.PipeReader)
	f := newDataFilter(r, bdat)
	defer f.release()
	if !bdat {
		f.dotCR = s.sc.takeDotCR
		s.sc.inData.Store(true)
		defer s.sc.inData.Store(false)
	}
	if len(env.Recipients) == 0 {
		// Cannot happen through go-smtp's checks and the nested-MAIL
		// refusal; never hand a handler an envelope without recipients.
		f.drain()
		return replyError(mail.StatusNoRecipients)
	}
	nul := serve.RefuseNUL(f)
	br := mail.NewBodyReader(nul, srv.maxMessageBytes(), srv.maxHops())
	body := &messageBody{head: info.Received(time.Now()), rest: br}
	var st mail.Status
	if srv.Handler == nil {
		st = statusNoHandler
	} else {
		st = srv.Handler.Deliver(s.sc.ctx, &info, env, body)
	}
	handlerAccepted := st.IsAccept()
	f.drain()

	var se *gosmtp.SMTPError
	switch {
	case f.missedEnd, errors.Is(f.rerr, errDotLineCR):
		// go-smtp would wait for an end of data the client has already
		// sent, or has lost its place in the data after a line
		// "." CR CR LF (scanDotCR): answer now and close.
		s.sc.abort()
		st = statusBareCR
	case errors.As(f.rerr, &se):
		// A read timed out (serverConn.Read); the session is ending.
		return se
	case errors.Is(f.rerr, gosmtp.ErrDataReset):
		// A BDAT transfer abandoned by RSET or a new greeting: go-smtp
		// has answered already and nobody reads this reply.
		st = statusConnError
	case f.rerr != nil && !errors.Is(f.rerr, io.EOF):
		// The connection failed or a line was too long: go-smtp's reader
		// cannot go on, so the session ends after this reply.
		s.sc.abort()
		st = statusConnError
		if errors.Is(f.rerr, gosmtp.ErrTooLongLine) {
			st = statusLongLine
		}
	case f.bareCR:
		st = statusBareCR
	case nul.Err() != nil:
		st = serve.StatusNUL
	case br.Err() != nil:
		st = mail.StatusOf(br.Err())
	}
	if handlerAccepted && !st.IsAccept() {
		srv.logger().Error("smtp handler accepted a message the server refuses",
			"client", addrString(info.RemoteAddr), "status", st.Error())
	}
	// An acceptance goes back as a 250 "error" too: go-smtp writes any
	// *SMTPError from Data as it is, so the handler's text (a queue id)
	// reaches the client instead of go-smtp's fixed "OK: queued".
	return replyError(st)
}

// AuthMechanisms is asked by go-smtp only while it answers EHLO, which makes
// it the one place where the session learns that the client used EHLO and
// not HELO (go-smtp does not say). That is why the Server sets go-smtp's
// AllowInsecureAuth and enforces the TLS requirement here: go-smtp asks only
// when it allows AUTH at all.
func (s *session) AuthMechanisms() []string {
	s.esmtp = true
	if !s.authOffered() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (s *session) authOffered() bool {
	srv := s.srv()
	return srv.Auth != nil && (s.info.TLS != nil || srv.AllowInsecureAuth)
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	srv := s.srv()
	switch {
	case srv.Auth == nil:
		return nil, replyError(statusAuthNone)
	case s.sc.busy.Load():
		return nil, replyError(statusAuthInTx)
	case s.info.TLS == nil && !srv.AllowInsecureAuth:
		return nil, replyError(statusEncryptAuth)
	}
	switch mech {
	case sasl.Plain:
		return &plainServer{s: s}, nil
	case sasl.Login:
		return &loginServer{s: s}, nil
	}
	return nil, replyError(statusAuthMech)
}

// refuse logs a refusal the server decides itself, before the handler is
// asked (the handler logs its own), in the door's one-line form (the
// logger names the protocol), and returns its reply.
func (s *session) refuse(reason, from, rcpt string, st mail.Status) error {
	s.srv().logger().Info("refused", "client", s.info.RemoteIP().String(),
		"from", from, "rcpt", rcpt, "reason", reason, "reply", st.SMTPText(), "code", st.EnhancedCode(),
		"result", st.Outcome())
	return replyError(st)
}
