// Package netstring reads and writes D. J. Bernstein's netstrings
// (len ":" data ","), the framing of QMTP and QMQP, without ever trusting a
// declared length.
//
// The Reader streams: Next hands the data out as an io.Reader bounded to the
// declared length, so a 1 GiB message flows through a small buffer and a
// declared length never allocates memory before its bytes arrive. The caller
// gives the limit for each netstring; lengths are parsed with a cap on digits
// and on value, so no input can overflow an integer.
//
// Leniency is a documented choice (netstrings.txt asks for no leading zeros): like qmail and Postfix,
// the Reader accepts leading zeros ("007:") and an empty length (":" for 0)
// unless Strict is set. Non-digits, overflow, a length over the caller's
// limit, a missing comma and truncation are distinct errors. The writer is
// strict: minimal decimal, never a leading zero.
//
// The package knows nothing of mail.
package netstring

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// MaxDigits bounds the length field, leading zeros included. 20 digits hold
// any int64 with room for one leading zero; qmail's own bound (a value over
// 200,000,000 followed by another byte) is far below.
const MaxDigits = 20

// Errors. Each malformation has its own, so callers can log what happened;
// all of them mean the stream is no longer in sync and must be dropped.
var (
	// ErrNotDigit: a byte other than a digit or ':' in the length.
	ErrNotDigit = errors.New("netstring: non-digit in length")
	// ErrOverflow: more than MaxDigits digits, or a value beyond int64.
	ErrOverflow = errors.New("netstring: length overflows")
	// ErrTooLong: a well-formed length greater than the caller's limit.
	ErrTooLong = errors.New("netstring: length exceeds limit")
	// ErrComma: the byte after the data is not ','.
	ErrComma = errors.New("netstring: missing comma")
	// ErrLeadingZero and ErrEmptyLength are returned only in Strict mode.
	ErrLeadingZero = errors.New("netstring: leading zero in length")
	ErrEmptyLength = errors.New("netstring: empty length")
	// ErrPending: Next or ReadLength called before the previous netstring's
	// data was consumed and its comma checked with End.
	ErrPending = errors.New("netstring: previous netstring not finished")
)

// Reader reads a sequence of netstrings from a byte stream.
type Reader struct {
	r *bufio.Reader
	// Strict rejects leading zeros and the empty length, as the netstring
	// specification does. The default accepts them as qmail and Postfix do.
	Strict bool

	remain   int64  // data bytes of the current netstring not yet read
	pending  bool   // inside a netstring: data and/or comma not yet consumed
	err      error  // sticky error
	consumed int64  // bytes taken from the stream, see Consumed
	gen      uint64 // counts netstrings, so a stale data reader reads nothing
}

// NewReader returns a Reader on r. If r is already a *bufio.Reader it is used
// as it is, so a caller can keep peeking at the same buffer.
func NewReader(r io.Reader) *Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 16<<10)
	}
	return &Reader{r: br}
}

// Buffered returns the number of bytes buffered and not yet consumed, which a
// server uses to decide whether to flush replies before the next read.
func (r *Reader) Buffered() int { return r.r.Buffered() }

// Consumed returns the number of bytes consumed from the stream so far.
func (r *Reader) Consumed() int64 { return r.consumed }

