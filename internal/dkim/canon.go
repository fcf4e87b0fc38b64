package dkim

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"sync"
)

// The relaxed canonicalizations of RFC 6376 section 3.4, written here rather
// than taken from go-msgauth: its Signer runs a goroutine and an io.Pipe per
// signature and allocates a fresh slice for every Write, which cost several
// times the Ed25519 signature itself. These produce the same bytes as
// go-msgauth's relaxed canonicalizer on any input (FuzzCanonical checks it),
// including its treatment of bare LF as CR LF.

// canonBufSize is how many canonical body bytes are gathered before they go
// to the hash, so that SHA-256 sees whole blocks rather than single bytes.
const canonBufSize = 4096

// bodyHash is a streaming relaxed body canonicalizer (RFC 6376 section
// 3.4.4) feeding a hash: runs of space and tab become one space, whitespace
// at the end of a line and empty lines at the end of the body are dropped, a
// bare LF counts as CR LF, and a non-empty body ends with CR LF. It keeps no
// body bytes beyond a fixed buffer, except the line ends it has not yet
// written (a run of empty lines may end the body, and then does not count);
// that run is held as a count when it is plain CR LFs, which it nearly
// always is.
type bodyHash struct {
	h       hash.Hash
	buf     [canonBufSize]byte
	n       int
	wsp     bool // a run of space or tab waits for a non-space byte
	cr      bool // the last byte was CR (for bare-LF fixing)
	written bool // some canonical byte has been written
	// The pending line ends, in order: crlfs plain CR LFs, then the exact
	// bytes in odd (a CR waiting for its LF, or a run with a bare CR).
	crlfs int
	odd   []byte
	small [8]byte // odd's first storage
	// Room for the results, so that finishing allocates nothing: the
	// digest, and the body hash in base64 (the bh= tag).
	sum [sha256.Size]byte
	bh  [44]byte
}

func (c *bodyHash) reset(h hash.Hash) {
	c.h = h
	c.n = 0
	c.wsp, c.cr, c.written = false, false, false
	c.crlfs = 0
	c.odd = c.small[:0]
}

// bodyHashes recycles body hashes, their SHA-256 state and their buffer,
// which a hub signing thousands of messages a second would otherwise
// allocate (over 4 KB) and collect for each one.
var bodyHashes = sync.Pool{New: func() any { return &bodyHash{h: sha256.New()} }}

// newBodyHash returns a reset body hash with SHA-256; putBodyHash takes it
// back once the signatures are made.
func newBodyHash() *bodyHash {
	c := bodyHashes.Get().(*bodyHash)
	c.h.Reset()
	c.reset(c.h)
	return c
}

func putBodyHash(c *bodyHash) {
	if cap(c.odd) > 4<<10 {
		c.odd = nil // a freak run of bare CRs: do not keep its memory
	}
	bodyHashes.Put(c)
}

func (c *bodyHash) put(b byte) {
	if c.n == len(c.buf) {
		c.h.Write(c.buf[:])
		c.n = 0
	}
	c.buf[c.n] = b
	c.n++
}

// flushPending writes the run of line ends before a non-space byte.
func (c *bodyHash) flushPending() {
	for ; c.crlfs > 0; c.crlfs-- {
		c.put('\r')
		c.put('\n')
	}
	for _, b := range c.odd {
		c.put(b)
	}
	c.odd = c.odd[:0]
}

// Write canonicalizes p. Runs of ordinary bytes (neither whitespace nor a
// line end), most of a message, are copied to the buffer whole.
func (c *bodyHash) Write(p []byte) (int, error) {
	lineStart := true // whether a line may start at i, for plainLine
	for i := 0; i < len(p); {
		if lineStart && !c.wsp && !c.cr {
			if n := c.plainLine(p[i:]); n > 0 {
				i += n
				continue
			}
			lineStart = false
		}
		ch := p[i]
		prevCR := c.cr
		c.cr = false
		switch ch {
		case ' ', '\t':
			c.wsp = true
			i++
			continue
		case '\r':
			c.cr = true
			c.wsp = false
			c.pending('\r')
			i++
			continue
		case '\n':
			c.wsp = false
			if !prevCR {
				c.pending('\r')
			}
			c.pending('\n')
			i++
			lineStart = true
			continue
		}
		if c.crlfs > 0 || len(c.odd) > 0 {
			c.flushPending()
		}
		if c.wsp {
			c.put(' ')
			c.wsp = false
		}
		// The span up to the next byte that changes in canonical form
		// (a tab, a line end, a space before whitespace or at the end of
		// p) is already canonical: single spaces between words stay.
		j := i + 1
		for j < len(p) {
			if b := p[j]; lineByte[b] {
				if b != ' ' || j+1 == len(p) || lineByte[p[j+1]] {
					break
				}
				j++ // a single space followed by a word byte
			}
			j++
		}
		c.putRun(p[i:j])
		c.written = true
		i = j
	}
	return len(p), nil
}

