package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/qmgate/qmgate/mail"
)

// Conn is one SMTP connection made by Client.Dial. It carries messages one
// after the other (Send); it is not safe for concurrent use.
type Conn struct {
	client *Client
	gc     *gosmtp.Client
	cc     *clientConn
	tls    *tls.ConnectionState
	host   string
	broken bool
	// open: a MAIL was accepted and its transaction not finished by a DATA
	// reply, so RSET comes first next time.
	open bool
}

// TLS returns the connection's TLS state, or nil for plaintext.
func (cn *Conn) TLS() *tls.ConnectionState { return cn.tls }

// Broken reports whether the connection can carry no more messages: it
// failed, timed out, or the server said 421. Close it and dial again.
func (cn *Conn) Broken() bool { return cn.broken }

// Reset sends RSET, ending any transaction.
func (cn *Conn) Reset() error {
	if cn.broken {
		return mail.StatusNoReply
	}
	if err := cn.gc.Reset(); err != nil {
		return cn.replyErr(err)
	}
	cn.open = false
	return nil
}

// quitTimeout bounds the wait for the reply to QUIT: nothing depends on it.
const quitTimeout = 10 * time.Second

// Close says QUIT (when the connection is still usable) and closes it.
func (cn *Conn) Close() error {
	if !cn.broken {
		cn.broken = true
		cn.gc.CommandTimeout = quitTimeout
		if err := cn.gc.Quit(); err == nil {
			return nil
		}
	}
	return cn.gc.Close()
}

// fail records that err ended the usefulness of the connection, if it does:
// anything but an SMTP reply, and the reply 421.
func (cn *Conn) fail(err error) {
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code == 421 {
		cn.broken = true
	}
}

// replyErr is the Status for an error of go-smtp's client from one command.
// go-smtp reports a reply with an unexpected code as an error even when the
// code is 2xx (a 250 where DATA wants 354): that is a server out of step,
// never an acceptance.
func (cn *Conn) replyErr(err error) mail.Status {
	cn.fail(err)
	st := clientErrorStatus(err)
	if st.IsAccept() {
		cn.broken = true
		bad := mail.StatusBadReply
		bad.Text += ": " + st.Text
		return bad
	}
	return st
}

// Statuses of the outbound side.
var (
	statusNotSent       = mail.Status{Class: mail.Temporary, Code: "4.4.2", Text: "connection to remote host lost before the message was sent"}
	statusLostInData    = mail.Status{Class: mail.Temporary, Code: "4.4.2", Text: "connection to remote host died while sending the message"}
	statusLostAfterData = mail.Status{Class: mail.Temporary, Code: "4.4.2", Text: "connection to remote host died after the message was sent; possible duplicate"}
	statusNoSMTPUTF8    = mail.Status{Class: mail.Permanent, Code: "5.6.7", Text: "address needs SMTPUTF8, which the remote host does not offer"}
	statusBadBody       = mail.Status{Class: mail.Temporary, Code: "4.3.0", Text: "could not read the message"}
)

// Send delivers one message and returns one Status per recipient of env, in
// order. The error is nil unless the connection broke (then Broken is true
// and the statuses of recipients not yet answered are temporary failures).
//
// body is the stored message, LF line ends. It goes on the wire with CR LF
// line ends and dot-stuffing; CR LF in it stays one line end; a CR not
// followed by LF becomes a line end of its own (a stored bare CR comes from
// QMTP's CR mode; sending it bare would break RFC 5321 2.3.8, and servers
// such as qmgate's own refuse it); a last line without LF gets CR LF (qmail
// refuses such messages with #5.6.2; a gateway should deliver them).
//
// The recipients go into one transaction, driven command by command (go-smtp's
// SendMail stops at the first refused recipient): each RCPT's reply is that
// recipient's status and the others go on; without any accepted recipient
// no DATA is sent; the reply to the message applies to every accepted
// recipient. A VERP sender (pre@host-@[]) is expanded here, per recipient
// (mail.ExpandVERP), which takes one transaction per recipient; for that,
// body must be an io.Seeker (an *os.File from the queue is) or it is
// copied to a temporary file first.
//
// Addresses are quoted for SMTP (mail.QuoteSMTP; go-smtp's client writes
// what it is given between angle brackets). An address that has no
// SMTP form (mail.QuotableSMTP) fails permanently; so does one with
// non-ASCII characters when the server lacks SMTPUTF8 (5.6.7). SIZE is sent
// when the body's size can be learned (io.Seeker) — the stored size, a
// slight underestimate of the wire size; BODY=8BITMIME whenever the server
// offers it (go-smtp's choice, harmless for 7-bit mail), and 8-bit mail goes
// as it is to a server that does not, as qmail sends it.
func (cn *Conn) Send(ctx context.Context, env mail.Envelope, body io.Reader) ([]mail.Status, error) {
	sts := make([]mail.Status, len(env.Recipients))
	done := make([]bool, len(env.Recipients))
	finish := func(err error) ([]mail.Status, error) {
		for i := range sts {
			if !done[i] {
				sts[i] = statusNotSent
			}
		}
		return sts, err
	}
	if cn.broken {
		return finish(errors.New("smtp: connection unusable"))
	}
	if len(env.Recipients) == 0 {
		return sts, nil
	}
	stop := context.AfterFunc(ctx, cn.cc.cancel)
	defer func() {
		if !stop() {
			cn.broken = true // cancelled, perhaps just as Send finished
		}
	}()

	size, seeker, start := bodySize(body)
	groups := [][]int{make([]int, len(env.Recipients))}
	for i := range env.Recipients {
		groups[0][i] = i
	}
	verp := mail.IsVERP(env.Sender)
	if verp && len(env.Recipients) > 1 {
		groups = groups[:0]
		for i := range env.Recipients {
			groups = append(groups, []int{i})
		}
		if seeker == nil {
			f, err := spool(body)
			if err != nil {
				cn.client.logger().Error("smtp cannot spool message for VERP", "err", err)
				for i := range sts {
					sts[i], done[i] = statusBadBody, true
				}
				return sts, nil
			}
			defer func() {
				f.Close()
				os.Remove(f.Name())
			}()
			body, seeker, start = f, f, 0
			size, _, _ = bodySize(f)
		}
	}

	for g, idx := range groups {
		if g > 0 {
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				for _, i := range idx {
					sts[i], done[i] = statusBadBody, true
				}
				continue
			}
		}
		from := env.Sender
		if verp {
			from = mail.ExpandVERP(env.Sender, env.Recipients[idx[0]])
		}
		cn.transaction(from, env.Recipients, idx, body, size, sts, done)
		if cn.broken {
			if ctx.Err() != nil {
				return finish(ctx.Err())
			}
			return finish(errors.New("smtp: connection to " + cn.host + " lost"))
		}
	}
	return finish(nil)
}

