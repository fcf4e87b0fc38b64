package relay

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/dkim"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
)

// BenchmarkAcceptSigned commits b.N messages into a real queue through the
// handlers unsigned, b.N signed with one key, and makes b.N bare signatures
// with the same key, all in one run, and reports each per message in the
// process's CPU time (which a busy machine does not inflate, unlike wall
// time): "unsigned-cpu-ns/msg", "signed-cpu-ns/msg", "raw-cpu-ns/sig"; then
// what signing adds as a share of the raw signature ("cpu-pct-of-raw": 100
// means the signature is all that signing at acceptance costs) and as a
// loss of acceptance throughput ("cpu-loss-pct"). Messages are committed
// by 16 goroutines, so that commits share their flushes as a busy hub's do.
//
//	go test -run - -bench AcceptSigned ./relay/
func BenchmarkAcceptSigned(b *testing.B) {
	body := "From: App <root@app17.example.net>\nTo: ops@example.org\nSubject: report\n" +
		"Date: Wed, 02 Dec 2026 03:00:00 +0000\nMessage-ID: <1@app17.example.net>\nMIME-Version: 1.0\n" +
		"Content-Type: text/plain; charset=utf-8\n\n" + strings.Repeat("A line of a nightly report, 70 characters or so, like most mail.\n", 64)
	for _, algo := range []string{"rsa", "ed25519"} {
		priv, _, err := dkim.Keygen(algo, 2048)
		if err != nil {
			b.Fatal(err)
		}
		k, err := dkim.ParseKey(priv)
		if err != nil {
			b.Fatal(err)
		}
		s, err := dkim.New(dkim.Options{Domains: []dkim.Domain{{Name: "example.net", Subdomains: true, Keys: []dkim.Key{{Selector: "s", Signer: k}}}}})
		if err != nil {
			b.Fatal(err)
		}
		name := algo
		if algo == "rsa" {
			name = "rsa2048"
		}
		b.Run(name, func(b *testing.B) {
			q, err := queue.Open(b.TempDir(), queue.Options{Logger: quiet()})
			if err != nil {
				b.Fatal(err)
			}
			defer q.Close()
			h := &Handlers{Sink: QueueSink{Queue: q}, Log: quiet()}
			signed := &Identity{Signer: s}
			// accept returns the CPU and the wall-clock time b.N messages
			// took, 16 at a time as concurrent sessions would.
			accept := func(id *Identity) (cpu, wall time.Duration) {
				h.Identity = func() *Identity { return id }
				c0, t0 := cpuTime(b), time.Now()
				var wg sync.WaitGroup
				const workers = 16
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						c := &mail.ConnInfo{Proto: "QMQP"}
						env := mail.Envelope{Sender: "root@app17.example.net", Recipients: []string{"ops@example.org"}}
						for i := w; i < b.N; i += workers {
							msg, n, st, err := h.begin(context.Background(), c, strings.NewReader(body))
							if err != nil {
								b.Error(err)
								return
							}
							if res := h.commit(context.Background(), "QMQP", c, msg, st, n.n, env, nil); !res.IsAccept() {
								b.Error(res)
								return
							}
						}
					}()
				}
				wg.Wait()
				return cpuTime(b) - c0, time.Since(t0)
			}
			unsigned, unsignedWall := accept(nil)
			sig, sigWall := accept(signed)
			opts := crypto.SignerOpts(crypto.SHA256)
			if algo == "ed25519" {
				opts = crypto.Hash(0)
			}
			sum := sha256.Sum256([]byte("header fields"))
			c0 := cpuTime(b)
			for i := 0; i < b.N; i++ {
				if _, err := k.Sign(rand.Reader, sum[:], opts); err != nil {
					b.Fatal(err)
				}
			}
			raw := cpuTime(b) - c0
			n := float64(b.N)
			b.ReportMetric(float64(unsigned.Nanoseconds())/n, "unsigned-cpu-ns/msg")
			b.ReportMetric(float64(sig.Nanoseconds())/n, "signed-cpu-ns/msg")
			b.ReportMetric(float64(raw.Nanoseconds())/n, "raw-cpu-ns/sig")
			if sig > unsigned {
				b.ReportMetric(100*float64(raw)/float64(sig-unsigned), "cpu-pct-of-raw")
			}
			if sig > 0 {
				b.ReportMetric(100*float64(sig-unsigned)/float64(sig), "cpu-loss-pct")
			}
			// Throughput: messages a second into the durable queue, the
			// goal's measure (the queue's flushes overlap the signing).
			if unsignedWall > 0 && sigWall > 0 {
				b.ReportMetric(n/unsignedWall.Seconds(), "unsigned-msg/s")
				b.ReportMetric(n/sigWall.Seconds(), "signed-msg/s")
				b.ReportMetric(100*(1-unsignedWall.Seconds()/sigWall.Seconds()), "throughput-loss-pct")
			}
		})
	}
}
