package netstring

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// readAll reads netstrings with ReadBytes until the first error and returns
// the data and that error (io.EOF at a clean end).
func readAll(r *Reader, limit int64) ([]string, error) {
	var out []string
	for {
		b, err := r.ReadBytes(limit)
		if err != nil {
			return out, err
		}
		out = append(out, string(b))
	}
}

// TestReader covers the grammar of netstrings.txt and the leniency qmail's and
// Postfix's parsers show (leading zeros, an empty length),
// in both modes, through ReadBytes.
func TestReader(t *testing.T) {
	const limit = 1000
	tests := []struct {
		name   string
		in     string
		strict bool
		want   []string
		err    error
	}{
		{name: "empty stream", in: "", err: io.EOF},
		{name: "one", in: "5:hello,", want: []string{"hello"}, err: io.EOF},
		{name: "empty data", in: "0:,", want: []string{""}, err: io.EOF},
		{name: "empty data strict", in: "0:,", strict: true, want: []string{""}, err: io.EOF},
		{name: "sequence", in: "1:a,2:bc,0:,3:def,", want: []string{"a", "bc", "", "def"}, err: io.EOF},
		{name: "8-bit clean", in: "4:\x00\xff,\n,", want: []string{"\x00\xff,\n"}, err: io.EOF},
		{name: "data holds colon and comma", in: "3:,:,,", want: []string{",:,"}, err: io.EOF},
		{name: "QMTP empty message", in: "1:\n,", want: []string{"\n"}, err: io.EOF},
		{name: "QMTP reply (spec 8)", in: "21:Kok 838640135 qp 1390,", want: []string{"Kok 838640135 qp 1390"}, err: io.EOF},
		{name: "QMTP recipient list (spec 8)", in: "83:39:Hate.The Quoting@silverton.berkeley.edu,36:\\Backslashes!@silverton.berkeley.EDU,,",
			want: []string{"39:Hate.The Quoting@silverton.berkeley.edu,36:\\Backslashes!@silverton.berkeley.EDU,"}, err: io.EOF},

		// Leniency (qmail getlen(), Postfix netstring_get_length()).
		{name: "leading zeros", in: "005:hello,", want: []string{"hello"}, err: io.EOF},
		{name: "zero zero", in: "00:,", want: []string{""}, err: io.EOF},
		{name: "empty length", in: ":,", want: []string{""}, err: io.EOF},
		{name: "empty length then more", in: ":,1:x,", want: []string{"", "x"}, err: io.EOF},
		{name: "20 digits with leading zeros", in: "00000000000000000005:hello,", want: []string{"hello"}, err: io.EOF},
		{name: "leading zeros strict", in: "005:hello,", strict: true, err: ErrLeadingZero},
		{name: "zero zero strict", in: "00:,", strict: true, err: ErrLeadingZero},
		{name: "empty length strict", in: ":,", strict: true, err: ErrEmptyLength},
		{name: "strict after good ones", in: "1:a,01:b,", strict: true, want: []string{"a"}, err: ErrLeadingZero},

		// Non-digits: a protocol error in both modes.
		{name: "letter", in: "1a:x,", err: ErrNotDigit},
		{name: "letter first", in: "a:", err: ErrNotDigit},
		{name: "space", in: " 5:hello,", err: ErrNotDigit},
		{name: "trailing space", in: "5 :hello,", err: ErrNotDigit},
		{name: "minus", in: "-1:,", err: ErrNotDigit},
		{name: "plus", in: "+1:x,", err: ErrNotDigit},
		{name: "qmail 1.03 quirk not copied", in: "1;:x,", err: ErrNotDigit},
		{name: "garbage after good one", in: "1:a,x", want: []string{"a"}, err: ErrNotDigit},

		// Overflow and the digit cap.
		{name: "2^63", in: "9223372036854775808:", err: ErrOverflow},
		{name: "2^64", in: "18446744073709551616:", err: ErrOverflow},
		{name: "21 digits", in: "000000000000000000001:x,", err: ErrOverflow},
		{name: "endless zeros", in: strings.Repeat("0", 1000), err: ErrOverflow},
		{name: "endless digits", in: strings.Repeat("9", 1000), err: ErrOverflow},
		{name: "max int64 over limit", in: "9223372036854775807:", err: ErrTooLong},

		// The caller's limit.
		{name: "at limit", in: "1000:" + strings.Repeat("x", 1000) + ",", want: []string{strings.Repeat("x", 1000)}, err: io.EOF},
		{name: "one over limit", in: "1001:" + strings.Repeat("x", 1001) + ",", err: ErrTooLong},

		// Comma.
		{name: "wrong comma", in: "5:hello;", err: ErrComma},
		{name: "data too long for length", in: "4:hello,", err: ErrComma},
		{name: "missing comma empty", in: "0:x", err: ErrComma},

		// Truncation anywhere after the first byte is unexpected.
		{name: "length only", in: "5", err: io.ErrUnexpectedEOF},
		{name: "colon only", in: "5:", err: io.ErrUnexpectedEOF},
		{name: "short data", in: "5:hel", err: io.ErrUnexpectedEOF},
		{name: "no comma at EOF", in: "5:hello", err: io.ErrUnexpectedEOF},
		{name: "empty length at EOF", in: ":", err: io.ErrUnexpectedEOF},
		{name: "second truncated", in: "1:a,6", want: []string{"a"}, err: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Whole input at once and one byte per Read must agree.
			for _, src := range []io.Reader{strings.NewReader(tt.in), iotest.OneByteReader(strings.NewReader(tt.in))} {
				r := NewReader(src)
				r.Strict = tt.strict
				got, err := readAll(r, limit)
				if !errors.Is(err, tt.err) {
					t.Fatalf("error = %v, want %v", err, tt.err)
				}
				if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
					t.Fatalf("got %q, want %q", got, tt.want)
				}
				// Errors are sticky: the stream is out of sync.
				if _, err2 := r.ReadBytes(limit); err2 != err {
					t.Fatalf("second call error = %v, want sticky %v", err2, err)
				}
				if r.Err() != err {
					t.Fatalf("Err() = %v, want %v", r.Err(), err)
				}
			}
		})
	}
}

