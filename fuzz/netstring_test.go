package fuzz

import (
	"bytes"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/netstring"
)

// chunked returns at most n bytes per Read, to move the boundaries between
// the reader's buffer fills.
type chunked struct {
	r io.Reader
	n int
}

func (c chunked) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

// documented reports whether err is one the netstring Reader may return on
// an in-memory stream.
func documented(err error) bool {
	for _, e := range []error{io.EOF, io.ErrUnexpectedEOF, netstring.ErrNotDigit, netstring.ErrOverflow,
		netstring.ErrTooLong, netstring.ErrComma, netstring.ErrLeadingZero, netstring.ErrEmptyLength} {
		if err == e {
			return true
		}
	}
	return false
}

// parseAll walks data as a sequence of netstrings, choosing per netstring
// (from ops) how to read it, and checks every invariant on the way. It
// returns the data of the netstrings read whole and the final error.
func parseAll(t *testing.T, data []byte, strict bool, ops uint64) ([][]byte, error) {
	t.Helper()
	chunk := len(data) + 1
	if c := int(ops & 15); c != 0 {
		chunk = c
	}
	ops >>= 4
	r := netstring.NewReader(chunked{bytes.NewReader(data), chunk})
	r.Strict = strict
	var got [][]byte
	var prev io.Reader // the data reader of the previous netstring
	for i := 0; ; i++ {
		op := ops >> (3 * (i % 20)) & 7
		limit := int64(1 << 40) // in effect none: input arrives before memory is taken
		if op&4 != 0 {
			limit = 5
		}
		start := r.Consumed()
		var err error
		switch op & 3 {
		case 0: // whole, in memory
			var b []byte
			b, err = r.ReadBytes(limit)
			if err == nil {
				got = append(got, b)
				// Exactly what the wire held, comma checked.
				if end := r.Consumed(); data[end-1] != ',' || !bytes.Equal(data[end-1-int64(len(b)):end-1], b) {
					t.Fatalf("ReadBytes %q does not match the input at %d..%d", b, start, end)
				}
			}
		default: // streamed: all, a part, or nothing
			var d io.Reader
			var n int64
			d, n, err = r.Next(limit)
			if err != nil {
				break
			}
			// A data reader kept from the previous netstring must not
			// read into this one.
			if prev != nil {
				if k, e := prev.Read(make([]byte, 4)); k != 0 || e != io.EOF {
					t.Fatalf("stale data reader read %d bytes, %v", k, e)
				}
			}
			prev = d
			if n > limit {
				t.Fatalf("Next declared %d over limit %d", n, limit)
			}
			off := r.Consumed()
			want := n
			if op&3 == 2 {
				want = n / 2
			} else if op&3 == 3 {
				want = 0
			}
			b, rerr := io.ReadAll(io.LimitReader(d, want))
			if int64(len(b)) > n {
				t.Fatalf("data reader gave %d bytes of %d declared", len(b), n)
			}
			if !bytes.Equal(b, data[off:off+int64(len(b))]) {
				t.Fatalf("data reader gave %q, input has %q", b, data[off:off+int64(len(b))])
			}
			if rerr != nil {
				err = rerr
				break
			}
			if op&3 == 1 {
				// Past the end the data reader says EOF and gives nothing.
				if k, e := d.Read(make([]byte, 4)); k != 0 || e != io.EOF {
					t.Fatalf("read past declared length: %d, %v", k, e)
				}
			}
			err = r.End()
			if err == nil && op&3 == 1 {
				got = append(got, b)
			}
			if k, e := d.Read(make([]byte, 4)); err == nil && (k != 0 || e != io.EOF) {
				t.Fatalf("stale data reader read %d, %v", k, e)
			}
		}
		if r.Consumed() > int64(len(data)) {
			t.Fatalf("consumed %d of %d bytes", r.Consumed(), len(data))
		}
		if err == nil {
			continue
		}
		if !documented(err) {
			t.Fatalf("undocumented error %v", err)
		}
		if err == io.EOF && (r.Consumed() != int64(len(data)) || start != r.Consumed()) {
			t.Fatalf("io.EOF in the middle: consumed %d of %d", r.Consumed(), len(data))
		}
		if err != io.EOF && r.Err() != err {
			t.Fatalf("error %v not sticky (Err() = %v)", err, r.Err())
		}
		return got, err
	}
}

