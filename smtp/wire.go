package smtp

import (
	"bytes"
	"io"
	"sync"
)

// bodyError is a failure to read the stored message (as opposed to a
// failure to write it to the server).
type bodyError struct{ err error }

func (e bodyError) Error() string { return "smtp: reading message: " + e.err.Error() }
func (e bodyError) Unwrap() error { return e.err }

// writeBody copies a stored message to w (go-smtp's DATA writer, which does
// the dot-stuffing and the final "." line) with CR LF line ends only:
//
//   - LF is a line end;
//   - CRs right before an LF belong to that line end (CR LF stays CR LF;
//     CR CR LF does not become the CR CR CR LF that go-smtp's writer would
//     make of it, nor CR CR LF on the wire, which qmail's remote avoids too);
//   - any other CR is a line end of its own (a bare CR must not be sent,
//     RFC 5321 2.3.8; in mail that has one it was meant as a line break);
//   - a last line without a line end gets one (RFC 5321 4.1.1.4 needs the
//     data to end in CR LF before the "."; qmail-remote refuses such a
//     message with #5.6.2 instead, but a gateway is better off delivering
//     what QMTP legitimately carried).
//
// Handing go-smtp's writer canonical CR LF text keeps it from its own
// conversions: it then only doubles dots at line starts.
func writeBody(w io.Writer, body io.Reader) error {
	var conv wireConv
	bufs := wireBufs.Get().(*wireBuf)
	defer wireBufs.Put(bufs)
	in, out := bufs.in[:], bufs.out[:0]
	for {
		n, err := body.Read(in)
		if n > 0 {
			out = conv.convert(out[:0], in[:n])
			if _, werr := w.Write(out); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return bodyError{err}
		}
	}
	if out = conv.finish(out[:0]); len(out) > 0 {
		if _, err := w.Write(out); err != nil {
			return err
		}
	}
	return nil
}

// wireBuf is writeBody's pair of buffers, pooled: one connection may send
// many messages, and a relay many connections.
type wireBuf struct {
	in  [16 << 10]byte
	out [32<<10 + 64]byte
}

var wireBufs = sync.Pool{New: func() any { return new(wireBuf) }}

// wireConv is writeBody's line-end state between reads.
type wireConv struct {
	crs int  // CRs read and not yet placed
	mid bool // inside a line: the last byte out was not a line end
}

var crlf = []byte("\r\n")

func (c *wireConv) convert(out, in []byte) []byte {
	for len(in) > 0 {
		i := bytes.IndexAny(in, "\r\n")
		if i < 0 {
			out = c.flushCRs(out)
			out = append(out, in...)
			c.mid = true
			return out
		}
		if i > 0 {
			out = c.flushCRs(out)
			out = append(out, in[:i]...)
			c.mid = true
		}
		if in[i] == '\r' {
			c.crs++
		} else {
			c.crs = 0
			out = append(out, crlf...)
			c.mid = false
		}
		in = in[i+1:]
	}
	return out
}

// flushCRs places CRs that turned out not to precede an LF: each is a line
// end.
func (c *wireConv) flushCRs(out []byte) []byte {
	for ; c.crs > 0; c.crs-- {
		out = append(out, crlf...)
		c.mid = false
	}
	return out
}

func (c *wireConv) finish(out []byte) []byte {
	out = c.flushCRs(out)
	if c.mid {
		out = append(out, crlf...)
		c.mid = false
	}
	return out
}