func TestReadLengthValues(t *testing.T) {
	tests := []struct {
		in    string
		limit int64
		want  int64
		err   error
	}{
		{"0:", 0, 0, nil},
		{"9:", 9, 9, nil},
		{"999999999:", -1, 999999999, nil},
		{"9223372036854775807:", -1, 1<<63 - 1, nil},
		{"09223372036854775807:", -1, 1<<63 - 1, nil}, // 20 digits
		{"9223372036854775808:", -1, 0, ErrOverflow},
		{"10:", 9, 10, ErrTooLong}, // the declared length comes back for logs
		{"1073741824:", 1 << 20, 1 << 30, ErrTooLong},
	}
	for _, tt := range tests {
		r := NewReader(strings.NewReader(tt.in))
		n, err := r.ReadLength(tt.limit)
		if n != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("ReadLength(%q, %d) = %d, %v; want %d, %v", tt.in, tt.limit, n, err, tt.want, tt.err)
		}
		if err == nil && r.Remaining() != tt.want {
			t.Errorf("Remaining = %d, want %d", r.Remaining(), tt.want)
		}
	}
}

func TestNextStreams(t *testing.T) {
	in := "11:hello world,3:abc,"
	r := NewReader(iotest.HalfReader(strings.NewReader(in)))
	d, n, err := r.Next(100)
	if err != nil || n != 11 {
		t.Fatalf("Next = %d, %v", n, err)
	}
	b := make([]byte, 4)
	k, err := d.Read(b)
	if err != nil || string(b[:k]) != "hell"[:k] {
		t.Fatalf("Read = %q, %v", b[:k], err)
	}
	rest, err := io.ReadAll(d)
	if err != nil || string(b[:k])+string(rest) != "hello world" {
		t.Fatalf("rest = %q, %v", rest, err)
	}
	if r.Remaining() != 0 {
		t.Fatalf("Remaining = %d", r.Remaining())
	}
	// Still at EOF when asked again, before End.
	if k, err := d.Read(b); k != 0 || err != io.EOF {
		t.Fatalf("Read at end = %d, %v", k, err)
	}
	if err := r.End(); err != nil {
		t.Fatal(err)
	}
	if r.Consumed() != 15 {
		t.Fatalf("Consumed = %d, want 15", r.Consumed())
	}
	// A data reader kept past End must not read the next netstring.
	d2, _, err := r.Next(100)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := d.Read(b); k != 0 || err != io.EOF {
		t.Fatalf("stale reader Read = %d %q, %v; want 0, EOF", k, b[:k], err)
	}
	if got, _ := io.ReadAll(d2); string(got) != "abc" {
		t.Fatalf("second = %q", got)
	}
	if err := r.End(); err != nil {
		t.Fatal(err)
	}
	if k, err := d2.Read(b); k != 0 || err != io.EOF {
		t.Fatalf("reader after End = %d, %v", k, err)
	}
	if _, _, err := r.Next(100); err != io.EOF {
		t.Fatalf("Next at end = %v, want io.EOF", err)
	}
	if r.Consumed() != int64(len(in)) {
		t.Fatalf("Consumed = %d, want %d", r.Consumed(), len(in))
	}
}

