package rewrite

import (
	"bytes"
	"io"
	"strings"

	"github.com/qmgate/qmgate/mail"
)

// Bounds on header rewriting.
const (
	MaxFieldBytes     = 16 << 10 // an address field longer than this is left alone
	MaxFieldAddresses = 100      // addresses rewritten in one field at most
)

// headerFields maps the fields rewritten to whether AllMailFrom applies.
var headerFields = map[string]bool{"from": true, "sender": true, "reply-to": false}

// canonical spelling of the field names, for Change.Field.
var fieldNames = map[string]string{"from": "From:", "sender": "Sender:", "reply-to": "Reply-To:"}

// Header rewrites the From:, Sender: and Reply-To: fields of a message
// header (the bytes up to and including the blank line, or a prefix of
// them) and returns the new header and what changed. Only the address bytes
// change: display names, comments, folding and line ends stay as they were,
// and every other field is returned byte for byte. With Rules.Headers off,
// or a header larger than the bound, hdr is returned as it is.
func (rw *Rewriter) Header(hdr []byte) ([]byte, Changes) {
	if !rw.headers || len(hdr) > rw.maxHeader || (rw.all == "" && len(rw.users) == 0 && len(rw.hosts) == 0) {
		return hdr, nil
	}
	var out []byte
	var ch Changes
	last := 0
	for start := 0; start < len(hdr); {
		end := fieldEnd(hdr, start)
		colon := bytes.IndexByte(hdr[start:end], ':')
		if colon > 0 {
			name := strings.ToLower(strings.TrimSpace(string(hdr[start : start+colon])))
			if all, ok := headerFields[name]; ok && end-start <= MaxFieldBytes {
				vstart := start + colon + 1
				nv, c := rw.rewriteValue(hdr[vstart:end], all, fieldNames[name])
				if c != nil {
					out = append(out, hdr[last:vstart]...)
					out = append(out, nv...)
					last = end
					ch = append(ch, c...)
				}
			}
		}
		if end == start { // the blank line: the header ends
			break
		}
		start = end
	}
	if ch == nil {
		return hdr, nil
	}
	return append(out, hdr[last:]...), ch
}

// fieldEnd returns the end of the field that starts at i: past its last
// line end, continuation lines included. At a blank line it returns i.
func fieldEnd(h []byte, i int) int {
	if h[i] == '\n' || (h[i] == '\r' && i+1 < len(h) && h[i+1] == '\n') {
		return i
	}
	for {
		nl := bytes.IndexByte(h[i:], '\n')
		if nl < 0 {
			return len(h)
		}
		i += nl + 1
		if i >= len(h) || (h[i] != ' ' && h[i] != '\t') {
			return i
		}
	}
}

// span is the byte range of one address inside a field value.
type span struct{ start, end int }

// addresses finds the addr-specs of an RFC 5322 section 3.4 address list:
// the text inside angle brackets, or a bare address between commas, outside
// quoted strings and comments. Group names (before ':') are skipped. A
// bare element with a comment or space inside is not an address it can
// rewrite without guessing, and is left alone.
func addresses(v []byte) []span {
	var spans []span
	depth, quoted, angle := 0, false, -1
	elem, sawAngle := 0, false
	flush := func(end int) {
		if !sawAngle {
			s, e := trimCFWS(v, elem, end)
			if s < e && bytes.IndexByte(v[s:e], '@') > 0 && !bytes.ContainsAny(v[s:e], " \t\r\n()\"") {
				spans = append(spans, span{s, e})
			}
		}
		elem, sawAngle = end+1, false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case quoted:
			if c == '\\' {
				i++
			} else if c == '"' {
				quoted = false
			}
		case depth > 0:
			if c == '\\' {
				i++
			} else if c == '(' {
				depth++
			} else if c == ')' {
				depth--
			}
		case angle >= 0:
			if c == '>' {
				a := angle + 1
				// An obsolete route (<@a,@b:user@host>) keeps its route.
				if k := bytes.LastIndexByte(v[a:i], ':'); k >= 0 && v[a] == '@' {
					a += k + 1
				}
				if bytes.IndexByte(v[a:i], '@') > 0 {
					spans = append(spans, span{a, i})
				}
				angle = -1
			}
		case c == '"':
			quoted = true
		case c == '(':
			depth = 1
		case c == '<':
			angle, sawAngle = i, true
		case c == ':':
			elem, sawAngle = i+1, false // a group's name ends here
		case c == ',' || c == ';':
			flush(i)
		}
	}
	if !quoted && depth == 0 && angle < 0 {
		flush(len(v))
	}
	return spans
}

