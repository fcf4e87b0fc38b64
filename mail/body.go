package mail

import (
	"bytes"
	"io"
)

// DefaultMaxHops is qmail-smtpd's loop limit: a message with this many or more
// Received: and Delivered-To: header lines is refused (#5.4.6).
const DefaultMaxHops = 100

// BodyReader passes a message through while enforcing a size limit and
// counting hops in its header, without buffering more than the caller's read.
//
// A hop is a header line that starts with "Received:" or "Delivered-To:",
// ASCII case ignored; the header ends at the first empty line ("\n" or
// "\r\n"), so lines in the body never count. qmail-smtpd matches only the
// prefixes "received" and "delivered", which also counts "Received-SPF:" and
// "Delivered-From:" lines; requiring the colon avoids refusing mail that
// spam filters have annotated at every hop. Read boundaries do not matter:
// the scan keeps its state between calls.
//
// Once a limit is crossed every Read returns the matching Status
// (StatusTooBig or StatusTooManyHops) as its error, so a queue writer copying
// from it aborts instead of committing; the protocol server, which still owns
// the connection, drains what is left and replies with Err().
type BodyReader struct {
	r        io.Reader
	maxBytes int64
	maxHops  int

	n    int64
	hops int
	err  error // sticky limit error

	// header scan state
	body     bool // past the header
	lineLen  int  // bytes of the current line seen so far
	cand     uint8
	skipLine bool
	emptyCR  bool // the current line so far is just "\r"
}

const (
	candReceived uint8 = 1 << iota
	candDelivered
)

var (
	hdrReceived  = "received:"
	hdrDelivered = "delivered-to:"
)

// NewBodyReader returns a reader over r. maxBytes <= 0 means no size limit;
// maxHops <= 0 means no hop counting.
func NewBodyReader(r io.Reader, maxBytes int64, maxHops int) *BodyReader {
	return &BodyReader{r: r, maxBytes: maxBytes, maxHops: maxHops}
}

// Read implements io.Reader.
func (b *BodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	// Never read more than one byte past the limit: the excess is for the
	// protocol server to drain, not for us to pass on. (Written without
	// maxBytes+1, which overflows for a limit of math.MaxInt64.)
	if b.maxBytes > 0 && int64(len(p))-1 > b.maxBytes-b.n {
		p = p[:b.maxBytes-b.n+1]
	}
	n, err := b.r.Read(p)
	if n > 0 {
		b.n += int64(n)
		if b.maxBytes > 0 && b.n > b.maxBytes {
			b.err = StatusTooBig
			return 0, b.err
		}
		if b.maxHops > 0 && !b.body {
			b.scan(p[:n])
			if b.hops >= b.maxHops {
				b.err = StatusTooManyHops
				return 0, b.err
			}
		}
	}
	return n, err
}

// scan advances the header state machine over p.
func (b *BodyReader) scan(p []byte) {
	for i := 0; i < len(p); i++ {
		if b.body {
			return
		}
		c := p[i]
		if b.skipLine && c != '\n' {
			// The rest of a line that cannot be a hop header: jump to
			// its end instead of walking it byte by byte.
			j := bytes.IndexByte(p[i:], '\n')
			b.emptyCR = false
			if j < 0 {
				b.lineLen += len(p) - i
				return
			}
			b.lineLen += j
			i += j
			c = '\n'
		}
		if c == '\n' {
			if b.lineLen == 0 || b.emptyCR {
				b.body = true // blank line: end of header
				return
			}
			b.lineLen, b.skipLine, b.emptyCR = 0, false, false
			continue
		}
		if b.lineLen == 0 {
			b.cand = candReceived | candDelivered
			b.emptyCR = c == '\r'
		} else {
			b.emptyCR = false
		}
		pos := b.lineLen
		b.lineLen++
		if b.skipLine {
			continue
		}
		lc := c
		if lc >= 'A' && lc <= 'Z' {
			lc += 'a' - 'A'
		}
		if b.cand&candReceived != 0 && (pos >= len(hdrReceived) || hdrReceived[pos] != lc) {
			b.cand &^= candReceived
		}
		if b.cand&candDelivered != 0 && (pos >= len(hdrDelivered) || hdrDelivered[pos] != lc) {
			b.cand &^= candDelivered
		}
		switch {
		case b.cand&candReceived != 0 && pos == len(hdrReceived)-1,
			b.cand&candDelivered != 0 && pos == len(hdrDelivered)-1:
			b.hops++
			b.skipLine = true
		case b.cand == 0:
			b.skipLine = true
		}
	}
}

// Err returns the limit the message crossed (StatusTooBig or
// StatusTooManyHops), or nil.
func (b *BodyReader) Err() error { return b.err }

// N returns the number of bytes read so far.
func (b *BodyReader) N() int64 { return b.n }

// Hops returns the number of Received:/Delivered-To: lines seen in the header.
func (b *BodyReader) Hops() int { return b.hops }

// HeaderEnd returns the offset just past the blank line that ends the
// header in b (RFC 5322 section 2.1; LF or CR LF line ends), searching
// from offset from, or -1 when b holds no such line yet. A message that
// starts with a blank line has an empty header.
func HeaderEnd(b []byte, from int) int {
	if bytes.HasPrefix(b, []byte("\n")) {
		return 1
	}
	if bytes.HasPrefix(b, []byte("\r\n")) {
		return 2
	}
	for i := from; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		switch {
		case i+1 < len(b) && b[i+1] == '\n':
			return i + 2
		case i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n':
			return i + 3
		}
	}
	return -1
}
