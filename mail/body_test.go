package mail

import (
	"bytes"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"testing/iotest"
)

// refHops is the obvious reference: count header lines that start with
// "received:" or "delivered-to:" (ASCII case ignored) before the first
// empty line ("" or "\r").
func refHops(msg string) int {
	hops := 0
	for _, line := range strings.Split(msg, "\n") {
		if line == "" || line == "\r" {
			break
		}
		l := strings.ToLower(line)
		if strings.HasPrefix(l, "received:") || strings.HasPrefix(l, "delivered-to:") {
			hops++
		}
	}
	return hops
}

// chunkReader returns its data in the given chunk sizes, then the rest.
type chunkReader struct {
	data   []byte
	chunks []int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.chunks) > 0 {
		n = min(n, c.chunks[0])
		c.chunks = c.chunks[1:]
	}
	n = copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func TestBodyReaderSize(t *testing.T) {
	body := strings.Repeat("0123456789\n", 1000) // 11000 bytes
	size := int64(len(body))
	tests := []struct {
		limit int64
		err   error
	}{
		{0, nil},
		{-1, nil},
		{size, nil}, // exactly at the limit
		{size + 1, nil},
		{math.MaxInt64, nil},     // must not overflow
		{size - 1, StatusTooBig}, // one over
		{1, StatusTooBig},
	}
	for _, tt := range tests {
		readers := map[string]func() io.Reader{
			"whole":   func() io.Reader { return strings.NewReader(body) },
			"onebyte": func() io.Reader { return iotest.OneByteReader(strings.NewReader(body)) },
			"half":    func() io.Reader { return iotest.HalfReader(strings.NewReader(body)) },
			"dataeof": func() io.Reader { return iotest.DataErrReader(strings.NewReader(body)) },
		}
		for name, mk := range readers {
			b := NewBodyReader(mk(), tt.limit, 0)
			var out bytes.Buffer
			_, err := io.Copy(&out, b)
			if !errors.Is(err, tt.err) {
				t.Errorf("limit %d %s: err = %v, want %v", tt.limit, name, err, tt.err)
				continue
			}
			if b.Err() != nil != (tt.err != nil) {
				t.Errorf("limit %d %s: Err() = %v", tt.limit, name, b.Err())
			}
			if tt.err == nil {
				if out.String() != body || b.N() != size {
					t.Errorf("limit %d %s: passed %d bytes, N=%d", tt.limit, name, out.Len(), b.N())
				}
				continue
			}
			// Never more than the limit passed on, never more than one
			// byte past it taken from the source.
			if int64(out.Len()) > tt.limit || b.N() > tt.limit+1 {
				t.Errorf("limit %d %s: passed %d, read %d", tt.limit, name, out.Len(), b.N())
			}
			if st := StatusOf(err); st != StatusTooBig {
				t.Errorf("status %#v", st)
			}
			// Sticky.
			if n, err := b.Read(make([]byte, 10)); n != 0 || err != StatusTooBig {
				t.Errorf("after limit: %d, %v", n, err)
			}
		}
	}
}

func header(n int, name string) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(name)
		b.WriteString(": from host")
		b.WriteByte(byte('0' + i%10))
		b.WriteString(".example by hub.example; 1 Jan 2024 00:00:00 -0000\n")
	}
	return b.String()
}