// trimCFWS trims white space, line ends and comments around v[s:e].
func trimCFWS(v []byte, s, e int) (int, int) {
	for {
		for s < e && isWSP(v[s]) {
			s++
		}
		for e > s && isWSP(v[e-1]) {
			e--
		}
		if s < e && v[s] == '(' {
			if k := bytes.IndexByte(v[s:e], ')'); k >= 0 {
				s += k + 1
				continue
			}
		}
		if e > s && v[e-1] == ')' {
			if k := bytes.LastIndexByte(v[s:e], '('); k >= 0 {
				e = s + k
				continue
			}
		}
		return s, e
	}
}

func isWSP(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// rewriteValue rewrites the addresses in one field value.
func (rw *Rewriter) rewriteValue(v []byte, all bool, field string) ([]byte, Changes) {
	spans := addresses(v)
	if len(spans) > MaxFieldAddresses {
		spans = spans[:MaxFieldAddresses]
	}
	var out []byte
	var ch Changes
	last := 0
	for _, s := range spans {
		old := string(v[s.start:s.end])
		n, ok := rw.sender(old, all)
		if !ok {
			continue
		}
		out = append(out, v[last:s.start]...)
		out = append(out, n...)
		last = s.end
		ch = append(ch, Change{Field: field, Old: old, New: n})
	}
	if ch == nil {
		return v, nil
	}
	return append(out, v[last:]...), ch
}

// Reader rewrites the header of the message read from r as it passes and
// leaves the body untouched; only the header (up to Rules.MaxHeaderBytes) is
// held. Changes is complete once the header has been read.
type Reader struct {
	rw      *Rewriter
	r       io.Reader
	buf     []byte // rewritten header, then pass-through
	done    bool
	changes Changes
}

// NewReader starts rewriting the header of the message in r.
func (rw *Rewriter) NewReader(r io.Reader) *Reader { return &Reader{rw: rw, r: r} }

// Changes returns what the header rewriting changed.
func (r *Reader) Changes() Changes { return r.changes }

func (r *Reader) Read(p []byte) (int, error) {
	if !r.done {
		if err := r.fill(); err != nil {
			return 0, err
		}
	}
	if len(r.buf) > 0 {
		n := copy(p, r.buf)
		r.buf = r.buf[n:]
		return n, nil
	}
	return r.r.Read(p)
}

// fill reads the header (or MaxHeaderBytes of it) and rewrites it.
func (r *Reader) fill() error {
	chunk := make([]byte, 4096)
	from := 0 // where the blank line may start: earlier bytes were searched
	for {
		if end := mail.HeaderEnd(r.buf, from); end >= 0 {
			h, ch := r.rw.Header(r.buf[:end])
			r.changes = ch
			r.buf = append(h[:len(h):len(h)], r.buf[end:]...)
			r.done = true
			return nil
		}
		if len(r.buf) > r.rw.maxHeader {
			r.done = true // too long to rewrite: pass it through
			return nil
		}
		from = max(0, len(r.buf)-2)
		n, err := r.r.Read(chunk)
		r.buf = append(r.buf, chunk[:n]...)
		if err == io.EOF {
			// A message that is all header.
			h, ch := r.rw.Header(r.buf)
			r.changes, r.buf, r.done = ch, h, true
			return nil
		}
		if err != nil {
			return err
		}
	}
}