// ReadLength reads a length field and its colon and returns the value. It
// fails with ErrTooLong if the value is over limit (limit < 0 means no limit
// beyond int64). After it, exactly n data bytes and a comma must be read,
// through Data/Read and End.
func (r *Reader) ReadLength(limit int64) (int64, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.pending {
		return 0, ErrPending
	}
	var v int64
	digits := 0
	leadingZero := false
	for {
		c, err := r.r.ReadByte()
		if err != nil {
			if err == io.EOF && digits > 0 {
				err = io.ErrUnexpectedEOF
			}
			return 0, r.fail(err)
		}
		r.consumed++
		if c == ':' {
			break
		}
		if c < '0' || c > '9' {
			return 0, r.fail(ErrNotDigit)
		}
		if digits == 0 && c == '0' {
			leadingZero = true
		}
		digits++
		if digits > MaxDigits {
			return 0, r.fail(ErrOverflow)
		}
		d := int64(c - '0')
		if v > (1<<63-1-d)/10 {
			return 0, r.fail(ErrOverflow)
		}
		v = v*10 + d
	}
	if r.Strict {
		if digits == 0 {
			return 0, r.fail(ErrEmptyLength)
		}
		if leadingZero && digits > 1 {
			return 0, r.fail(ErrLeadingZero)
		}
	}
	if limit >= 0 && v > limit {
		return v, r.fail(ErrTooLong)
	}
	r.remain = v
	r.pending = true
	r.gen++
	return v, nil
}

// Next reads a length (at most limit) and returns a reader over exactly that
// many data bytes. The data must be read to EOF, or skipped by End, before the
// next netstring. Reading past the end of the underlying stream gives
// io.ErrUnexpectedEOF. The returned reader is valid until End: after that
// it reads as empty, so a reader kept by mistake can never read the data of
// a later netstring.
//
// On ErrTooLong the declared length is returned with the error, for logs.
func (r *Reader) Next(limit int64) (io.Reader, int64, error) {
	n, err := r.ReadLength(limit)
	if err != nil {
		return nil, n, err
	}
	return dataReader{r, r.gen}, n, nil
}

// Remaining returns the number of data bytes of the current netstring not yet
// read.
func (r *Reader) Remaining() int64 { return r.remain }

// dataReader is the io.Reader Next hands out.
type dataReader struct {
	r   *Reader
	gen uint64
}

func (d dataReader) Read(p []byte) (int, error) {
	if d.gen != d.r.gen || !d.r.pending {
		return 0, io.EOF
	}
	return d.r.readData(p)
}

func (r *Reader) readData(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.remain == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.r.Read(p)
	r.remain -= int64(n)
	r.consumed += int64(n)
	if err != nil {
		err = unexpected(err)
		r.fail(err)
		if n > 0 {
			return n, nil
		}
		return 0, err
	}
	return n, nil
}

// ReadByte reads one data byte of the current netstring (io.EOF at its end).
func (r *Reader) ReadByte() (byte, error) {
	var b [1]byte
	n, err := r.readData(b[:])
	if n == 1 {
		return b[0], nil
	}
	if err == nil {
		err = io.EOF
	}
	return 0, err
}

// End discards any unread data of the current netstring and checks its comma.
func (r *Reader) End() error {
	if r.err != nil {
		return r.err
	}
	if !r.pending {
		return nil
	}
	for r.remain > 0 {
		n, err := r.r.Discard(int(min(r.remain, 1<<30)))
		r.remain -= int64(n)
		r.consumed += int64(n)
		if err != nil {
			return r.fail(unexpected(err))
		}
	}
	c, err := r.r.ReadByte()
	if err != nil {
		return r.fail(unexpected(err))
	}
	r.consumed++
	if c != ',' {
		return r.fail(ErrComma)
	}
	r.pending = false
	return nil
}

// ReadBytes reads a whole netstring of at most limit bytes into memory,
// growing the buffer only as bytes arrive. Use it for addresses and replies,
// never for message bodies.
func (r *Reader) ReadBytes(limit int64) ([]byte, error) {
	n, err := r.ReadLength(limit)
	if err != nil {
		return nil, err
	}
	// Allocate at most 4 KiB up front: a hostile length must not
	// allocate before its bytes arrive.
	buf := make([]byte, 0, min(n, 4096))
	for int64(len(buf)) < n {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		want := min(int64(cap(buf)), n)
		m, err := r.readData(buf[len(buf):want])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, unexpected(err)
		}
	}
	if err := r.End(); err != nil {
		return nil, err
	}
	return buf, nil
}

