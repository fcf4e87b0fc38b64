package qmtp

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

// refCRLF is the conversion written the obvious way over a whole buffer, to
// check the streaming converter against.
func refCRLF(in []byte) []byte {
	var out []byte
	for i := 0; i < len(in); i++ {
		if in[i] == '\r' && i+1 < len(in) && in[i+1] == '\n' {
			out = append(out, '\n')
			i++
			continue
		}
		out = append(out, in[i])
	}
	return out
}

// readAllSized reads r to EOF with reads of the given sizes, cycling.
func readAllSized(r io.Reader, sizes []int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 64)
	for k := 0; ; k++ {
		n := sizes[k%len(sizes)]
		m, err := r.Read(buf[:n])
		out = append(out, buf[:m]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func TestCRLFTable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"a\r\nb", "a\nb"},
		{"\r\n", "\n"},
		{"lone\rcr", "lone\rcr"},
		{"a\r\r\nb", "a\r\nb"},
		{"trailing\r", "trailing\r"},
		{"\r", "\r"},
		{"\r\r", "\r\r"},
		{"bare\nlf", "bare\nlf"},
		{"\n\r", "\n\r"},
		{"\r\n\r\n\r\n", "\n\n\n"},
		{"x\r\r\r\n\r", "x\r\r\n\r"},
	} {
		for _, mode := range []string{"whole", "onebyte", "half"} {
			for _, sizes := range [][]int{{1}, {2}, {64}, {1, 2, 3}} {
				var src io.Reader = bytes.NewReader([]byte(tc.in))
				switch mode {
				case "onebyte":
					src = iotest.OneByteReader(src)
				case "half":
					src = iotest.HalfReader(src)
				}
				got, err := readAllSized(&crlfReader{r: src}, sizes)
				if err != nil || string(got) != tc.want {
					t.Errorf("%q %s %v: got %q, %v; want %q", tc.in, mode, sizes, got, err, tc.want)
				}
			}
		}
	}
}

// TestCRLFRandom compares the converter with refCRLF on random inputs rich
// in CR and LF, read through random source and sink chunkings.
func TestCRLFRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("\r\r\n\nab")
	for iter := 0; iter < 3000; iter++ {
		in := make([]byte, rng.IntN(40))
		for i := range in {
			in[i] = alphabet[rng.IntN(len(alphabet))]
		}
		var src io.Reader = &chunkReader{data: in, rng: rng}
		sizes := []int{1 + rng.IntN(8), 1 + rng.IntN(8), 1 + rng.IntN(64)}
		got, err := readAllSized(&crlfReader{r: src}, sizes)
		if want := refCRLF(in); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%q sizes %v: got %q, %v; want %q", in, sizes, got, err, want)
		}
	}
}

// chunkReader returns its data in random-sized pieces, sometimes with the
// last piece and io.EOF together.
type chunkReader struct {
	data []byte
	rng  *rand.Rand
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), 1+c.rng.IntN(5), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	if len(c.data) == 0 && c.rng.IntN(2) == 0 {
		return n, io.EOF
	}
	return n, nil
}

func TestCRLFError(t *testing.T) {
	// A non-EOF error is passed on after the data before it.
	r := &crlfReader{r: iotest.DataErrReader(iotest.TimeoutReader(bytes.NewReader([]byte("ab\r\ncd"))))}
	got, err := io.ReadAll(r)
	if err != iotest.ErrTimeout {
		t.Fatalf("err = %v, want timeout (got %q)", err, got)
	}
}

func FuzzCRLF(f *testing.F) {
	f.Add([]byte("a\r\r\nb\r"), uint8(1))
	f.Add([]byte("\r\n\r\n"), uint8(3))
	f.Fuzz(func(t *testing.T, in []byte, size uint8) {
		sizes := []int{1 + int(size%64), 1, 2}
		got, err := readAllSized(&crlfReader{r: iotest.OneByteReader(bytes.NewReader(in))}, sizes)
		if want := refCRLF(in); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
		got, err = readAllSized(&crlfReader{r: bytes.NewReader(in)}, sizes[:1])
		if want := refCRLF(in); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("whole: got %q, %v; want %q", got, err, want)
		}
	})
}

func BenchmarkCRLF(b *testing.B) {
	line := bytes.Repeat([]byte("x"), 76)
	line = append(line, '\r', '\n')
	msg := bytes.Repeat(line, 1<<20/len(line))
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		r := &crlfReader{r: bytes.NewReader(msg)}
		for {
			_, err := r.Read(buf)
			if err != nil {
				break
			}
		}
	}
}
