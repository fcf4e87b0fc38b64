package netstring_test

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/qmgate/qmgate/netstring"
)

// smallStream is n netstrings of addresses, like a QMTP recipient list.
func smallStream(n int) []byte {
	var b []byte
	for i := range n {
		b = netstring.AppendString(b, fmt.Sprintf("user%d@example.org", i))
	}
	return b
}

// BenchmarkReadBytesSmall: many small netstrings read whole.
func BenchmarkReadBytesSmall(b *testing.B) {
	in := smallStream(1000)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	src := bytes.NewReader(in)
	for b.Loop() {
		src.Reset(in)
		r := netstring.NewReader(src)
		for {
			if _, err := r.ReadBytes(1000); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/netstring")
}

// BenchmarkNextSmall: the same, streamed through Next/End with no copy.
func BenchmarkNextSmall(b *testing.B) {
	in := smallStream(1000)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	src := bytes.NewReader(in)
	var buf [64]byte
	for b.Loop() {
		src.Reset(in)
		r := netstring.NewReader(src)
		for {
			d, _, err := r.Next(1000)
			if err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
			for {
				if _, err := d.Read(buf[:]); err != nil {
					break
				}
			}
			if err := r.End(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/netstring")
}

// BenchmarkStreamBody: one large message body streamed through Next.
func BenchmarkStreamBody(b *testing.B) {
	for _, size := range []int{64 << 10, 16 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			in := netstring.Append(nil, bytes.Repeat([]byte("0123456789abcde\n"), size/16))
			b.SetBytes(int64(size))
			b.ReportAllocs()
			src := bytes.NewReader(in)
			buf := make([]byte, 32<<10)
			for b.Loop() {
				src.Reset(in)
				r := netstring.NewReader(src)
				d, _, err := r.Next(-1)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.CopyBuffer(sink{}, d, buf); err != nil {
					b.Fatal(err)
				}
				if err := r.End(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppend: building replies and recipient lists.
func BenchmarkAppend(b *testing.B) {
	data := []byte("Kok 1700000000 qp 4242")
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = netstring.Append(buf[:0], data)
	}
}

// sink discards like io.Discard but without ReadFrom, so the copy goes
// through the caller's buffer as it does into a spool file.
type sink struct{}

func (sink) Write(p []byte) (int, error) { return len(p), nil }