// Err returns the sticky error that stopped the reader, if any.
func (r *Reader) Err() error { return r.err }

// unexpected turns io.EOF inside a netstring into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Malformed reports whether err says the input broke the netstring grammar
// (a non-digit, an overflow, a length over the limit, a missing comma, and
// in Strict mode a leading zero or an empty length), as opposed to an I/O
// error such as a truncation or a timeout.
func Malformed(err error) bool {
	for _, e := range []error{ErrNotDigit, ErrOverflow, ErrTooLong, ErrComma, ErrLeadingZero, ErrEmptyLength} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (r *Reader) fail(err error) error {
	if r.err == nil {
		r.err = err
	}
	return err
}

// Len returns the encoded size of a netstring with n data bytes.
func Len(n int64) int64 {
	return int64(len(strconv.FormatInt(n, 10))) + n + 2
}

// Append appends data as a netstring to dst.
func Append(dst, data []byte) []byte {
	return append(append(AppendHeader(dst, int64(len(data))), data...), ',')
}

// AppendString appends s as a netstring to dst.
func AppendString(dst []byte, s string) []byte {
	return append(append(AppendHeader(dst, int64(len(s))), s...), ',')
}

// AppendHeader appends the length field "n:" of a netstring whose data the
// caller writes next.
func AppendHeader(dst []byte, n int64) []byte {
	dst = strconv.AppendInt(dst, n, 10)
	return append(dst, ':')
}

// Write writes data as one netstring.
func Write(w io.Writer, data []byte) error {
	_, err := w.Write(Append(make([]byte, 0, len(data)+22), data))
	return err
}

// WriteHeader writes the length field "n:".
func WriteHeader(w io.Writer, n int64) error {
	var b [24]byte
	_, err := w.Write(AppendHeader(b[:0], n))
	return err
}

// WriteTrailer writes the closing comma.
func WriteTrailer(w io.Writer) error {
	_, err := w.Write([]byte{','})
	return err
}

// ErrShortBody is returned by WriteFrom when the body reader ends before n
// bytes, or has more than n bytes.
var ErrShortBody = errors.New("netstring: body length differs from declared length")

// WriteFrom writes a netstring of exactly n data bytes streamed from r. If r
// gives fewer or more than n bytes, it returns an error wrapping ErrShortBody
// and the netstring on w is incomplete: the caller must drop the stream.
func WriteFrom(w io.Writer, n int64, r io.Reader) error {
	if n < 0 {
		return fmt.Errorf("%w: negative length %d", ErrShortBody, n)
	}
	if err := WriteHeader(w, n); err != nil {
		return err
	}
	if err := CopyExactly(w, r, n); err != nil {
		return err
	}
	return WriteTrailer(w)
}

// ReadError is an error of the reader that CopyExactly copies from, told
// apart from an error of the writer: the caller's body failed, not the
// connection. Its text is the reader's error's.
type ReadError struct{ Err error }

func (e *ReadError) Error() string { return e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

// sourceReader wraps the errors of r, other than io.EOF, in a *ReadError.
type sourceReader struct{ r io.Reader }

func (s sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &ReadError{err}
	}
	return n, err
}

// CopyExactly copies exactly n bytes from r to w and checks that r has no
// more; it is the body half of WriteFrom for callers that frame themselves.
// An error of r is a *ReadError.
func CopyExactly(w io.Writer, r io.Reader, n int64) error {
	m, err := io.Copy(w, io.LimitReader(sourceReader{r}, n))
	if err != nil {
		return err
	}
	if m != n {
		return fmt.Errorf("%w: got %d of %d bytes", ErrShortBody, m, n)
	}
	var one [1]byte
	if k, _ := io.ReadFull(r, one[:]); k > 0 {
		return fmt.Errorf("%w: more than %d bytes", ErrShortBody, n)
	}
	return nil
}
