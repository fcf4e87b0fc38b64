package relay

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
)

// TestHandoffRate measures, in one run, how fast queued messages move to
// a peer hub by hand-off and by ordinary QMTP relay (1 KiB, one
// recipient each). It runs only with QMGATE_HANDOFF_RATE=N (messages).
func TestHandoffRate(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("QMGATE_HANDOFF_RATE"))
	if n <= 0 {
		t.Skip("set QMGATE_HANDOFF_RATE=N to measure")
	}
	peer := startHub(t, `
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.1"]
[[route]]
domains = ["*"]
via = "discard:"
`)
	body := "Subject: rate\n\n" + strings.Repeat("x", 1000) + "\n"
	env := mail.Envelope{Sender: "s@src.test", Recipients: []string{"user@example.com"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fill := func(q *queue.Queue) {
		for range n {
			if _, err := q.Put(ctx, env, strings.NewReader(body)); err != nil {
				t.Fatal(err)
			}
		}
	}

	q, err := queue.Open(t.TempDir(), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	fill(q)
	start := time.Now()
	res, err := Handoff(ctx, q, HandoffOptions{Peers: []string{"qmtp://" + peer.addr("qmtp")}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	handoff := time.Since(start)
	if err != nil || res.Recipients != n {
		t.Fatalf("hand-off: %+v %v", res, err)
	}

	relay := startHub(t, `
[[route]]
domains = ["*"]
via = "qmtp://`+peer.addr("qmtp")+`"
`)
	// Held while filling, so that the clock starts with a full queue.
	rq := relay.hub.Queue()
	var ids []string
	for range n {
		id, err := rq.Put(ctx, env, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		rq.Hold(ctx, id)
	}
	start = time.Now()
	for _, id := range ids {
		rq.Release(ctx, id) // one delivered before its hold is no longer there
	}
	testpeer.WaitFor(t, "the relay's queue empty", 10*time.Minute, func() bool { return rq.Metrics().Messages == 0 })
	rel := time.Since(start)
	t.Logf("%d messages of 1 KiB: hand-off %.0f msgs/s (%v), QMTP relay %.0f msgs/s (%v)",
		n, float64(n)/handoff.Seconds(), handoff.Round(time.Millisecond), float64(n)/rel.Seconds(), rel.Round(time.Millisecond))
}
