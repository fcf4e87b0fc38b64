package mail

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// BenchmarkBodyReader: a message with a 30-line header (20 Received lines)
// and a body, copied through the size and hop limits.
func BenchmarkBodyReader(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20, 16 << 20} {
		var msg bytes.Buffer
		msg.WriteString(header(20, "Received"))
		for i := range 10 {
			fmt.Fprintf(&msg, "X-Header-%d: %s\n", i, strings.Repeat("v", 60))
		}
		msg.WriteString("\n")
		for msg.Len() < size {
			msg.WriteString("The quick brown fox jumps over the lazy dog, again and again.\n")
		}
		in := msg.Bytes()[:size]
		for _, hops := range []int{0, DefaultMaxHops} {
			b.Run(fmt.Sprintf("%dKiB/hops=%d", size>>10, hops), func(b *testing.B) {
				b.SetBytes(int64(len(in)))
				b.ReportAllocs()
				src := bytes.NewReader(in)
				buf := make([]byte, 32<<10)
				for b.Loop() {
					src.Reset(in)
					r := NewBodyReader(src, int64(len(in)), hops)
					if _, err := io.CopyBuffer(sink{}, r, buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkBodyReaderHeader: the header scan alone, byte by byte worst
// case: a header of 99 Received lines read in 1-byte chunks is not
// realistic, so this reads a header-only message in 512-byte chunks.
func BenchmarkBodyReaderHeader(b *testing.B) {
	in := []byte(header(99, "Received") + header(99, "X-Other"))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	src := bytes.NewReader(in)
	buf := make([]byte, 512)
	for b.Loop() {
		src.Reset(in)
		r := NewBodyReader(src, 0, DefaultMaxHops)
		if _, err := io.CopyBuffer(sink{}, r, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReply(b *testing.B) {
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = StatusNotRcptHost.AppendReply(buf[:0])
	}
}

func BenchmarkRecipientAllowed(b *testing.B) {
	h := HostList{"example.net", ".example.net", "example.org", ".example.org", "bücher.example"}
	addrs := []string{"user@example.net", "user@mail.example.org", "user%evil.example@example.net", "user@other.example", "user@xn--bcher-kva.example"}
	b.ReportAllocs()
	for b.Loop() {
		for _, a := range addrs {
			h.RecipientAllowed(a)
		}
	}
}

// sink discards like io.Discard but without ReadFrom, so the copy goes
// through the caller's buffer as it does into a spool file.
type sink struct{}

func (sink) Write(p []byte) (int, error) { return len(p), nil }
