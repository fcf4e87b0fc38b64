package relay

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
)

// TestHandoff: a queue's messages, one of them held, move to a peer hub
// over QMTP, the first peer named being down; each arrives once, without
// the hand-off trace header (the peer reads and removes it), and the local queue is left with only the held
// message until a hand-off with held moves it too.
func TestHandoff(t *testing.T) {
	b := startHub(t, `
hostname = "hub-b.test"
rcpthosts = ["example.com"]
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.1"]
[[route]]
domains = ["*"]
via = "maildir:DIR/maildir"
`)
	q, err := queue.Open(t.TempDir(), queue.Options{Hostname: "hub-a.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 10
	var heldID string
	for i := range n {
		id, err := q.Put(ctx, mail.Envelope{Sender: "s@src.test", Recipients: []string{"user@example.com", "other@example.com"}},
			strings.NewReader("Subject: m\n\nbody\n"))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			heldID = id
		}
	}
	if err := q.Hold(ctx, heldID); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	peers := []string{"qmtp://127.0.0.1:1", "qmtp://" + b.addr("qmtp")}
	res, err := Handoff(ctx, q, HandoffOptions{Peers: peers, Log: log})
	if err != nil || res.Recipients != 2*(n-1) || res.Messages != n-1 || res.Refused != 0 {
		t.Fatalf("hand-off: %+v %v", res, err)
	}
	if m := q.Metrics(); m.Messages != 1 {
		t.Fatalf("left after hand-off: %d messages", m.Messages)
	}
	res, err = Handoff(ctx, q, HandoffOptions{Peers: peers, Held: true, Log: log})
	if err != nil || res.Recipients != 2 {
		t.Fatalf("hand-off with held: %+v %v", res, err)
	}
	if m := q.Metrics(); m.Messages != 0 {
		t.Fatalf("left after hand-off with held: %d messages", m.Messages)
	}
	root := filepath.Join(b.dir, "maildir")
	testpeer.WaitFor(t, "every message at the peer", 30*time.Second, func() bool {
		return len(maildirFiles(t, root, "example.com", "user")) == n && len(maildirFiles(t, root, "example.com", "other")) == n
	})
	for _, m := range maildirFiles(t, root, "example.com", "user") {
		if strings.Contains(m, HandoffHeader) || !strings.HasSuffix(m, "Subject: m\n\nbody\n") {
			t.Fatalf("handed-off message:\n%s", m)
		}
	}
}