func TestPending(t *testing.T) {
	r := NewReader(strings.NewReader("3:abc,3:def,"))
	if _, _, err := r.Next(10); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Next(10); err != ErrPending {
		t.Fatalf("Next before End = %v, want ErrPending", err)
	}
	if _, err := r.ReadBytes(10); err != ErrPending {
		t.Fatalf("ReadBytes before End = %v, want ErrPending", err)
	}
	// ErrPending is a caller bug, not a stream error: not sticky.
	if err := r.End(); err != nil {
		t.Fatal(err)
	}
	if b, err := r.ReadBytes(10); err != nil || string(b) != "def" {
		t.Fatalf("ReadBytes = %q, %v", b, err)
	}
	// End outside a netstring is a no-op.
	if err := r.End(); err != nil {
		t.Fatal(err)
	}
}

func TestEndDrains(t *testing.T) {
	big := strings.Repeat("z", 100_000) // larger than the bufio buffer
	in := "100000:" + big + ",2:ok,"
	for _, readFirst := range []int{0, 1, 5000, 99_999, 100_000} {
		r := NewReader(iotest.HalfReader(strings.NewReader(in)))
		d, _, err := r.Next(-1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, d, int64(readFirst)); err != nil {
			t.Fatal(err)
		}
		if err := r.End(); err != nil {
			t.Fatalf("End after %d: %v", readFirst, err)
		}
		if r.Consumed() != int64(len("100000:")+len(big)+1) {
			t.Fatalf("Consumed after End = %d", r.Consumed())
		}
		if b, err := r.ReadBytes(10); err != nil || string(b) != "ok" {
			t.Fatalf("after drain: %q, %v", b, err)
		}
	}
	// Draining into a truncated stream.
	r := NewReader(strings.NewReader("10:abc"))
	if _, _, err := r.Next(-1); err != nil {
		t.Fatal(err)
	}
	if err := r.End(); err != io.ErrUnexpectedEOF {
		t.Fatalf("End on truncated = %v", err)
	}
	if r.Consumed() != 6 {
		t.Fatalf("Consumed = %d, want 6", r.Consumed())
	}
	// Draining then a bad comma.
	r = NewReader(strings.NewReader("3:abcX"))
	r.Next(-1)
	if err := r.End(); err != ErrComma {
		t.Fatalf("End = %v, want ErrComma", err)
	}
}