// plainLine is Write's fast path for a line that is already canonical but
// for its line end, as most lines of most mail are: text, then CR LF or a
// bare LF, with no tab, no CR, no run of spaces and no space at the end. It
// takes such a line from the start of p, whole, and returns its length with
// the line end; 0 means p does not start with one (or holds no line end),
// and nothing was taken. The searches are the bytes package's vector code,
// where the general loop looks at every byte.
func (c *bodyHash) plainLine(p []byte) int {
	k := bytes.IndexByte(p, '\n')
	if k <= 0 {
		return 0
	}
	line := p[:k]
	if line[k-1] == '\r' {
		line = line[:k-1]
	}
	if len(line) == 0 || line[len(line)-1] == ' ' || bytes.IndexByte(line, '\t') >= 0 ||
		bytes.IndexByte(line, '\r') >= 0 || bytes.Contains(line, doubleSpace) {
		return 0
	}
	if c.crlfs > 0 || len(c.odd) > 0 {
		c.flushPending()
	}
	c.putRun(line)
	c.written = true
	c.crlfs++ // the line end, held until a line with text follows
	return k + 1
}

var doubleSpace = []byte("  ")

// lineByte marks the bytes that end a run of ordinary body bytes.
var lineByte = [256]bool{' ': true, '\t': true, '\r': true, '\n': true}

func (c *bodyHash) putRun(b []byte) {
	if len(b) >= len(c.buf)/2 {
		// Long spans go to the hash directly, after what is buffered.
		c.h.Write(c.buf[:c.n])
		c.n = 0
		c.h.Write(b)
		return
	}
	for len(b) > 0 {
		if c.n == len(c.buf) {
			c.h.Write(c.buf[:])
			c.n = 0
		}
		k := copy(c.buf[c.n:], b)
		c.n += k
		b = b[k:]
	}
}

// pending adds a line-end byte to the run. A run is stored as a count of
// plain CR LFs followed by the exact bytes from the first irregular one on
// (a bare CR), so the common case needs no memory however many empty lines
// there are. After bare-LF fixing every LF follows a CR, so odd holding one
// CR and an LF arriving always make one more plain CR LF.
func (c *bodyHash) pending(b byte) {
	if len(c.odd) == 0 && b == '\r' {
		c.odd = append(c.odd, '\r')
		return
	}
	if len(c.odd) == 1 && c.odd[0] == '\r' && b == '\n' {
		c.odd = c.odd[:0]
		c.crlfs++
		return
	}
	c.odd = append(c.odd, b)
}

// Sum finishes the body and returns its hash, which stays valid until the
// body hash is reset.
func (c *bodyHash) Sum() []byte {
	if c.written {
		c.put('\r')
		c.put('\n')
	}
	c.h.Write(c.buf[:c.n])
	c.n = 0
	return c.h.Sum(c.sum[:0])
}

// SumBase64 is Sum in base64, as the bh= tag has it.
func (c *bodyHash) SumBase64() []byte {
	base64.StdEncoding.Encode(c.bh[:], c.Sum())
	return c.bh[:]
}

// canonHeader appends the relaxed canonical form of one header field (RFC
// 6376 section 3.4.2) and CR LF to dst: the name in lower case without
// surrounding whitespace, a colon, and the value unfolded with every run of
// whitespace made one space and none at either end. A line without a colon
// is taken whole as the name, as go-msgauth's verifier does.
func canonHeader(dst, raw []byte) []byte {
	colon := -1
	for i, b := range raw {
		if b == ':' {
			colon = i
			break
		}
	}
	name, val := raw, raw[:0]
	if colon >= 0 {
		name, val = raw[:colon], raw[colon+1:]
	}
	dst = appendLowerTrim(dst, name)
	dst = append(dst, ':')
	dst = appendCollapsed(dst, val)
	return append(dst, '\r', '\n')
}

func isFWS(b byte) bool { return b == ' ' || b == '\t' || b == '\r' || b == '\n' }

func appendLowerTrim(dst, b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// isSpace is strings.TrimSpace's notion of space for ASCII; the name of a
// field is trimmed as go-msgauth trims it.
func isSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\v' || b == '\f'
}

func appendCollapsed(dst, b []byte) []byte {
	gap := false
	start := len(dst)
	for _, c := range b {
		if isFWS(c) {
			gap = true
			continue
		}
		if gap && len(dst) > start {
			dst = append(dst, ' ')
		}
		gap = false
		dst = append(dst, c)
	}
	return dst
}
