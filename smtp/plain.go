package smtp

import (
	"bytes"
)

// The server's view of the plaintext stream under go-smtp. Where serverConn
// carries plaintext (a plain connection before any STARTTLS, or an
// implicit-TLS connection, whose TLS the server itself terminates below
// serverConn), it watches what the client sends and rewrites go-smtp's
// fixed reply texts. After go-smtp's own STARTTLS the stream below go-smtp
// is ciphertext and neither happens (go-smtp wraps the connection it was
// given in its own TLS).

// dotCR states: how much of CR LF "." CR has just been read.
const (
	dcNone = iota
	dcCR
	dcCRLF
	dcDot
	dcDotCR
)

// scanDotCR looks for CR LF "." CR followed by anything but LF: go-smtp's
// data reader drops the ".\r" of such a line without a word, so the message
// would be stored with a line the client did not send; the server refuses it
// like any other bare CR (RFC 5321 2.3.8), with 554 5.6.0.
func (sc *serverConn) scanDotCR(p []byte) {
	st := sc.dcState
	for _, c := range p {
		switch {
		case st == dcDotCR && c != '\n':
			sc.dotCR.Store(true)
			st = dcNone
			if c == '\r' {
				st = dcCR
			}
		case c == '\r':
			st = map[bool]int{true: dcDotCR, false: dcCR}[st == dcDot]
		case c == '\n' && (st == dcCR || st == dcDotCR):
			st = dcCRLF
		case c == '.' && st == dcCRLF:
			st = dcDot
		default:
			st = dcNone
		}
	}
	sc.dcState = st
}

// takeDotCR reports, once, whether CR LF "." CR X was read since the last
// call.
func (sc *serverConn) takeDotCR() bool { return sc.dotCR.Swap(false) }

// replyTexts are go-smtp's fixed texts that the server replaces by its own,
// plain ones: the reply code and the start of the text as go-smtp writes
// them, and qmgate's line. A "%s" in the replacement takes the address that
// go-smtp put between the angle brackets.
var replyTexts = []struct {
	prefix, repl string
}{
	{"250 2.0.0 Roger, accepting mail from <", "250 2.0.0 sender <%s> ok"},
	{"250 2.0.0 I'll make sure <", "250 2.0.0 recipient <%s> ok"},
	{"250 2.0.0 I have successfully done nothing", "250 2.0.0 ok"},
	{"250 2.0.0 Session reset", "250 2.0.0 ok"},
	{"354 Go ahead.", "354 end data with <CR><LF>.<CR><LF>"},
	{"221 2.0.0 Bye", "221 2.0.0 closing connection"},
	{"421 4.4.2 Idle timeout, bye bye", "421 4.4.2 timeout, closing connection"},
	{"502 5.5.1 TLS not supported", "502 5.5.1 STARTTLS not available"},
}

// startTLSReply is go-smtp's answer to STARTTLS: what follows is TLS.
var startTLSReply = []byte("220 2.0.0 Ready to start TLS")

// rewrite returns p with go-smtp's fixed texts replaced, line by line, and
// whether it changed anything. It leaves p alone unless it holds whole
// lines.
func (sc *serverConn) rewrite(p []byte) ([]byte, bool) {
	if !bytes.HasSuffix(p, []byte("\r\n")) {
		return p, false
	}
	var out []byte
	changed := false
	for _, line := range bytes.SplitAfter(p, []byte("\r\n")) {
		if bytes.HasPrefix(line, startTLSReply) {
			sc.opaque.Store(true)
		}
		repl := line
		for _, r := range replyTexts {
			if !bytes.HasPrefix(line, []byte(r.prefix)) {
				continue
			}
			text := r.repl
			if i := bytes.IndexByte([]byte(text), '%'); i >= 0 {
				addr := line[len(r.prefix):]
				if j := bytes.LastIndexByte(addr, '>'); j >= 0 {
					addr = addr[:j]
				}
				text = text[:i] + string(addr) + text[i+2:]
			}
			repl, changed = []byte(text+"\r\n"), true
			break
		}
		out = append(out, repl...)
	}
	if !changed {
		return p, false
	}
	return out, true
}