func TestTruncatedData(t *testing.T) {
	r := NewReader(strings.NewReader("10:abc"))
	d, _, err := r.Next(100)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(d)
	if string(got) != "abc" || err != io.ErrUnexpectedEOF {
		t.Fatalf("ReadAll = %q, %v; want abc, ErrUnexpectedEOF", got, err)
	}
	if _, err := r.ReadByte(); err != io.ErrUnexpectedEOF {
		t.Fatalf("ReadByte after = %v", err)
	}
}

// errReader fails with a non-EOF error after its data.
type errReader struct {
	data string
	err  error
}

func (e *errReader) Read(p []byte) (int, error) {
	if e.data == "" {
		return 0, e.err
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}

func TestIOErrorPassesThrough(t *testing.T) {
	boom := errors.New("connection reset")
	for _, in := range []string{"", "5", "5:he", "5:hello"} {
		r := NewReader(&errReader{in, boom})
		_, err := r.ReadBytes(10)
		if err != boom {
			t.Errorf("%q: err = %v, want the I/O error", in, err)
		}
	}
}

func TestReadByte(t *testing.T) {
	r := NewReader(strings.NewReader("2:ab,"))
	if _, err := r.ReadLength(5); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for {
		c, err := r.ReadByte()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, c)
	}
	if string(got) != "ab" {
		t.Fatalf("got %q", got)
	}
	if err := r.End(); err != nil {
		t.Fatal(err)
	}
}

func TestBufferedAndSharedBufio(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("1:a,1:b,"))
	r := NewReader(br)
	if r.r != br {
		t.Fatal("NewReader did not reuse the *bufio.Reader")
	}
	if _, err := r.ReadBytes(5); err != nil {
		t.Fatal(err)
	}
	if r.Buffered() != 4 {
		t.Fatalf("Buffered = %d, want 4", r.Buffered())
	}
}

// TestReadBytesGrowth: the buffer grows with the bytes that arrived, not with
// the declared length.
func TestReadBytesGrowth(t *testing.T) {
	const n = 200_000
	in := "200000:" + strings.Repeat("q", n) + ","
	r := NewReader(iotest.OneByteReader(strings.NewReader(in)))
	b, err := r.ReadBytes(n)
	if err != nil || len(b) != n {
		t.Fatalf("ReadBytes = %d bytes, %v", len(b), err)
	}
	if cap(b) > 2*n+4096 {
		t.Fatalf("cap = %d for %d bytes", cap(b), n)
	}

	// A truncated large declaration: the buffer never exceeds what arrived.
	r = NewReader(strings.NewReader("1000000:" + strings.Repeat("q", 10)))
	if _, err := r.ReadBytes(1 << 20); err != io.ErrUnexpectedEOF {
		t.Fatalf("err = %v", err)
	}
}

