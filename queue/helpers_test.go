package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// fakeClock is a Clock that tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testOptions are deterministic: fake clock, seeded jitter, quiet log, and
// passive (no background goroutine racing the test's own calls).
func testOptions(clk *fakeClock) Options {
	return Options{
		Hostname: "hub.example.net",
		Clock:    clk,
		Rand:     rand.New(rand.NewPCG(1, 2)),
		Logger:   quietLogger(),
		Passive:  true,
	}
}

func openT(t testing.TB, dir string, opt Options) *Queue {
	t.Helper()
	q, err := Open(dir, opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return q
}

func putT(t testing.TB, q *Queue, sender string, body []byte, rcpts ...string) string {
	t.Helper()
	id, err := q.Put(context.Background(), mail.Envelope{Sender: sender, Recipients: rcpts}, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	return id
}

// bodyOf builds a deterministic body of about n bytes with a header.
func bodyOf(n int, seed int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Received: from test\nSubject: message %d\nMessage-ID: <%d@test>\n\n", seed, seed)
	r := rand.New(rand.NewPCG(uint64(seed), 7))
	for b.Len() < n {
		line := make([]byte, 1+r.IntN(76))
		for i := range line {
			line[i] = byte('a' + r.IntN(26))
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes()[:n]
}

func readAll(t testing.TB, d *Delivery) []byte {
	t.Helper()
	rc, err := d.Open()
	if err != nil {
		t.Fatalf("Open body of %s: %v", d.ID, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read body of %s: %v", d.ID, err)
	}
	return b
}

// claimAll claims everything due now.
func claimAll(q *Queue) []*Delivery { return q.Claim(1 << 20) }

func byID(ds []*Delivery) map[string][]*Delivery {
	m := map[string][]*Delivery{}
	for _, d := range ds {
		m[d.ID] = append(m[d.ID], d)
	}
	return m
}

func results(d *Delivery, st mail.Status, host string) []Result {
	var rs []Result
	for _, r := range d.Recipients {
		rs = append(rs, Result{Recipient: r, Status: st, Route: "qmtp://" + host, Host: host})
	}
	return rs
}

func envelope(sender string, rcpts ...string) mail.Envelope {
	return mail.Envelope{Sender: sender, Recipients: rcpts}
}
