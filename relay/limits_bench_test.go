package relay

import (
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/mail"
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
			body := "Subject: bench\n\n" + strings.Repeat("x", 2000) + "\n"
			benchQMQPIngest(b, tc.limits, body, 8) // group commit needs writers in flight
		})
	}
}

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
