package smtp

import (
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/qmgate/qmgate/mail"
)

// replyError renders a Status as the one error type go-smtp passes through
// unchanged. go-smtp turns any other error from a Session method into a
// reply carrying err.Error() (554 from Data, 451 elsewhere), which would both
// leak internal text and, for Data, make an unknown failure permanent; so
// every error that leaves a Session method goes through here.
func replyError(st mail.Status) *gosmtp.SMTPError {
	return &gosmtp.SMTPError{
		Code:         st.SMTPCode(),
		EnhancedCode: gosmtp.EnhancedCode(st.EnhancedCodeParts()),
		Message:      st.SMTPText(),
	}
}

// replyLine renders st as one whole SMTP reply line, for the replies the
// server writes itself (a refusal before go-smtp has the connection).
func replyLine(st mail.Status) []byte {
	r := replyError(st)
	return fmt.Appendf(nil, "%d %d.%d.%d %s\r\n", r.Code, r.EnhancedCode[0], r.EnhancedCode[1], r.EnhancedCode[2], r.Message)
}

// statusReply returns nil for an acceptance and the rendered reply otherwise.
// The nil must be an untyped nil: a nil *SMTPError in an error interface
// would read as a failure to go-smtp.
func statusReply(st mail.Status) error {
	if st.IsAccept() {
		return nil
	}
	return replyError(st)
}

// Statuses of the SMTP server that mail has no counterpart for.
var (
	statusAuthRequired    = mail.Status{Class: mail.Permanent, Code: "5.7.0", Text: "authentication required", SMTP: 530}
	statusEncryptAuth     = mail.Status{Class: mail.Permanent, Code: "5.7.11", Text: "encryption required for requested authentication mechanism", SMTP: 538}
	statusAuthFailed      = mail.Status{Class: mail.Permanent, Code: "5.7.8", Text: "authentication failed", SMTP: 535}
	statusAuthTemp        = mail.Status{Class: mail.Temporary, Code: "4.7.0", Text: "temporary authentication failure", SMTP: 454}
	statusAuthAddrBlocked = mail.Status{Class: mail.Temporary, Code: "4.7.0", Text: "too many authentication failures from your address, try again later", SMTP: 421}
	statusAuthTooMany     = mail.Status{Class: mail.Temporary, Code: "4.7.0", Text: "too many authentication failures", SMTP: 421}
	statusAuthNone        = mail.Status{Class: mail.Permanent, Code: "5.5.1", Text: "authentication not available", SMTP: 502}
	statusAuthMech        = mail.Status{Class: mail.Permanent, Code: "5.5.4", Text: "unrecognized authentication type", SMTP: 504}
	statusAuthSyntax      = mail.Status{Class: mail.Permanent, Code: "5.5.2", Text: "malformed authentication response", SMTP: 501}
	statusAuthInTx        = mail.Status{Class: mail.Permanent, Code: "5.5.1", Text: "AUTH not permitted during a mail transaction", SMTP: 503}
	statusBareCR          = mail.Status{Class: mail.Permanent, Code: "5.6.0", Text: "message contains a bare CR; lines must end with CRLF", SMTP: 554}
	statusLongLine        = mail.Status{Class: mail.Permanent, Code: "5.6.0", Text: "message contains an overlong line", SMTP: 554}
	statusTimeout421      = mail.Status{Class: mail.Temporary, Code: "4.4.2", Text: "timeout, closing connection", SMTP: 421}
	statusConnError       = mail.Status{Class: mail.Temporary, Code: "4.4.2", Text: "connection error", SMTP: 451}
	statusNoHandler       = mail.Status{Class: mail.Temporary, Code: "4.3.0", Text: "mail not accepted now", SMTP: 451}
	statusConnRefused     = mail.Status{Class: mail.Temporary, Code: "4.3.0", Text: "service not available, closing connection", SMTP: 421}
	statusNestedMail      = mail.Status{Class: mail.Permanent, Code: "5.5.1", Text: "nested MAIL command", SMTP: 503}
)

// replyStatus maps an SMTP reply from a remote server to a Status: 2xx
// accepts, 4xx is temporary, 5xx permanent, and any other code (a 3xx where
// none belongs, garbage) is temporary, since only an explicit refusal may be
// permanent. The enhanced code is kept when it agrees with the reply's
// class; the remote text is kept, prefixed as qmail-remote does, so that a
// DSN can quote it.
func replyStatus(code int, ec gosmtp.EnhancedCode, msg string) mail.Status {
	var st mail.Status
	switch code / 100 {
	case 2:
		st.Class = mail.Accept
	case 5:
		st.Class = mail.Permanent
	default:
		st.Class = mail.Temporary
	}
	// RFC 5321 4.2.1: the second digit is 0 to 5; anything else is not a
	// reply this client may act on, least of all by bouncing.
	if code < 200 || code > 599 || code/100 == 3 || code/10%10 > 5 {
		st = mail.StatusBadReply
		st.Text = "remote host did not talk proper protocol: " + strconv.Itoa(code) + " " + oneLine(msg)
		return st
	}
	st.SMTP = code
	b := make([]byte, 0, 24+len(msg))
	b = append(b, "remote host said: "...)
	b = strconv.AppendInt(b, int64(code), 10)
	if ec != gosmtp.EnhancedCodeNotSet && ec != gosmtp.NoEnhancedCode && ec[0] == code/100 {
		code := strconv.Itoa(ec[0]) + "." + strconv.Itoa(ec[1]) + "." + strconv.Itoa(ec[2])
		st.Code = code
		b = append(b, ' ')
		b = append(b, code...)
	}
	b = append(b, ' ')
	b = append(b, oneLine(msg)...)
	st.Text = string(b)
	return st
}

// oneLine joins a multi-line reply text into one line.
func oneLine(s string) string {
	return strings.TrimSpace(strings.ReplaceAll(strings.ReplaceAll(s, "\r", ""), "\n", " "))
}

// clientErrorStatus maps an error from go-smtp's client to a Status. A reply
// from the server keeps its code and text; anything else (a broken
// connection, a timeout, a reply that is not SMTP) is temporary.
func clientErrorStatus(err error) mail.Status {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return replyStatus(se.Code, se.EnhancedCode, se.Message)
	}
	var pe textproto.ProtocolError
	if errors.As(err, &pe) {
		return mail.StatusBadReply
	}
	if isTimeout(err) {
		return mail.StatusNoReply
	}
	st := mail.StatusNoReply
	st.Text = "connection to remote host failed"
	return st
}
