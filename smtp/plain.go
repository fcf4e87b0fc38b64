package smtp

import (
	"bytes"
	"crypto/tls"
	"errors"
	"strings"
)

// The server's view of the plaintext stream under go-smtp. The server
// terminates TLS itself, implicit TLS and STARTTLS alike, below serverConn
// (go-smtp's own STARTTLS would wrap the connection it was given, and
// nothing below it could see the plaintext); so serverConn watches what the
// client sends and rewrites go-smtp's fixed reply texts on every
// connection.

// dotCR states: how much of CR LF "." CR has just been read, and whether a
// CR followed it.
const (
	dcNone = iota
	dcCR
	dcCRLF
	dcDot
	dcDotCR
	dcDotCRCR
)

// errDotLineCR is what Read returns inside DATA once the client has sent a
// line "." CR CR LF: go-smtp's data reader has dropped the ".\r", taken the
// line end for the middle of a line, and now waits for data the client may
// never send.
var errDotLineCR = errors.New("smtp: dot line ending in CR CR LF")

// scanDotCR looks for CR LF "." CR followed by anything but LF: go-smtp's
// data reader drops the ".\r" of such a line without a word, so the message
// would be stored with a line the client did not send; the server refuses it
// like any other bare CR (RFC 5321 2.3.8), with 554 5.6.0.
//
// When the line is "." CR CR LF, go-smtp also loses its place: it takes the
// LF for the middle of a line, so it would miss a terminator on the next
// line, and a client that meant the line as its end of data waits for a
// reply while go-smtp waits for more data. The server cannot bring go-smtp
// back in step, so it refuses the message at once and closes the connection
// after the reply (dotLine, Read).
func (sc *serverConn) scanDotCR(p []byte) {
	st := sc.dcState
	for i := 0; i < len(p); i++ {
		if st == dcNone {
			// Only a CR leaves dcNone: skip to the next one.
			j := bytes.IndexByte(p[i:], '\r')
			if j < 0 {
				break
			}
			i += j
		}
		c := p[i]
		switch {
		case st == dcDotCRCR && c == '\n':
			sc.dotLine.Store(true)
			st = dcCRLF
		case st == dcDotCR && c != '\n':
			sc.dotCR.Store(true)
			st = dcNone
			if c == '\r' {
				st = dcDotCRCR
			}
		case c == '\r' && st == dcDot:
			st = dcDotCR
		case c == '\r':
			st = dcCR
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

// newTransaction forgets what was read before a mail transaction: it is not
// the transaction's data.
func (sc *serverConn) newTransaction() {
	sc.dotCR.Store(false)
	sc.dotLine.Store(false)
}

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
}

// go-smtp's reply to STARTTLS, which it is never configured for, and the
// line of its EHLO reply after which the server offers STARTTLS itself.
var (
	noTLSReply  = []byte("502 5.5.1 TLS not supported\r\n")
	chunkingCap = []byte("250-CHUNKING\r\n")
)

// tlsOffered reports whether STARTTLS is to be offered and accepted.
func (sc *serverConn) tlsOffered() bool { return sc.srv.TLSConfig != nil && sc.tlsConn == nil }

// startTLSLine answers a STARTTLS command (RFC 3207).
func (sc *serverConn) startTLSLine() []byte {
	switch {
	case !sc.tlsOffered():
		return []byte("502 5.5.1 STARTTLS not available\r\n")
	case !endsWithStartTLS(sc.lastRead):
		// The client sent more after STARTTLS: plaintext that would
		// otherwise be taken as sent under TLS (RFC 3207 5).
		sc.closeAfterReply()
		return []byte("421 4.7.0 commands after STARTTLS, closing connection\r\n")
	case sc.busy.Load():
		return []byte("503 5.5.1 STARTTLS not permitted during a mail transaction\r\n")
	}
	sc.startTLS = true
	return []byte("220 2.0.0 ready to start TLS\r\n")
}

// endsWithStartTLS reports whether b ends with the STARTTLS command line:
// nothing was read after it.
func endsWithStartTLS(b []byte) bool {
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	return len(b) >= 8 && bytes.EqualFold(b[len(b)-8:], []byte("STARTTLS"))
}

// handshake turns TLS on after the reply that accepted STARTTLS, and makes
// the session forget what it knew from before (RFC 3207 4.2).
func (sc *serverConn) handshake() error {
	tc := tls.Server(sc.Conn, sc.srv.TLSConfig)
	sc.mu.Lock()
	sc.Conn.SetDeadline(sc.tm.Deadline(sc.tm.ReadTimeout))
	sc.mu.Unlock()
	if err := tc.Handshake(); err != nil {
		sc.srv.logger().Info("smtp TLS handshake failed", "client", addrString(sc.info.RemoteAddr), "err", err)
		sc.stopped.Store(true)
		return err
	}
	sc.tlsConn, sc.stream = tc, tc
	sc.lastRead = sc.lastRead[:0]
	if s := sc.sess; s != nil {
		st := tc.ConnectionState()
		s.info.TLS = &st
		s.info.AuthUser = ""
	}
	return nil
}

// logSyntax logs the syntax refusals (500 and 501: a command go-smtp could
// not parse, a malformed MAIL or RCPT argument or parameter, a malformed
// AUTH response) in the same one-line form as the server's other refusals
// (session.refuse). go-smtp answers most of them itself, without asking the
// session, so they are taken from the replies on their way out.
func (sc *serverConn) logSyntax(p []byte) {
	for rest := p; len(rest) > 0; {
		var line []byte
		line, rest = nextLine(rest)
		if len(line) < 6 || line[3] != ' ' || line[0] != '5' || line[1] != '0' ||
			(line[2] != '0' && line[2] != '1') {
			continue
		}
		text := string(bytes.TrimSuffix(line[4:], crlf))
		code := ""
		if i := strings.IndexByte(text, ' '); i > 0 && strings.Count(text[:i], ".") == 2 {
			code, text = text[:i], text[i+1:]
		}
		sc.srv.logger().Info("refused", "client", sc.info.RemoteIP().String(), "reason", "syntax",
			"reply", text, "code", code, "result", "refused")
	}
}

// nextLine splits p after its first CR LF (all of p when it has none).
func nextLine(p []byte) (line, rest []byte) {
	i := bytes.Index(p, crlf)
	if i < 0 {
		return p, nil
	}
	return p[:i+2], p[i+2:]
}

// rewrite returns p with go-smtp's fixed texts replaced, line by line, and
// whether it changed anything. It leaves p alone unless it holds whole
// lines, and copies it only when a line changes.
func (sc *serverConn) rewrite(p []byte) ([]byte, bool) {
	if !bytes.HasSuffix(p, crlf) {
		return p, false
	}
	var out []byte
	changed := false
	for rest := p; len(rest) > 0; {
		start := len(p) - len(rest)
		var line []byte
		line, rest = nextLine(rest)
		if changed {
			var ok bool
			if out, ok = sc.replaceLine(out, line); !ok {
				out = append(out, line...)
			}
			continue
		}
		// The result lives until Write returns (it is written, or copied
		// into pending), so the connection's scratch buffer can hold it.
		repl, ok := sc.replaceLine(sc.rewriteBuf[:0], line)
		if !ok {
			continue
		}
		// The first change: the lines before it stay as they were.
		changed, out = true, repl
		if start > 0 {
			out = append(append(make([]byte, 0, len(p)+len(repl)), p[:start]...), repl...)
		}
	}
	if !changed {
		return p, false
	}
	return out, true
}

// replaceLine appends the replacement of one reply line to dst and
// returns it, or reports that the line stays as it is.
func (sc *serverConn) replaceLine(dst, line []byte) ([]byte, bool) {
	switch {
	case bytes.Equal(line, noTLSReply):
		return append(dst, sc.startTLSLine()...), true
	case bytes.Equal(line, chunkingCap) && sc.tlsOffered():
		return append(append(dst, line...), "250-STARTTLS\r\n"...), true
	}
	for _, r := range replyTexts {
		if !bytes.HasPrefix(line, []byte(r.prefix)) {
			continue
		}
		text := r.repl
		if i := strings.IndexByte(text, '%'); i >= 0 {
			addr := line[len(r.prefix):]
			if j := bytes.LastIndexByte(addr, '>'); j >= 0 {
				addr = addr[:j]
			}
			dst = append(append(append(dst, text[:i]...), addr...), text[i+2:]...)
		} else {
			dst = append(dst, text...)
		}
		return append(dst, crlf...), true
	}
	return dst, false
}
