package relay

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
)

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkQMQPIngestLimits is QMQP ingest through the whole hub (the
// server, the policy, the durable queue, a discard route) with the rate
// limits off and on: client, recipient and sender-domain limits, two rates
// each, high enough never to refuse, so that every message is checked
// against four limiters and counted in them. Run the two side by side
// (-count 6) and compare cpu-ns/msg, the process's CPU time (hub and
// clients) per message, which a loaded machine disturbs less than msgs/s.
func BenchmarkQMQPIngestLimits(b *testing.B) {
	const limits = `
[limits]
client_messages = ["100000000/m", "1000000000/d"]
client_recipients = ["100000000/m", "1000000000/d"]
sender_domain_messages = ["100000000/m", "1000000000/d"]
sender_domain_recipients = ["100000000/m", "1000000000/d"]
`
	for _, tc := range []struct{ name, limits string }{{"off", ""}, {"on", limits}} {
		b.Run("limits="+tc.name, func(b *testing.B) {
			dir := b.TempDir()
			cfg, err := config.Parse("bench.toml", []byte(`queue_dir = "`+dir+`/queue"
[qmqp]
listen = ["127.0.0.1:0"]
allow = ["127.0.0.0/8"]
max_conns_per_ip = 1000
`+tc.limits+`
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
			body := "Subject: bench\n\n" + strings.Repeat("x", 2000) + "\n"
			env := mail.Envelope{Sender: "app@example.net", Recipients: []string{"a@example.org"}}
			var failed atomic.Value
			b.SetParallelism(8) // group commit needs writers in flight
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
		})
	}
}

// BenchmarkLimitsTally is the limits' own work per message, as the QMQP
// handler does it: a tally, the recipients reserved, the message checked
// and counted, against four limiters of two rates each.
func BenchmarkLimitsTally(b *testing.B) {
	cfg, err := config.Parse("bench.toml", []byte(`
[limits]
client_messages = ["100000000/m", "1000000000/d"]
client_recipients = ["100000000/m", "1000000000/d"]
sender_domain_messages = ["100000000/m", "1000000000/d"]
sender_domain_recipients = ["100000000/m", "1000000000/d"]
`))
	if err != nil {
		b.Fatal(err)
	}
	l := newLimits(&cfg.Limits, nil)
	c := &mail.ConnInfo{Proto: "QMQP", RelayClient: true, RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}}
	b.ResetTimer()
	cpu0 := cpuTime(b)
	defer func() { b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/msg") }()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			t := l.Start(c, "app@example.net")
			if !t.Recipients(1).IsAccept() || !t.Message().IsAccept() {
				b.Error("refused")
				return
			}
			t.Count()
		}
	})
}