// TestHugeDeclarationAllocatesNothing: a declared length of 1 GiB with no
// data behind it costs the same allocations as a declared length of 1 byte
// (nullmailer's reader sizes a stack buffer from it).
func TestHugeDeclarationAllocatesNothing(t *testing.T) {
	const gib = 1 << 30
	hugeIn := []byte("1073741824:abc")
	smallIn := []byte("1:a")
	src := bytes.NewReader(nil)
	br := bufio.NewReaderSize(src, 4096)
	r := &Reader{r: br}
	var buf [64]byte
	run := func(in []byte, readAll bool) func() {
		return func() {
			src.Reset(in)
			br.Reset(src)
			*r = Reader{r: br}
			d, _, err := r.Next(-1)
			if err != nil {
				t.Fatal(err)
			}
			if readAll {
				for {
					if _, err := d.Read(buf[:]); err != nil {
						break
					}
				}
			} else {
				r.End()
			}
		}
	}
	for _, readAll := range []bool{false, true} {
		huge := testing.AllocsPerRun(100, run(hugeIn, readAll))
		small := testing.AllocsPerRun(100, run(smallIn, readAll))
		if huge != small || huge > 1 {
			t.Errorf("readAll=%v: allocs huge=%v small=%v", readAll, huge, small)
		}
	}

	// ReadBytes of a 1 GiB declaration with 3 bytes behind it: the bytes
	// allocated stay tiny.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 10 {
		rr := NewReader(bytes.NewReader(hugeIn))
		if _, err := rr.ReadBytes(2 * gib); err != io.ErrUnexpectedEOF {
			t.Fatalf("ReadBytes = %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 10; per > 64<<10 {
		t.Fatalf("ReadBytes of a 1 GiB declaration allocated %d bytes", per)
	}
}

func TestLen(t *testing.T) {
	for _, n := range []int64{0, 1, 9, 10, 99, 100, 12345} {
		want := int64(len(Append(nil, make([]byte, n))))
		if got := Len(n); got != want {
			t.Errorf("Len(%d) = %d, want %d", n, got, want)
		}
	}
	if got := Len(1 << 30); got != 10+1<<30+2 {
		t.Errorf("Len(1 GiB) = %d", got)
	}
}

func TestWriters(t *testing.T) {
	if got := string(Append([]byte("x"), []byte("hello"))); got != "x5:hello," {
		t.Errorf("Append = %q", got)
	}
	if got := string(Append(nil, nil)); got != "0:," {
		t.Errorf("Append(nil) = %q", got)
	}
	if got := string(AppendString(nil, "Kok")); got != "3:Kok," {
		t.Errorf("AppendString = %q", got)
	}
	if got := string(AppendHeader(nil, 1234567890)); got != "1234567890:" {
		t.Errorf("AppendHeader = %q", got)
	}
	var b bytes.Buffer
	if err := Write(&b, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	WriteHeader(&b, 2)
	b.WriteString("de")
	WriteTrailer(&b)
	if b.String() != "3:abc,2:de," {
		t.Errorf("Write* = %q", b.String())
	}
	// What the writer produces, a strict reader reads back.
	r := NewReader(&b)
	r.Strict = true
	got, err := readAll(r, 10)
	if err != io.EOF || strings.Join(got, "|") != "abc|de" {
		t.Errorf("read back %q, %v", got, err)
	}
}

func TestWriteFrom(t *testing.T) {
	var b bytes.Buffer
	if err := WriteFrom(&b, 5, strings.NewReader("hello")); err != nil || b.String() != "5:hello," {
		t.Fatalf("WriteFrom = %q, %v", b.String(), err)
	}
	for _, tt := range []struct {
		n  int64
		in string
	}{{5, "hell"}, {5, "hello!"}, {0, "x"}, {-1, ""}} {
		b.Reset()
		err := WriteFrom(&b, tt.n, strings.NewReader(tt.in))
		if !errors.Is(err, ErrShortBody) {
			t.Errorf("WriteFrom(%d, %q) = %v, want ErrShortBody", tt.n, tt.in, err)
		}
		if strings.HasSuffix(b.String(), ",") {
			t.Errorf("WriteFrom(%d, %q) wrote a complete netstring %q", tt.n, tt.in, b.String())
		}
	}
	// A large body streams through without being held whole.
	b.Reset()
	const n = 1 << 20
	if err := WriteFrom(&b, n, io.LimitReader(zeros{}, n)); err != nil {
		t.Fatal(err)
	}
	if int64(b.Len()) != Len(n) {
		t.Fatalf("len = %d, want %d", b.Len(), Len(n))
	}
	// Write errors come back.
	boom := errors.New("boom")
	if err := WriteFrom(failWriter{boom}, 1, strings.NewReader("x")); err != boom {
		t.Fatalf("err = %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }
