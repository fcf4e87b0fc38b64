package relay

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
	"net/http"
	"strings"
	"testing"
)

func getStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHubReadyz: /readyz answers 200 while the hub serves and 503 once it
// drains, while /healthz still says the process is alive.
func TestHubReadyz(t *testing.T) {
	h := startHub(t, `
[qmtp]
listen = ["127.0.0.1:0"]
[metrics]
listen = "127.0.0.1:0"
[[route]]
domains = ["*"]
via = "discard:"
`)
	base := "http://" + h.addr("metrics")
	if code, body := getStatus(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	h.hub.draining.Store(true)
	if code, body := getStatus(t, base+"/readyz"); code != 503 || !strings.Contains(body, "draining") {
		t.Fatalf("/readyz while draining: %d %q", code, body)
	}
	if code, body := getStatus(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz while draining: %d %q", code, body)
	}
}

// TestHubDrainReadyGrace: a drain fails /readyz first and keeps serving
// for [shutdown] ready_grace, so a load balancer stops sending before any
// connection is refused; after the grace the listener is closed.
func TestHubDrainReadyGrace(t *testing.T) {
	h := startHub(t, `
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.1"]
[metrics]
listen = "127.0.0.1:0"
[shutdown]
ready_grace = "8s"
[[route]]
domains = ["*"]
via = "discard:"
`)
	base := "http://" + h.addr("metrics")
	qaddr := h.addr("qmtp")
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.hub.Drain(context.Background(), time.Second, nil)
	}()
	testpeer.WaitFor(t, "/readyz to fail", 10*time.Second, func() bool {
		code, _ := getStatus(t, base+"/readyz")
		return code == 503
	})
	// Within the grace the listener still takes mail.
	if st := sendQMTP(t, qaddr, mail.Envelope{Sender: "s@src.test", Recipients: []string{"user@example.com"}}, "Subject: g\n\nx\n"); !st[0].IsAccept() {
		t.Fatalf("send during the grace: %v", st)
	}
	testpeer.Recv(t, "the drain to end", time.Minute, done)
	if c, err := net.DialTimeout("tcp", qaddr, time.Second); err == nil {
		c.Close()
		t.Fatal("the listener still accepts after the drain")
	}
}

// startPeerHub starts the peer a draining hub hands its queue to: QMTP
// from loopback, every domain into its Maildir.
func startPeerHub(t *testing.T) *testHub {
	t.Helper()
	return startHub(t, `
hostname = "hub-b.test"
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.1"]
[[route]]
domains = ["*"]
via = "maildir:DIR/maildir"
`)
}

// sendToUser sends n messages to user@example.com through h's QMTP
// listener, failing the test on any refusal.
func sendToUser(t *testing.T, h *testHub, n int) {
	t.Helper()
	for range n {
		if st := sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "s@src.test", Recipients: []string{"user@example.com"}}, "Subject: d\n\nx\n"); !st[0].IsAccept() {
			t.Fatalf("send: %v", st)
		}
	}
}

// TestHubDrain: a hub whose next hop is down drains: its listener closes,
// deliveries are tried for the drain time, and its queue moves to the
// peer, so it ends empty.
func TestHubDrain(t *testing.T) {
	b := startPeerHub(t)
	a := startHub(t, `
hostname = "hub-a.test"
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.1"]
[[route]]
domains = ["*"]
via = "qmtp://127.0.0.1:1"
`)
	const n = 5
	sendToUser(t, a, n)
	addrA := a.addr("qmtp")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := a.hub.Drain(ctx, 200*time.Millisecond, []string{"qmtp://" + b.addr("qmtp")})
	a.hub = nil // shut down by Drain
	if err != nil || res.Remaining != 0 || res.Handoff.Recipients != n {
		t.Fatalf("drain: %+v %v", res, err)
	}
	if c, err := net.Dial("tcp", addrA); err == nil {
		c.Close()
		t.Error("a drained hub still accepts connections")
	}
	root := filepath.Join(b.dir, "maildir")
	testpeer.WaitFor(t, "every message at the peer", 30*time.Second, func() bool {
		return len(maildirFiles(t, root, "example.com", "user")) == n
	})
}

// TestHubControlDrain: through the queue's control socket, a running hub
// first hands its queue to a peer while it goes on running ("handoff"),
// then drains ("drain"): /readyz fails, the listener closes, its queue
// moves to the peer, the report says so, and Drained is closed. A drain
// whose peer is down reports what remains and why.
func TestHubControlDrain(t *testing.T) {
	b := startPeerHub(t)
	const conf = `
hostname = "hub-a.test"
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.1"]
[metrics]
listen = "127.0.0.1:0"
[shutdown]
handoff = [%q]
drain_timeout = "100ms"
[[route]]
domains = ["*"]
via = "qmtp://127.0.0.1:1"
`
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := startHub(t, fmt.Sprintf(conf, "qmtp://"+b.addr("qmtp")))
	sendToUser(t, a, 3)
	rep, err := queue.Drain(ctx, a.cfg.QueueDir, "handoff", queue.DrainRequest{})
	if err != nil || rep.HandedOffRecipients != 3 || rep.Remaining != 0 || rep.Problem != "" {
		t.Fatalf("live hand-off: %+v %v", rep, err)
	}
	if err := a.hub.Ready(); err != nil {
		t.Fatalf("not ready after a live hand-off: %v", err)
	}
	sendToUser(t, a, 2)
	metrics, addrA := a.addr("metrics"), a.addr("qmtp")
	rep, err = queue.Drain(ctx, a.cfg.QueueDir, "drain", queue.DrainRequest{})
	if err != nil || rep.HandedOffRecipients != 2 || rep.Remaining != 0 || rep.Left(true) {
		t.Fatalf("drain: %+v %v", rep, err)
	}
	testpeer.Recv(t, "the drain to end", time.Minute, a.hub.Drained())
	if res, err := a.hub.DrainOutcome(); err != nil || res.Remaining != 0 {
		t.Fatalf("outcome: %+v %v", res, err)
	}
	a.hub = nil
	for _, addr := range []string{addrA, metrics} {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Errorf("a drained hub still accepts connections on %s", addr)
		}
	}
	root := filepath.Join(b.dir, "maildir")
	testpeer.WaitFor(t, "every message at the peer", 30*time.Second, func() bool {
		return len(maildirFiles(t, root, "example.com", "user")) == 5
	})

	// The peer is down: what is left stays, and the report says so.
	c := startHub(t, fmt.Sprintf(conf, "qmtp://127.0.0.1:1"))
	sendToUser(t, c, 2)
	rep, err = queue.Drain(ctx, c.cfg.QueueDir, "drain", queue.DrainRequest{})
	testpeer.Recv(t, "the drain to end", time.Minute, c.hub.Drained())
	c.hub = nil
	if err != nil || rep.Remaining != 2 || !rep.Left(true) || rep.Problem == "" {
		t.Fatalf("drain to a dead peer: %+v %v", rep, err)
	}
}
