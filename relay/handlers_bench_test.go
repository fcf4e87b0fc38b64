package relay

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
)

// BenchmarkQMQPIngestSize is QMQP ingest through the whole hub (the real
// server over loopback, the handlers with their trace-header filter, the
// durable queue) by 10 concurrent clients, one message per connection, at
// 2 KB, 64 KiB and 256 KiB. Compare cpu-ns/msg, the process's CPU time
// (hub and clients) per message, side by side (-count 6); msgs/s depends on
// the disk and the machine's load.
func BenchmarkQMQPIngestSize(b *testing.B) {
	for _, size := range []int{2000, 64 << 10, 256 << 10} {
		b.Run("size="+strconv.Itoa(size), func(b *testing.B) {
			head := "From: app@example.net\nTo: a@example.org\nSubject: bench\n\n"
			line := strings.Repeat("x", 75) + "\n"
			body := head + strings.Repeat(line, (size-len(head))/len(line))
			body += strings.Repeat("y", size-len(body))
			b.SetBytes(int64(size))
			benchQMQPIngest(b, "", body, 5) // 10 clients on 2 cores
		})
	}
}

// benchQMQPIngest runs a hub on a fresh queue with the configuration
// sections extra added and a discard route, and sends it body over QMQP
// from parallelism clients per CPU, one message per connection. It reports
// cpu-ns/msg, the process's CPU time (hub and clients) per message, and
// msgs/s.
func benchQMQPIngest(b *testing.B, extra, body string, parallelism int) {
	dir := b.TempDir()
	cfg, err := config.Parse("bench.toml", []byte(`queue_dir = "`+dir+`/queue"
[qmqp]
listen = ["127.0.0.1:0"]
allow = ["127.0.0.0/8"]
max_conns_per_ip = 1000
`+extra+`
[[route]]
domains = ["*"]
via = "discard:"
`))
	if err != nil {
		b.Fatal(err)
	}
	h, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	if err := h.Listen(); err != nil {
		b.Fatal(err)
	}
	if err := h.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h.Shutdown(ctx)
	}()
	addr := h.Addrs()["qmqp"][0]
	env := mail.Envelope{Sender: "app@example.net", Recipients: []string{"a@example.org"}}
	var failed atomic.Value
	b.SetParallelism(parallelism)
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime(b)
	b.RunParallel(func(pb *testing.PB) {
		c := &qmqp.Client{Servers: []string{addr}, Dialer: &net.Dialer{}}
		for pb.Next() {
			res, err := c.Send(context.Background(), env, strings.NewReader(body), int64(len(body)))
			if err != nil || !res.Status.IsAccept() {
				failed.Store(string(res.Status.Reply()))
			}
		}
	})
	cpu, wall := cpuTime(b)-cpu0, time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f != nil {
		b.Fatalf("a message was refused: %v", f)
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
	b.ReportMetric(float64(b.N)/wall.Seconds(), "msgs/s")
}
