package smtp

import (
	"bytes"
	"errors"
	"io"
	"sync"
)

// dataFilter turns the message go-smtp hands over (dot-unstuffed, line ends
// as the client sent them) into the stored form, LF line ends, as it streams.
//
// Line ends. CR LF becomes LF. A bare LF is taken as a line end and stays
// LF: many programs send them, and since go-smtp ends DATA only at
// CR LF "." CR LF, a bare LF can never end the data or smuggle a second
// message in. A CR that is not followed by LF (a "bare CR") makes the message
// unacceptable: RFC 5321 2.3.8 forbids it, and go-smtp's end-of-data scanner
// loses track of lines after CR CR LF, so such input cannot be framed
// reliably. The message is refused with 554 5.6.0.
//
// Framing after a bare CR. go-smtp's scanner, on CR CR, forgets that the
// second CR may start a CR LF: after CR CR LF it neither removes the
// stuffing dot of the next line nor sees a terminating "." there. A client
// whose message ends in CR CR LF "." CR LF would wait for a reply forever
// while go-smtp waits for more data. The filter runs a copy of go-smtp's
// scanner next to a correct one; when the correct one sees the terminator
// that go-smtp missed (missedEnd), the server replies and closes the
// connection, since go-smtp cannot be brought back in step. (go-smtp's
// reader hands data over in full buffers only; when the bare CR and the
// missed terminator both arrive in the last, partly filled one, the server
// sees them, and answers, only when the read times out.)
type dataFilter struct {
	r    io.Reader
	bdat bool // a BDAT transfer: no dot framing at all
	buf  []byte

	err  error // what Read returns once the handler may read no further
	rerr error // the error from r (io.EOF at the end of the data)
	eof  bool

	cr     bool // a CR was read and not yet decided
	bareCR bool // a CR not followed by LF was seen

	// The two end-of-data scanners, over go-smtp's output.
	gs        int  // go-smtp's state: gsBegin, gsData, gsCR
	prevCR    bool // the previous byte was CR (for the correct scanner)
	suspect   int  // progress through "." CR LF at a line go-smtp missed
	missedEnd bool

	// dotCR, when set, reports at the end of the data whether the client
	// sent CR LF "." CR X, which go-smtp's reader hides (see scanDotCR).
	dotCR func() bool

	slowOnly bool // tests: byte by byte throughout
}

// States of go-smtp's end-of-data scanner (its dataReader).
const (
	gsBegin = iota // at a line start, as go-smtp sees it
	gsData
	gsCR
)

// dataBufBytes is the size of a dataFilter's read buffer (go-smtp's data
// reader hands over at most what its own 4 KiB buffer holds per read).
const dataBufBytes = 4096

// dataBufs pools the filters' buffers: a message's buffer is free again
// once its reply is decided, and a busy server takes thousands of
// messages a second.
var dataBufs = sync.Pool{New: func() any { return new([dataBufBytes]byte) }}

func newDataFilter(r io.Reader, bdat bool) *dataFilter {
	return &dataFilter{r: r, bdat: bdat, buf: dataBufs.Get().(*[dataBufBytes]byte)[:]}
}

// release gives the filter's buffer back; the filter is not used again.
func (f *dataFilter) release() {
	if f.buf != nil {
		dataBufs.Put((*[dataBufBytes]byte)(f.buf))
		f.buf = nil
	}
}

// Read gives the handler the stored form. After a bare CR it returns
// the failure: the handler must not commit the message.
func (f *dataFilter) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		// A CR held from the last read is never emitted (it is either part
		// of CR LF or a failure), so the output never outgrows the input.
		raw, err := f.fill(min(len(p), len(f.buf)))
		n, i := 0, 0
		if !f.bareCR && !f.slowOnly {
			n, i = f.fast(raw, p)
		}
		for _, c := range raw[i:] {
			f.scan(c)
			if f.cr {
				f.cr = false
				if c == '\n' {
					p[n] = '\n'
					n++
					continue
				}
				f.bareCR = true
			}
			if c == '\r' {
				f.cr = true
				continue
			}
			p[n] = c
			n++
		}
		if err != nil && f.cr && f.bdat {
			f.cr = false
			f.bareCR = true // a BDAT message that ends in CR
		}
		if (err == io.EOF && f.dotCR != nil && f.dotCR()) || errors.Is(err, errDotLineCR) {
			f.bareCR = true
		}
		if f.bareCR || f.missedEnd {
			f.err = statusBareCR
			return 0, f.err
		}
		if err != nil {
			if err == io.EOF {
				f.err = io.EOF
			} else {
				// The handler learns that the message is incomplete; the
				// reply is decided from rerr (see session.Data).
				f.err = statusConnError
			}
			if n > 0 {
				return n, nil
			}
			return 0, f.err
		}
		if n > 0 {
			return n, nil
		}
	}
}

