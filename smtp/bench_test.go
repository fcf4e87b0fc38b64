package smtp

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/qmgate/qmgate/mail"
)

// discardHandler accepts everything and keeps nothing: the benchmarks
// measure the protocol, not a queue.
type discardHandler struct{}

func (discardHandler) Sender(context.Context, *mail.ConnInfo, string) mail.Status { return mail.OK("") }
func (discardHandler) Recipient(context.Context, *mail.ConnInfo, string, string) mail.Status {
	return mail.OK("")
}
func (discardHandler) Deliver(_ context.Context, _ *mail.ConnInfo, _ mail.Envelope, body io.Reader) mail.Status {
	if _, err := io.Copy(io.Discard, body); err != nil {
		return mail.StatusOf(err)
	}
	return mail.OK("discarded")
}

func benchMessage(size int) string {
	line := "The quick brown fox jumps over the lazy dog, again and again and again.\n"
	var b strings.Builder
	b.WriteString("Subject: benchmark\n\n")
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.String()[:size-1] + "\n"
}

// BenchmarkSMTPRoundTrip sends messages with qmgate's client to qmgate's
// server over loopback, one connection per goroutine, reused: a whole SMTP
// transaction per op (MAIL, 2 RCPT, DATA, body both ways converted).
func BenchmarkSMTPRoundTrip(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20} {
		b.Run(sizeName(size), func(b *testing.B) {
			srv := &Server{Handler: discardHandler{}, ErrorLog: slog.New(slog.DiscardHandler)}
			addr := startServer(b, srv)
			msg := benchMessage(size)
			env := mail.Envelope{Sender: "bench@example.org", Recipients: []string{"a@example.net", "b@example.net"}}
			c := &Client{TLS: TLSNone, LocalName: "bench.test", ErrorLog: slog.New(slog.DiscardHandler)}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				cn, err := c.Dial(context.Background(), addr)
				if err != nil {
					b.Error(err)
					return
				}
				defer cn.Close()
				for pb.Next() {
					sts, err := cn.Send(context.Background(), env, strings.NewReader(msg))
					if err != nil || !sts[0].IsAccept() {
						b.Errorf("%v %v", sts, err)
						return
					}
				}
			})
		})
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return itoa(n>>20) + "MiB"
	case n >= 1<<10:
		return itoa(n>>10) + "KiB"
	}
	return itoa(n) + "B"
}

// BenchmarkWriteBody is the outbound conversion to CR LF alone.
func BenchmarkWriteBody(b *testing.B) {
	msg := benchMessage(1 << 20)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if err := writeBody(io.Discard, strings.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDataFilter is the inbound conversion to LF alone.
func BenchmarkDataFilter(b *testing.B) {
	msg := []byte(strings.ReplaceAll(benchMessage(1<<20), "\n", "\r\n"))
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		f := newDataFilter(bytes.NewReader(msg), false)
		if _, err := io.Copy(io.Discard, f); err != nil {
			b.Fatal(err)
		}
	}
}
