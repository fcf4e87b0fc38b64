package qmtp

import (
	"bytes"
	"io"
)

// crlfReader converts a message sent in QMTP encoding #1 (mode byte '\r') to
// the stored form exactly as qmail-qmtpd.c does (qmtp.txt, encoding #1): each
// CR LF pair becomes LF, a CR not followed by LF is kept (so CR CR LF becomes
// CR LF), a CR that is the last byte of the data is kept, and every other
// byte, bare LF included, passes through.
//
// It converts in place in the caller's buffer. A CR at the end of one read
// cannot be decided until the next byte arrives, so it is held back (cr) and
// decided on the next Read or at EOF; that is the buffer-boundary case a
// naive per-chunk conversion gets wrong.
type crlfReader struct {
	r   io.Reader
	err error // sticky error from r, reported once the held CR is out
	cr  bool  // a CR was read and not yet emitted
	// next is one output byte that did not fit a one-byte Read.
	next    byte
	hasNext bool
}

func (c *crlfReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.hasNext {
		c.hasNext = false
		p[0] = c.next
		return 1, nil
	}
	for {
		if c.cr && len(p) == 1 && c.err == nil {
			return c.readOneAfterCR(p)
		}
		if c.err != nil {
			if c.cr {
				c.cr = false
				p[0] = '\r'
				return 1, nil
			}
			return 0, c.err
		}
		off := 0
		if c.cr {
			// Put the held CR back in front of the new data and let the
			// loop below decide it with its successor in view.
			p[0] = '\r'
			off = 1
			c.cr = false
		}
		n, err := c.r.Read(p[off:])
		c.err = err
		if w := c.convert(p[:off+n]); w > 0 {
			return w, nil
		}
	}
}

// convert rewrites buf in place and returns the number of output bytes. A CR
// in the last position is not written: it sets c.cr instead.
func (c *crlfReader) convert(buf []byte) int {
	i := bytes.IndexByte(buf, '\r')
	if i < 0 {
		return len(buf)
	}
	w := i
	for i < len(buf) {
		// buf[i] is a CR.
		if i+1 == len(buf) {
			c.cr = true
			return w
		}
		if buf[i+1] == '\n' {
			buf[w] = '\n'
			w++
			i += 2
		} else {
			buf[w] = '\r'
			w++
			i++
		}
		// Copy the run up to the next CR.
		j := bytes.IndexByte(buf[i:], '\r')
		if j < 0 {
			j = len(buf) - i
		}
		w += copy(buf[w:], buf[i:i+j])
		i += j
	}
	return w
}

// readOneAfterCR serves a one-byte Read while a CR is held: it needs one byte
// of lookahead that does not fit the caller's buffer.
func (c *crlfReader) readOneAfterCR(p []byte) (int, error) {
	var b [1]byte
	for c.err == nil {
		n, err := c.r.Read(b[:])
		c.err = err
		if n == 0 {
			continue
		}
		switch b[0] {
		case '\n':
			c.cr = false
			p[0] = '\n'
		case '\r':
			p[0] = '\r' // the held CR was lone; the new one is held now
		default:
			c.cr = false
			p[0] = '\r'
			c.next, c.hasNext = b[0], true
		}
		return 1, nil
	}
	c.cr = false
	p[0] = '\r'
	return 1, nil
}