func TestBodyReaderHops(t *testing.T) {
	body := "\nReceived: in the body\nDelivered-To: in the body\n"
	tests := []struct {
		name string
		msg  string
		hops int
	}{
		{"none", "Subject: x\n\nbody\n", 0},
		{"99", header(99, "Received") + "Subject: x\n" + body, 99},
		{"100", header(100, "Received") + body, 100},
		{"mixed 100", header(60, "Received") + header(40, "Delivered-To") + body, 100},
		{"case", header(50, "RECEIVED") + header(49, "delivered-TO") + body, 99},
		{"CRLF", strings.ReplaceAll(header(100, "Received"), "\n", "\r\n") + "\r\n" + body, 100},
		{"CRLF blank line ends header", strings.ReplaceAll(header(5, "Received")+"\n"+header(100, "Received"), "\n", "\r\n"), 5},
		{"blank line ends header", header(99, "Received") + "\n" + header(10, "Received"), 99},
		{"body only", "\n" + header(200, "Received"), 0},
		{"lookalikes", header(100, "Received-SPF") + header(100, "X-Received") + header(100, " Received") +
			header(100, "\tReceived") + header(100, "Received ") + header(100, "Delivered") + header(100, "Delivered-From") +
			header(100, "Receive") + header(100, "Recieved") + body, 0},
		{"continuation lines", "Received: from a\n  by b\n\tfor c\n" + body, 1},
		{"no newline at end", "Received: x\nReceived: y", 2},
		{"bare CR line is not blank", "Received: x\n\r \nReceived: y\n\n", 2},
		{"CR CR LF is not blank", "Received: x\n\r\r\nReceived: y\n\n", 2},
		{"NUL in name", "Rece\x00ived: x\n\n", 0},
		{"8-bit", "Received: \xff\xfe\nReceived:\n\n", 2},
		{"empty", "", 0},
	}
	for _, tt := range tests {
		if ref := refHops(tt.msg); ref != tt.hops {
			t.Fatalf("%s: reference counts %d, test says %d", tt.name, ref, tt.hops)
		}
		b := NewBodyReader(strings.NewReader(tt.msg), 0, math.MaxInt)
		if _, err := io.Copy(io.Discard, b); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		if b.Hops() != tt.hops {
			t.Errorf("%s: Hops = %d, want %d", tt.name, b.Hops(), tt.hops)
		}
		// With qmail-smtpd's limit: 99 pass, 100 loop.
		b = NewBodyReader(iotest.OneByteReader(strings.NewReader(tt.msg)), 0, DefaultMaxHops)
		var out bytes.Buffer
		_, err := io.Copy(&out, b)
		if tt.hops >= DefaultMaxHops {
			if err != StatusTooManyHops || b.Err() != StatusTooManyHops {
				t.Errorf("%s: err = %v, want too many hops", tt.name, err)
			}
		} else if err != nil || out.String() != tt.msg {
			t.Errorf("%s: err = %v, passed %d of %d bytes", tt.name, err, out.Len(), len(tt.msg))
		}
	}
	// maxHops <= 0 turns counting off.
	b := NewBodyReader(strings.NewReader(header(500, "Received")), 0, 0)
	if _, err := io.Copy(io.Discard, b); err != nil || b.Hops() != 0 {
		t.Errorf("no counting: %v, %d", err, b.Hops())
	}
}

// TestBodyReaderSplitEverywhere: the header names are recognised whatever
// the Read boundaries, including between every pair of bytes.
func TestBodyReaderSplitEverywhere(t *testing.T) {
	msg := "Received: a\nDelivered-To: b\r\nX: Received: c\nrEcEiVeD:d\nDELIVERED-TO:\r\n\r\nReceived: body\n"
	const want = 4
	for i := 0; i <= len(msg); i++ {
		for j := i; j <= len(msg); j += 7 {
			b := NewBodyReader(&chunkReader{data: []byte(msg), chunks: []int{i, j - i}}, 0, math.MaxInt)
			var out bytes.Buffer
			if _, err := io.Copy(&out, b); err != nil || out.String() != msg {
				t.Fatalf("split %d,%d: %v", i, j, err)
			}
			if b.Hops() != want {
				t.Fatalf("split %d,%d: Hops = %d, want %d", i, j, b.Hops(), want)
			}
		}
	}
}

func TestBodyReaderBothLimits(t *testing.T) {
	msg := header(100, "Received") + "\nbody\n"
	// The size limit is checked first on the read that crosses it.
	b := NewBodyReader(strings.NewReader(msg), 10, DefaultMaxHops)
	if _, err := io.Copy(io.Discard, b); err != StatusTooBig {
		t.Fatalf("err = %v", err)
	}
	// A limit that is not crossed leaves the hop limit in charge.
	b = NewBodyReader(strings.NewReader(msg), int64(len(msg)), DefaultMaxHops)
	if _, err := io.Copy(io.Discard, b); err != StatusTooManyHops {
		t.Fatalf("err = %v", err)
	}
}

func TestBodyReaderPassesErrors(t *testing.T) {
	boom := errors.New("reset")
	b := NewBodyReader(iotest.TimeoutReader(strings.NewReader("abc")), 100, 100)
	p := make([]byte, 10)
	if n, err := b.Read(p); n != 3 || err != nil {
		t.Fatalf("first = %d, %v", n, err)
	}
	if _, err := b.Read(p); err != iotest.ErrTimeout {
		t.Fatalf("second = %v", err)
	}
	b = NewBodyReader(iotest.ErrReader(boom), 100, 100)
	if _, err := b.Read(p); err != boom {
		t.Fatalf("err = %v", err)
	}
	if b.Err() != nil {
		t.Fatalf("Err() = %v; only limits are Err", b.Err())
	}
}

func TestHeaderEnd(t *testing.T) {
	for _, c := range []struct {
		in   string
		from int
		want int
	}{
		{"\nbody", 0, 1},
		{"\r\nbody", 0, 2},
		{"A: b\n\nbody", 0, 6},
		{"A: b\r\n\r\nbody", 0, 8},
		{"A: b\r\n B\r\n\r\n", 0, 12},
		{"A: b\nC: d\n", 0, -1},
		{"A: b\r\n\r", 0, -1},
		{"A: b\n\nx\n\n", 6, 9},
		{"", 0, -1},
	} {
		if got := HeaderEnd([]byte(c.in), c.from); got != c.want {
			t.Errorf("HeaderEnd(%q, %d) = %d, want %d", c.in, c.from, got, c.want)
		}
	}
}
