package mail

import (
	"errors"
	"strconv"
	"strings"
)

// Class says whether a message or recipient was accepted, refused for now, or
// refused for good.
//
// The zero value is Temporary on purpose: a Status that nobody filled in must
// never read as an acceptance, and an unknown outcome must never read as a
// permanent refusal (DESIGN.md: unknown errors are temporary).
type Class uint8

const (
	Temporary Class = iota // try again later: QMTP/QMQP 'Z', SMTP 4xx
	Accept                 // accepted with the RFC 1123 5.3.3 duty: 'K', SMTP 2xx
	Permanent              // refused for good: 'D', SMTP 5xx
)

// classWords are each class's names, indexed by Class.
var classWords = [...]classWord{
	Temporary: {"temporary", "deferred", "deferred", 'Z', '4', "4.3.0"},
	Accept:    {"accept", "delivered", "accepted", 'K', '2', "2.0.0"},
	Permanent: {"permanent", "failed", "refused", 'D', '5', "5.0.0"},
}

type classWord struct {
	name, result  string
	outcome       string // of a Status, see Outcome
	letter, digit byte   // the reply letter; the first digit of the codes
	code          string // the default enhanced code
}

// words are the class's names; a value outside the three constants reads
// as Temporary.
func (c Class) words() classWord {
	if int(c) >= len(classWords) {
		c = Temporary
	}
	return classWords[c]
}

func (c Class) String() string { return c.words().name }

// DeliveryResult names the class as the result of a delivery attempt, for
// people and logs: "delivered", "deferred" or "failed" (never a qmail
// letter).
func (c Class) DeliveryResult() string { return c.words().result }

// Letter is the QMTP/QMQP reply letter for the class: K, Z or D.
func (c Class) Letter() byte { return c.words().letter }

// MaxStatusText bounds the text of a Status. Postfix's qmqp-source reads at most
// 10240 bytes of reply, and replies are meant for humans; 512 is plenty.
const MaxStatusText = 512

// Status is the one outcome type of qmgate: every protocol edge renders it
// (QMTP/QMQP replies, SMTP replies, DSN status fields), every transport returns
// it per recipient. It is also an error, so policy code can return it.
type Status struct {
	Class Class
	// Code is the enhanced status code (RFC 3463) without the "#", such as
	// "5.1.3". It may be empty, in which case a default for the class is used
	// when one is needed (2.0.0, 4.3.0, 5.0.0).
	Code string
	// Text is a short human-readable explanation: one line, no address, no
	// internal error detail. Renderers sanitize it anyway.
	Text string
	// SMTP optionally fixes the basic SMTP reply code (such as 552). When zero
	// the code is derived from Class and Code.
	SMTP int
}

// OK returns an acceptance with the given text.
func OK(text string) Status { return Status{Class: Accept, Text: text} }

// Temp returns a temporary failure with an enhanced code such as "4.3.0".
func Temp(code, text string) Status { return Status{Class: Temporary, Code: code, Text: text} }

// Perm returns a permanent failure with an enhanced code such as "5.1.3".
func Perm(code, text string) Status { return Status{Class: Permanent, Code: code, Text: text} }

// Statuses that several packages render identically, with qmail's texts
// (qmail-qmtpd.c, qmail-qmqpd.c, qmail-smtpd.c) where qmail has one.
var (
	StatusTooBig       = Status{Class: Permanent, Code: "5.3.4", Text: "sorry, that message size exceeds my databytes limit", SMTP: 552}
	StatusBadRecipient = Status{Class: Permanent, Code: "5.1.3", Text: "sorry, I can't handle that recipient", SMTP: 553}
	StatusBadSender    = Status{Class: Permanent, Code: "5.1.7", Text: "unacceptable sender", SMTP: 553}
	StatusBadAddresses = Status{Class: Permanent, Code: "5.1.3", Text: "sorry, I can't accept addresses like that", SMTP: 553}
	// StatusUndeliverable refuses an address no transport can deliver
	// safely: control characters, no domain, or a mailbox name local
	// delivery refuses (MailboxName).
	StatusUndeliverable = Status{Class: Permanent, Code: "5.1.3", Text: "sorry, that address is not deliverable"}
	StatusTooManyHops   = Status{Class: Permanent, Code: "5.4.6", Text: "too many hops, this message is looping", SMTP: 554}
	StatusNotRcptHost   = Status{Class: Permanent, Code: "5.7.1", Text: "sorry, that domain isn't in my list of allowed rcpthosts", SMTP: 553}
	StatusNoRecipients  = Status{Class: Permanent, Code: "5.5.1", Text: "no recipients", SMTP: 554}
	// StatusTooManyRcpts is temporary on purpose (RFC 5321 4.5.3.1.10 and
	// RFC 3463 X.5.3): the client sends the excess recipients again in a
	// later transaction instead of bouncing them.
	StatusTooManyRcpts  = Status{Class: Temporary, Code: "4.5.3", Text: "too many recipients", SMTP: 452}
	StatusTempFailure   = Status{Class: Temporary, Code: "4.3.0", Text: "temporary failure"}
	StatusQueueTrouble  = Status{Class: Temporary, Code: "4.3.0", Text: "qq write error or disk full", SMTP: 451}
	StatusShuttingDown  = Status{Class: Temporary, Code: "4.3.2", Text: "service shutting down", SMTP: 421}
	StatusTooManyConns  = Status{Class: Temporary, Code: "4.3.2", Text: "too many connections, try again later", SMTP: 421}
	StatusNoReply       = Status{Class: Temporary, Code: "4.4.2", Text: "no reply from remote host"}
	StatusBadReply      = Status{Class: Temporary, Code: "4.3.0", Text: "remote host did not talk proper protocol"}
	StatusConnectFailed = Status{Class: Temporary, Code: "4.4.1", Text: "could not connect to remote host"}
)

// Error makes a Status usable as an error. The string is the QMTP-style reply
// without the letter, prefixed by the class, for logs.
func (s Status) Error() string {
	return s.Class.String() + ": " + string(s.Reply()[1:])
}

// Outcome is the status's class in the words a person reads: "accepted",
// "deferred" (temporary) or "refused" (permanent).
func (s Status) Outcome() string { return s.Class.words().outcome }

// Describe renders the status for a person, without the wire's status
// letter: "deferred: could not connect to remote host (#4.4.1)".
func (s Status) Describe() string { return s.Outcome() + ": " + string(s.Reply()[1:]) }

// IsAccept reports whether the status is an acceptance.
func (s Status) IsAccept() bool { return s.Class == Accept }

// IsPermanent reports whether the status is a permanent failure.
func (s Status) IsPermanent() bool { return s.Class == Permanent }

// IsTemporary reports whether the status is a temporary failure. A Class
// value outside the three constants counts as temporary, like everything
// else unknown.
func (s Status) IsTemporary() bool { return s.class() == Temporary }

// class is Class with unknown values folded into Temporary.
func (s Status) class() Class {
	if s.Class == Accept || s.Class == Permanent {
		return s.Class
	}
	return Temporary
}

// classDigit is the first digit of the enhanced and basic codes of the
// class: 2, 4 or 5.
func (s Status) classDigit() byte { return s.Class.words().digit }

// EnhancedCode returns the enhanced status code, or a default for the class
// (2.0.0, 4.3.0 or 5.0.0) when Code is empty, malformed or of another class:
// the class always wins, so the rendering can never contradict itself.
func (s Status) EnhancedCode() string {
	if validEnhanced(s.Code) && s.Code[0] == s.classDigit() {
		return s.Code
	}
	return s.Class.words().code
}

// EnhancedCodeParts returns the enhanced code as three integers, the form
// go-smtp's SMTPError wants.
func (s Status) EnhancedCodeParts() [3]int {
	var out [3]int
	parts := strings.SplitN(s.EnhancedCode(), ".", 3)
	for i := range parts {
		out[i], _ = strconv.Atoi(parts[i])
	}
	return out
}

// SMTPCode returns the basic SMTP reply code for the status: SMTP when set and
// of the same class, otherwise one derived from the enhanced code:
//
//	accept                          250
//	4.2.2 4.3.1 (storage) 4.5.3     452
//	other temporary                 451
//	5.2.2 5.2.3 5.3.4 (size)        552
//	5.1.3 5.1.7 (address syntax)    553
//	other 5.1.x, 5.7.x (refused)    550
//	5.5.x (protocol syntax)         501
//	other permanent                 554
func (s Status) SMTPCode() int {
	if s.SMTP >= 200 && s.SMTP < 600 && byte('0'+s.SMTP/100) == s.classDigit() {
		return s.SMTP
	}
	c := s.EnhancedCode()
	switch s.class() {
	case Accept:
		return 250
	case Temporary:
		switch c {
		case "4.2.2", "4.3.1", "4.5.3":
			return 452
		}
		return 451
	}
	switch {
	case c == "5.2.2" || c == "5.2.3" || c == "5.3.4":
		return 552
	case c == "5.1.3" || c == "5.1.7":
		return 553
	case strings.HasPrefix(c, "5.1.") || strings.HasPrefix(c, "5.7."):
		return 550
	case strings.HasPrefix(c, "5.5."):
		return 501
	}
	return 554
}

