package qmtp

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/netstring"
)

// benchServer serves QMTP on loopback with a handler that reads each
// message and accepts it: the protocol cost alone, no queue.
func benchServer(b *testing.B) string {
	srv := &Server{Hostname: "bench.test", ErrorLog: slog.New(slog.DiscardHandler), MaxConnsPerIP: -1}
	ok := []mail.Status{mail.OK("ok")}
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		io.Copy(io.Discard, req.Body)
		if env, err := req.Envelope(); err != nil || len(env.Recipients) != 1 {
			return nil
		}
		return ok
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// benchPackage is one 2 KB LF-mode message to one recipient.
func benchPackage() []byte {
	body := strings.Repeat(strings.Repeat("x", 63)+"\n", 32)
	return []byte(pk("\n"+body, "sender@example.com", "rcpt@example.net"))
}

// pipeline writes n packages on one connection while reading the n replies.
func pipeline(b *testing.B, addr string, pkg []byte, n int) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Error(err)
		return
	}
	defer c.Close()
	go func() {
		w := bufio.NewWriterSize(c, 64<<10)
		for range n {
			w.Write(pkg)
		}
		w.Flush()
	}()
	r := netstring.NewReader(c)
	for i := range n {
		reply, err := r.ReadBytes(MaxReplyBytes)
		if err != nil || len(reply) == 0 || reply[0] != 'K' {
			b.Errorf("reply %d: %q %v", i, reply, err)
			return
		}
	}
}

func report(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkServerPipelined: one connection, every package pipelined.
func BenchmarkServerPipelined(b *testing.B) {
	addr := benchServer(b)
	pkg := benchPackage()
	b.SetBytes(int64(len(pkg)))
	b.ResetTimer()
	start := time.Now()
	pipeline(b, addr, pkg, b.N)
	report(b, start)
}

// BenchmarkServerConns: eight connections at once, each pipelined.
func BenchmarkServerConns(b *testing.B) {
	const conns = 8
	addr := benchServer(b)
	pkg := benchPackage()
	b.SetBytes(int64(len(pkg)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range conns {
		n := b.N / conns
		if i < b.N%conns {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pipeline(b, addr, pkg, n)
		}()
	}
	wg.Wait()
	report(b, start)
}

// BenchmarkServerConnPerMessage: a new connection for every message, the
// way serialqmtp-style and one-shot clients work.
func BenchmarkServerConnPerMessage(b *testing.B) {
	addr := benchServer(b)
	pkg := benchPackage()
	b.SetBytes(int64(len(pkg)))
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		pipeline(b, addr, pkg, 1)
	}
	report(b, start)
}

// BenchmarkClientSend: our client against our server, 100 messages per
// Send on one connection.
func BenchmarkClientSend(b *testing.B) {
	addr := benchServer(b)
	body := strings.Repeat(strings.Repeat("x", 63)+"\n", 32)
	cn, err := (&Client{}).Dial(context.Background(), addr)
	if err != nil {
		b.Fatal(err)
	}
	defer cn.Close()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	start := time.Now()
	for left := b.N; left > 0; {
		n := min(left, 100)
		left -= n
		msgs := make([]*Message, n)
		for i := range msgs {
			msgs[i] = msg(body, false, "sender@example.com", "rcpt@example.net")
		}
		res, err := cn.Send(context.Background(), msgs...)
		if err != nil || !res[0][0].IsAccept() {
			b.Fatal(res[0], err)
		}
	}
	report(b, start)
}