// fast converts raw into p a span at a time for as long as every CR is
// part of CR LF, and returns the bytes written and consumed; the byte loop in
// Read takes over at a bare CR. Without a bare CR go-smtp's scanner cannot
// have lost its place (see scan), so the scanners' state follows from the
// last bytes alone and needs no byte-by-byte walk.
func (f *dataFilter) fast(raw, p []byte) (n, i int) {
	if f.cr {
		if len(raw) == 0 || raw[0] != '\n' {
			return 0, 0
		}
		f.cr = false
		f.scan('\n')
		p[0] = '\n'
		n, i = 1, 1
	}
	for i < len(raw) {
		j := bytes.IndexByte(raw[i:], '\r')
		if j < 0 {
			j = len(raw) - i
		}
		if j > 0 {
			n += copy(p[n:], raw[i:i+j])
			f.scanNoCR(raw[i : i+j])
			i += j
			continue
		}
		// raw[i] is a CR.
		if i+1 == len(raw) {
			f.scan('\r')
			f.cr = true
			return n, i + 1
		}
		if raw[i+1] != '\n' {
			return n, i
		}
		f.scan('\r')
		f.scan('\n')
		p[n] = '\n'
		n++
		i += 2
	}
	return n, i
}

// scanNoCR is scan over a span without CR, in step with go-smtp: only its
// first byte can end a line.
func (f *dataFilter) scanNoCR(span []byte) {
	f.scan(span[0])
	if len(span) == 1 || f.bdat {
		return
	}
	if f.suspect != 0 {
		// Cannot be without a bare CR; walk it to be exact anyway.
		for _, c := range span[1:] {
			f.scan(c)
		}
		return
	}
	f.gs, f.prevCR = gsData, false
}

// fill reads up to n raw bytes and returns them with the read's error.
func (f *dataFilter) fill(n int) ([]byte, error) {
	if f.eof {
		return nil, f.rerr
	}
	m, err := f.r.Read(f.buf[:n])
	if err != nil {
		f.eof = true
		f.rerr = err
	}
	return f.buf[:m], err
}

// drain reads the rest of the data after the handler is done, running the
// scanners, so that the reply comes after the client's last byte. It stops
// at the end of the data, at an error, or at a terminator go-smtp missed.
func (f *dataFilter) drain() {
	for !f.eof && !f.missedEnd {
		// go-smtp's reader returns only once it has filled the buffer or
		// seen its terminator, so a terminator it missed could sit unseen
		// in a partly filled buffer. Once there has been a bare CR, which
		// is what makes it miss one, read byte by byte: the message is
		// refused anyway, and the reply must not wait for a timeout.
		n := len(f.buf)
		if f.bareCR {
			n = 1
		}
		raw, _ := f.fill(n)
		for _, c := range raw {
			if f.cr && c != '\n' {
				f.bareCR = true
			}
			f.cr = c == '\r'
			f.scan(c)
			if f.missedEnd {
				return
			}
		}
	}
	if f.eof && f.cr && f.bdat {
		f.bareCR = true
	}
}

// scan advances both end-of-data scanners over one byte of go-smtp's output.
// go-smtp's scanner is copied from its dataReader as seen from the output
// side: it leaves a line start only through CR LF, and CR CR sends it back
// into the middle of a line. The correct scanner knows that the line after
// any CR LF begins a new line; where that disagrees with go-smtp and the line
// is exactly "." CR LF, the client has ended its data and go-smtp has not
// noticed. (At a line start go-smtp has already removed a stuffing dot, so
// a "." CR LF there in step with go-smtp is the stuffed line "..".)
func (f *dataFilter) scan(c byte) {
	if f.bdat {
		return
	}
	switch {
	case f.suspect == 0:
	case f.suspect == 1 && c == '.', f.suspect == 2 && c == '\r':
		f.suspect++
	case f.suspect == 3 && c == '\n':
		f.missedEnd, f.suspect = true, 0
	default:
		f.suspect = 0
	}
	lineStart := f.prevCR && c == '\n'
	f.prevCR = c == '\r'
	switch {
	case f.gs == gsCR && c == '\n':
		f.gs = gsBegin
	case f.gs != gsCR && c == '\r':
		f.gs = gsCR
	default:
		f.gs = gsData
	}
	if lineStart && f.gs != gsBegin {
		f.suspect = 1
	}
}

// messageBody is what the handler reads from Deliver: the server's Received
// line, then the message. It is io.MultiReader without the 32 KiB buffer
// that MultiReader's WriteTo makes for each io.Copy of a message.
type messageBody struct {
	head string
	rest io.Reader
}

func (b *messageBody) Read(p []byte) (int, error) {
	if len(b.head) > 0 {
		n := copy(p, b.head)
		b.head = b.head[n:]
		return n, nil
	}
	return b.rest.Read(p)
}

// WriteTo lets io.Copy move the message through a pooled buffer.
func (b *messageBody) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(b.head) > 0 {
		n, err := io.WriteString(w, b.head)
		total += int64(n)
		b.head = b.head[n:]
		if err != nil {
			return total, err
		}
	}
	buf := copyBufs.Get().(*[copyBufBytes]byte)
	defer copyBufs.Put(buf)
	for {
		n, err := b.rest.Read(buf[:])
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
			if m < n {
				return total, io.ErrShortWrite
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// copyBufBytes is messageBody.WriteTo's buffer: twice go-smtp's reads.
const copyBufBytes = 8 << 10

var copyBufs = sync.Pool{New: func() any { return new([copyBufBytes]byte) }}