// transaction runs MAIL, RCPT for the recipients idx, DATA.
func (cn *Conn) transaction(from string, rcpts []string, idx []int, body io.Reader, size int64, sts []mail.Status, done []bool) {
	set := func(i int, st mail.Status) { sts[i], done[i] = st, true }
	setEach := func(is []int, st mail.Status) {
		for _, i := range is {
			set(i, st)
		}
	}
	if cn.open {
		if err := cn.Reset(); err != nil {
			return
		}
	}
	if !mail.QuotableSMTP(from) {
		setEach(idx, mail.Status{Class: mail.Permanent, Code: "5.1.7", Text: "sender address has no SMTP form"})
		return
	}
	hasUTF8, _ := cn.gc.Extension("SMTPUTF8")
	needUTF8 := !isASCII(from)
	if needUTF8 && !hasUTF8 {
		setEach(idx, statusNoSMTPUTF8)
		return
	}
	var send []int
	for _, i := range idx {
		switch r := rcpts[i]; {
		case !mail.QuotableSMTP(r) || r == "":
			set(i, mail.StatusBadRecipient)
		case !isASCII(r) && !hasUTF8:
			set(i, statusNoSMTPUTF8)
		default:
			needUTF8 = needUTF8 || !isASCII(r)
			send = append(send, i)
		}
	}
	if len(send) == 0 {
		return
	}

	opts := &gosmtp.MailOptions{UTF8: needUTF8}
	if ok, _ := cn.gc.Extension("SIZE"); ok && size > 0 {
		opts.Size = size
	}
	if err := cn.gc.Mail(mail.QuoteSMTP(from), opts); err != nil {
		setEach(send, cn.replyErr(err))
		return
	}
	cn.open = true
	var accepted []int
	for _, i := range send {
		if err := cn.gc.Rcpt(mail.QuoteSMTP(rcpts[i]), nil); err != nil {
			set(i, cn.replyErr(err))
			if cn.broken {
				return
			}
			continue
		}
		accepted = append(accepted, i)
	}
	if len(accepted) == 0 {
		return
	}
	w, err := cn.gc.Data()
	if err != nil {
		setEach(accepted, cn.replyErr(err))
		return
	}
	if err := writeBody(w, body); err != nil {
		// When our side failed (bodyError) the connection is in the middle
		// of DATA and cannot be saved without sending a truncated message.
		st := statusLostInData
		if errors.As(err, new(bodyError)) {
			st = statusBadBody
		}
		setEach(accepted, st)
		cn.broken = true
		return
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		var se *gosmtp.SMTPError
		if !errors.As(err, &se) {
			cn.broken = true
			setEach(accepted, statusLostAfterData)
			return
		}
		cn.open = false
		setEach(accepted, cn.replyErr(err))
		return
	}
	cn.open = false
	code, rest := cutEnhanced(resp.StatusText)
	setEach(accepted, replyStatus(250, code, rest))
}

// cutEnhanced splits an enhanced code off the front of a reply text (go-smtp
// does that only for failures); without one it returns EnhancedCodeNotSet
// and s.
func cutEnhanced(s string) (gosmtp.EnhancedCode, string) {
	var ec gosmtp.EnhancedCode
	code, rest, ok := strings.Cut(s, " ")
	parts := strings.Split(code, ".")
	if !ok || len(parts) != 3 {
		return gosmtp.EnhancedCodeNotSet, s
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 || len(p) > 3 {
			return gosmtp.EnhancedCodeNotSet, s
		}
		ec[i] = n
	}
	return ec, rest
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// bodySize returns the number of bytes left in body when it can tell (an
// io.Seeker), with the seeker and its current offset.
func bodySize(body io.Reader) (int64, io.Seeker, int64) {
	s, ok := body.(io.Seeker)
	if !ok {
		return 0, nil, 0
	}
	cur, err := s.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, nil, 0
	}
	end, err := s.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, nil, 0
	}
	if _, err := s.Seek(cur, io.SeekStart); err != nil {
		return 0, nil, 0
	}
	return end - cur, s, cur
}

// spool copies body to an unlinked-on-return temporary file, for VERP
// delivery of a body that cannot be read twice.
func spool(body io.Reader) (*os.File, error) {
	f, err := os.CreateTemp("", "qmgate-smtp-*")
	if err != nil {
		return nil, err
	}
	if _, err = io.Copy(f, body); err != nil {
		err = bodyError{err}
	} else if _, err = f.Seek(0, io.SeekStart); err == nil {
		return f, nil
	}
	f.Close()
	os.Remove(f.Name())
	return nil, err
}