// SMTPText returns the text for an SMTP reply (without code), sanitized, with
// the same defaults as Reply ("ok", "failure") when Text is empty.
func (s Status) SMTPText() string {
	t := s.sanitized()
	if t == "" {
		if s.class() == Accept {
			return "ok"
		}
		return "failure"
	}
	return t
}

// Reply renders the status as a QMTP/QMQP reply body (without the netstring
// framing): the letter, the sanitized text, and for failures the enhanced
// code in qmail's "(#x.y.z)" form.
func (s Status) Reply() []byte {
	return s.AppendReply(nil)
}

// AppendReply appends the rendering of Reply to dst.
func (s Status) AppendReply(dst []byte) []byte {
	dst = append(dst, s.class().Letter())
	dst = append(dst, s.SMTPText()...)
	if s.class() != Accept {
		dst = append(dst, " (#"...)
		dst = append(dst, s.EnhancedCode()...)
		dst = append(dst, ')')
	}
	return dst
}

// sanitized returns Text made safe for every protocol: one line of printable
// ASCII (other bytes become '?'), '#' only in codes (it becomes a space), no
// leading space (reserved in QMTP), at most MaxStatusText bytes.
func (s Status) sanitized() string {
	t := s.Text
	if len(t) > MaxStatusText {
		t = t[:MaxStatusText]
	}
	clean := true
	for i := 0; i < len(t); i++ {
		if c := t[i]; c < 0x20 || c > 0x7e || c == '#' {
			clean = false
			break
		}
	}
	if !clean {
		b := []byte(t)
		for i, c := range b {
			switch {
			case c == '\r' || c == '\n' || c == '\t' || c == '#':
				b[i] = ' '
			case c < 0x20 || c > 0x7e:
				b[i] = '?'
			}
		}
		t = string(b)
	}
	return strings.TrimLeft(t, " ")
}

// validEnhanced reports whether c looks like class.subject.detail with one
// class digit and one to three digits per other part.
func validEnhanced(c string) bool {
	part, digits := 0, 0
	for i := 0; i < len(c); i++ {
		switch ch := c[i]; {
		case ch >= '0' && ch <= '9':
			digits++
			if digits > 3 || part == 0 && digits > 1 {
				return false
			}
		case ch == '.' && digits > 0 && part < 2:
			part, digits = part+1, 0
		default:
			return false
		}
	}
	return part == 2 && digits > 0
}

// ParseReply reads a QMTP/QMQP reply body (the netstring's data). K is an
// acceptance, D a permanent failure; Z, an empty reply and any other first
// byte are temporary (qmtp.txt and qmqp.txt: only a received D is permanent). A
// trailing "(#x.y.z)" (trailing white space allowed) becomes the Code and is
// removed from the Text; a code whose class contradicts the letter is
// dropped, because the letter decides. The Text is kept raw: renderers
// sanitize it.
func ParseReply(b []byte) Status {
	if len(b) == 0 {
		return StatusBadReply
	}
	var st Status
	switch b[0] {
	case 'K':
		st.Class = Accept
	case 'D':
		st.Class = Permanent
	case 'Z':
		st.Class = Temporary
	default:
		return StatusBadReply
	}
	text := string(b[1:])
	trimmed := strings.TrimRight(text, " \t\r\n")
	if i := strings.LastIndex(trimmed, "(#"); i >= 0 && strings.HasSuffix(trimmed, ")") {
		code := trimmed[i+2 : len(trimmed)-1]
		if validEnhanced(code) {
			if code[0] == st.classDigit() {
				st.Code = code
			}
			text = strings.TrimRight(trimmed[:i], " \t")
		}
	}
	st.Text = text
	return st
}

// StatusOf turns any error into a Status: a Status (or an error wrapping one)
// is returned as it is; nil is an acceptance; anything else is a temporary
// failure with a generic text, so internal error text never reaches a client.
func StatusOf(err error) Status {
	if err == nil {
		return OK("")
	}
	var st Status
	if errors.As(err, &st) {
		return st
	}
	var sp *Status
	if errors.As(err, &sp) && sp != nil {
		return *sp
	}
	return StatusTempFailure
}