func FuzzNetstring(f *testing.F) {
	for _, s := range []string{
		"5:hello,", "0:,", "1:a,2:bc,", "005:hello,", ":,", "1a:x,", "9223372036854775808:",
		"5:hello;", "5:hel", "83:39:Hate.The Quoting@silverton.berkeley.edu,36:\\Backslashes!@silverton.berkeley.EDU,,",
	} {
		f.Add([]byte(s), false, uint64(0))
		f.Add([]byte(s), true, uint64(0x5555_5555_5555_5551))
	}
	f.Fuzz(func(t *testing.T, data []byte, strict bool, ops uint64) {
		parseAll(t, data, strict, ops)

		// Whatever was parsed strictly, whole, re-encodes to the same bytes.
		r := netstring.NewReader(bytes.NewReader(data))
		r.Strict = true
		var enc []byte
		var items [][]byte
		for {
			b, err := r.ReadBytes(-1)
			if err != nil {
				if err == io.EOF && !bytes.Equal(enc, data) {
					t.Fatalf("strict parse re-encodes to %q, input %q", enc, data)
				}
				break
			}
			items = append(items, b)
			enc = netstring.Append(enc, b)
		}

		// A stream the strict reader takes whole, the lenient one takes
		// identically; and the canonical form of whatever the lenient
		// reader takes whole is read back strictly to the same items.
		lenient, lerr := parseAll(t, data, false, 0)
		if r.Err() == io.EOF && (lerr != io.EOF || !sameItems(lenient, items)) {
			t.Fatalf("strict took %q, lenient %q (%v)", items, lenient, lerr)
		}
		if lerr == io.EOF {
			var canon []byte
			for _, b := range lenient {
				canon = netstring.Append(canon, b)
			}
			back, berr := parseAll(t, canon, true, 0)
			if berr != io.EOF || !sameItems(back, lenient) {
				t.Fatalf("canonical form %q reads back as %q, %v", canon, back, berr)
			}
		}
	})
}

func sameItems(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// refHops is the obvious reference for mail.BodyReader's hop count: header
// lines starting with "received:" or "delivered-to:" (ASCII case ignored)
// before the first empty line.
func refHops(msg []byte) int {
	hops := 0
	for _, line := range strings.Split(string(msg), "\n") {
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

// splitReader returns data in reads whose sizes come from sizes, cycling.
type splitReader struct {
	data  []byte
	sizes []byte
	i     int
}

func (s *splitReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	n := len(s.data)
	if len(s.sizes) > 0 {
		n = min(n, int(s.sizes[s.i%len(s.sizes)])+1)
		s.i++
	}
	n = copy(p, s.data[:n])
	s.data = s.data[n:]
	return n, nil
}

func FuzzBodyReader(f *testing.F) {
	f.Add([]byte("Received: x\nDelivered-To: y\n\nReceived: body\n"), []byte{0}, uint16(0), uint8(0))
	f.Add([]byte("received:\r\nDELIVERED-TO:\r\n\r\n"), []byte{3, 1}, uint16(10), uint8(1))
	f.Add([]byte("Received-SPF: x\n X-Received: y\nReceive\n"), []byte{}, uint16(0), uint8(2))
	f.Fuzz(func(t *testing.T, msg, sizes []byte, maxBytes uint16, maxHops uint8) {
		want := refHops(msg)
		// Counting only: the data passes unchanged and the count matches.
		b := mail.NewBodyReader(&splitReader{data: msg, sizes: sizes}, 0, math.MaxInt)
		var out bytes.Buffer
		if _, err := io.Copy(&out, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), msg) || b.N() != int64(len(msg)) {
			t.Fatalf("data changed: %d bytes in, %d out, N=%d", len(msg), out.Len(), b.N())
		}
		if b.Hops() != want {
			t.Fatalf("Hops = %d, reference %d", b.Hops(), want)
		}

		// With limits: the error says which, and nothing past the size
		// limit is passed on.
		b = mail.NewBodyReader(&splitReader{data: msg, sizes: sizes}, int64(maxBytes), int(maxHops))
		out.Reset()
		_, err := io.Copy(&out, b)
		tooBig := maxBytes > 0 && len(msg) > int(maxBytes)
		loops := maxHops > 0 && want >= int(maxHops)
		switch {
		case err == nil:
			if tooBig || loops || !bytes.Equal(out.Bytes(), msg) {
				t.Fatalf("no error: tooBig=%v loops=%v, passed %d of %d", tooBig, loops, out.Len(), len(msg))
			}
		case err == mail.StatusTooBig:
			if !tooBig {
				t.Fatalf("too big at %d bytes, limit %d", len(msg), maxBytes)
			}
		case err == mail.StatusTooManyHops:
			if !loops || b.Hops() < int(maxHops) {
				t.Fatalf("looping with %d hops (reference %d), limit %d", b.Hops(), want, maxHops)
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
		if maxBytes > 0 && (out.Len() > int(maxBytes) || b.N() > int64(maxBytes)+1) {
			t.Fatalf("passed %d, read %d with limit %d", out.Len(), b.N(), maxBytes)
		}
		if err != nil && b.Err() != err {
			t.Fatalf("Err() = %v, returned %v", b.Err(), err)
		}
		if !bytes.HasPrefix(msg, out.Bytes()) {
			t.Fatal("passed bytes are not a prefix of the message")
		}
	})
}
