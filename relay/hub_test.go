package relay

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
)

// testHub is a running hub on loopback ports chosen by the kernel.
type testHub struct {
	t    *testing.T
	hub  *Hub
	dir  string
	cfg  *config.Config
	log  *bytes.Buffer
	logm *sync.Mutex
}

type syncWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (s syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// startHub starts a hub from a TOML document; "DIR" in it is replaced by the
// hub's own temporary directory. Listeners default to port 0.
func startHub(t *testing.T, doc string) *testHub {
	t.Helper()
	dir := t.TempDir()
	doc = strings.ReplaceAll(doc, "DIR", dir)
	if !strings.Contains(doc, "queue_dir") {
		doc = "queue_dir = \"" + dir + "/queue\"\n" + doc
	}
	cfg, err := config.Parse("test.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	th := &testHub{t: t, dir: dir, cfg: cfg, log: &bytes.Buffer{}, logm: &sync.Mutex{}}
	var w io.Writer = syncWriter{th.logm, th.log}
	if testing.Verbose() {
		w = io.MultiWriter(w, syncWriter{th.logm, os.Stderr})
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	th.hub = h
	t.Cleanup(th.stop)
	return th
}

func (th *testHub) stop() {
	if th.hub == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := th.hub.Shutdown(ctx); err != nil {
		th.t.Errorf("shutdown: %v", err)
	}
	th.hub = nil
}

func (th *testHub) addr(kind string) string {
	a := th.hub.Addrs()[kind]
	if len(a) == 0 {
		th.t.Fatalf("no %s listener", kind)
	}
	return a[0]
}

func (th *testHub) logText() string {
	th.logm.Lock()
	defer th.logm.Unlock()
	return th.log.String()
}

// maildirFiles returns the messages delivered into DIR/maildir/domain/user.
func maildirFiles(t *testing.T, root, domain, user string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(root, domain, user, "new", "*"))
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

var traceRE = regexp.MustCompile(`(?m)\A((Return-Path|Delivered-To): [^\n]*\n|Received: [^\n]*\n(  [^\n]*\n)*)+`)

// stripTrace removes the trace lines hubs add at the top of a message.
func stripTrace(s string) string { return traceRE.ReplaceAllString(s, "") }

func sendQMTP(t *testing.T, addr string, env mail.Envelope, body string) []mail.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := qmtp.Send(ctx, addr, &qmtp.Message{Envelope: env, Body: strings.NewReader(body), Size: int64(len(body))})
	if err != nil && len(res) == 0 {
		t.Fatalf("qmtp send: %v", err)
	}
	return res[0]
}

// startChain starts hub B, taking example.com over QMTP into a Maildir,
// and hub A, which takes mail on the listener that the TOML section listen
// configures and sends all of it to B over QMTP.
func startChain(t *testing.T, listen string) (a, b *testHub) {
	t.Helper()
	b = startHub(t, `
hostname = "hub-b.test"
rcpthosts = ["example.com"]
[qmtp]
listen = ["127.0.0.1:0"]
[[route]]
domains = ["example.com"]
via = "maildir:DIR/maildir"
`)
	a = startHub(t, fmt.Sprintf(`
hostname = "hub-a.test"
%s
[[route]]
domains = ["*"]
via = "qmtp://%s"
`, listen, b.addr("qmtp")))
	return a, b
}

// TestHubChainQMQPtoQMTPtoMaildir: Postfix's qmqp-source (a nullclient
// stand-in) → hub A over QMQP → QMTP → hub B → Maildir. Every message arrives
// once, byte-identical apart from the trace lines.
func TestHubChainQMQPtoQMTPtoMaildir(t *testing.T) {
	src := testpeer.Need(t, "qmqp-source")
	a, b := startChain(t, `
[qmqp]
listen = ["127.0.0.1:0"]
allow = ["127.0.0.0/8"]
`)
	const n = 1000
	cmd := exec.Command(src, "-s", "10", "-m", fmt.Sprint(n), "-l", "2048", "-t", "user@example.com", "-f", "sender@src.test", a.addr("qmqp"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("qmqp-source: %v\n%s", err, out)
	}
	root := filepath.Join(b.dir, "maildir")
	testpeer.WaitFor(t, "all messages in hub B's maildir", 60*time.Second, func() bool {
		files, _ := filepath.Glob(filepath.Join(root, "example.com", "user", "new", "*"))
		return len(files) >= n
	})
	msgs := maildirFiles(t, root, "example.com", "user")
	if len(msgs) != n {
		t.Fatalf("want exactly %d messages, got %d", n, len(msgs))
	}
	first := stripTrace(msgs[0])
	if len(first) != 2048 {
		t.Fatalf("body is %d bytes, want qmqp-source's 2048:\n%q", len(first), first[:200])
	}
	for i, m := range msgs {
		if !strings.HasPrefix(m, "Return-Path: <sender@src.test>\nDelivered-To: user@example.com\nReceived: from unknown (127.0.0.1)\n  by hub-b.test with QMTP; ") {
			t.Fatalf("message %d trace:\n%s", i, m[:300])
		}
		if !strings.Contains(m, "  by hub-a.test with QMQP; ") {
			t.Fatalf("message %d lacks hub A's Received line", i)
		}
		if stripTrace(m) != first {
			t.Fatalf("message %d body differs", i)
		}
	}
	testpeer.WaitFor(t, "hub A's queue to empty", 30*time.Second, func() bool { return a.hub.Queue().Metrics().Messages == 0 })
}

// TestHubRetryAndBounce: hub B down → mail waits and is delivered once B is
// up; B refusing permanently → a DSN reaches the sender's Maildir at hub A.
func TestHubRetryAndBounce(t *testing.T) {
	// Reserve B's address, start A pointing at it while nothing listens.
	bAddr := testpeer.FreePort(t)
	a := startHub(t, fmt.Sprintf(`
hostname = "hub-a.test"
rcpthosts = ["a.example"]
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.0/8"]
[queue]
retry_min = "200ms"
retry_max = "400ms"
[[route]]
domains = ["a.example"]
via = "maildir:DIR/maildir"
[[route]]
domains = ["*"]
via = "qmtp://%s"
`, bAddr))
	env := mail.Envelope{Sender: "alice@a.example", Recipients: []string{"bob@b.example", "nobody@refused.example"}}
	body := "Subject: retry\n\nhello\n"
	for _, st := range sendQMTP(t, a.addr("qmtp"), env, body) {
		if !st.IsAccept() {
			t.Fatalf("hub A refused: %v", st)
		}
	}
	testpeer.WaitFor(t, "a failed attempt", 20*time.Second, func() bool {
		return strings.Contains(a.logText(), "could not connect")
	})
	if a.hub.Queue().Metrics().Messages != 1 {
		t.Fatal("the message left the queue while B is down")
	}
	// Now B comes up on the reserved address: rcpthosts b.example only, so
	// refused.example fails permanently.
	b := startHub(t, fmt.Sprintf(`
hostname = "hub-b.test"
rcpthosts = ["b.example"]
[qmtp]
listen = [%q]
[[route]]
domains = ["b.example"]
via = "maildir:DIR/maildir"
`, bAddr))
	testpeer.WaitFor(t, "delivery at B", 30*time.Second, func() bool {
		return len(maildirFiles(t, filepath.Join(b.dir, "maildir"), "b.example", "bob")) == 1
	})
	got := maildirFiles(t, filepath.Join(b.dir, "maildir"), "b.example", "bob")[0]
	if stripTrace(got) != body {
		t.Fatalf("body at B: %q", got)
	}
	testpeer.WaitFor(t, "the bounce in alice's maildir", 30*time.Second, func() bool {
		return len(maildirFiles(t, filepath.Join(a.dir, "maildir"), "a.example", "alice")) == 1
	})
	dsn := maildirFiles(t, filepath.Join(a.dir, "maildir"), "a.example", "alice")[0]
	for _, want := range []string{"Return-Path: <>", "multipart/report", "report-type=delivery-status",
		"Final-Recipient: rfc822; nobody@refused.example", "Action: failed", "Status: 5.7.1",
		"isn't in my list of allowed rcpthosts", "Subject: retry"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
	if strings.Contains(dsn, "bob@b.example") && strings.Contains(dsn, "Final-Recipient: rfc822; bob@b.example") {
		t.Errorf("DSN names the delivered recipient:\n%s", dsn)
	}
}

// TestHubUserExt: a user-ext address lands in the user's Maildir with the full
// address in Delivered-To.
func TestHubUserExt(t *testing.T) {
	h := startHub(t, `
rcpthosts = ["example.com"]
[qmtp]
listen = ["127.0.0.1:0"]
[[route]]
domains = ["example.com"]
via = "maildir:DIR/maildir"
`)
	body := "Subject: ext\n\nx\n"
	st := sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "s@x.test", Recipients: []string{"joe-lists-go@Example.COM"}}, body)
	if !st[0].IsAccept() {
		t.Fatal(st[0])
	}
	testpeer.WaitFor(t, "delivery", 20*time.Second, func() bool {
		return len(maildirFiles(t, filepath.Join(h.dir, "maildir"), "example.com", "joe")) == 1
	})
	m := maildirFiles(t, filepath.Join(h.dir, "maildir"), "example.com", "joe")[0]
	if !strings.HasPrefix(m, "Return-Path: <s@x.test>\nDelivered-To: joe-lists-go@Example.COM\nReceived: ") || stripTrace(m) != body {
		t.Fatalf("delivered:\n%s", m)
	}
}

// TestHubNoOpenRelay: a stranger gets the rcpthosts refusal for every foreign
// form over QMTP, and QMQP refuses clients off its allow list.
func TestHubNoOpenRelay(t *testing.T) {
	h := startHub(t, `
rcpthosts = ["example.net", ".example.net"]
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["10.0.0.0/8"]
[qmqp]
listen = ["127.0.0.1:0"]
allow = ["10.0.0.0/8"]
[[route]]
domains = ["*"]
via = "discard:"
`)
	foreign := []string{"victim@other.org", "victim%other.org@example.net", "other.org!victim@example.net",
		"victim@other.org@example.net", "@example.net:victim@other.org", "victim@[192.0.2.1]", "victim@other.org.",
		"VICTIM@OTHER.ORG", "victim@example.net.other.org", "victim"}
	sts := sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "s@x.test", Recipients: append(foreign, "ok@sub.example.net")}, "x\n")
	for i, rcpt := range foreign {
		if sts[i].IsAccept() {
			t.Errorf("open relay: %q accepted", rcpt)
		}
	}
	if !sts[len(foreign)].IsAccept() {
		t.Errorf("local recipient refused: %v", sts[len(foreign)])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, _ := (&qmqp.Client{Servers: []string{h.addr("qmqp")}}).Send(ctx, mail.Envelope{Recipients: []string{"ok@example.net"}}, strings.NewReader("x\n"), 2)
	if !res.Status.IsPermanent() || !strings.Contains(res.Status.Text, "not authorized") {
		t.Fatalf("QMQP from a stranger: %v", res.Status)
	}
}

// TestHubWebhook: a webhook that fails twice and then succeeds delivers the
// message once; one that answers 400 bounces it to the sender.
func TestHubWebhook(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		rcpt := r.Header.Get("X-Qmgate-Recipient")
		calls[rcpt]++
		switch {
		case strings.HasPrefix(rcpt, "flaky@") && calls[rcpt] <= 2:
			w.WriteHeader(503)
		case strings.HasPrefix(rcpt, "flaky@"):
			bodies = append(bodies, string(b))
			w.WriteHeader(204)
		default:
			w.WriteHeader(400)
		}
	}))
	defer srv.Close()
	h := startHub(t, fmt.Sprintf(`
rcpthosts = ["hooks.test", "a.example"]
[qmtp]
listen = ["127.0.0.1:0"]
[queue]
retry_min = "100ms"
retry_max = "200ms"
[[route]]
domains = ["a.example"]
via = "maildir:DIR/maildir"
[[route]]
domains = ["hooks.test"]
via = "%s/hook"
`, srv.URL))
	body := "Subject: hook\n\npayload\n"
	for _, rcpt := range []string{"flaky@hooks.test", "strict@hooks.test"} {
		st := sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "alice@a.example", Recipients: []string{rcpt}}, body)
		if !st[0].IsAccept() {
			t.Fatal(st[0])
		}
	}
	testpeer.WaitFor(t, "the bounce for strict@", 30*time.Second, func() bool {
		return len(maildirFiles(t, filepath.Join(h.dir, "maildir"), "a.example", "alice")) == 1
	})
	testpeer.WaitFor(t, "the flaky webhook's success", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(bodies) == 1
	})
	testpeer.WaitFor(t, "an empty queue", 30*time.Second, func() bool { return h.hub.Queue().Metrics().Messages == 0 })
	mu.Lock()
	defer mu.Unlock()
	if calls["flaky@hooks.test"] != 3 || calls["strict@hooks.test"] != 1 {
		t.Fatalf("calls: %v", calls)
	}
	if stripTrace(bodies[0]) != body {
		t.Fatalf("webhook body %q", bodies[0])
	}
	dsn := maildirFiles(t, filepath.Join(h.dir, "maildir"), "a.example", "alice")[0]
	if !strings.Contains(dsn, "Final-Recipient: rfc822; strict@hooks.test") || !strings.Contains(dsn, "webhook answered 400") {
		t.Fatalf("DSN:\n%s", dsn)
	}
}

// TestHubReloadUnderLoad: reloads while clients send keep every connection
// and every message.
func TestHubReloadUnderLoad(t *testing.T) {
	doc := `
rcpthosts = ["example.com"]
[qmtp]
listen = ["127.0.0.1:0"]
[[route]]
domains = ["example.com"]
via = "maildir:DIR/maildir"
concurrency = %d
`
	h := startHub(t, fmt.Sprintf(doc, 4))
	const senders, perSender = 4, 50
	var wg sync.WaitGroup
	var accepted, failed sync.Map
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			conn, err := (&qmtp.Client{}).Dial(ctx, h.addr("qmtp"))
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			for i := 0; i < perSender; i++ {
				body := fmt.Sprintf("Subject: %d-%d\n\nx\n", s, i)
				res, err := conn.Send(ctx, &qmtp.Message{Envelope: mail.Envelope{Sender: "s@x.test", Recipients: []string{"user@example.com"}},
					Body: strings.NewReader(body), Size: int64(len(body))})
				if err != nil || !res[0][0].IsAccept() {
					failed.Store(body, fmt.Sprint(err, res))
					continue
				}
				accepted.Store(body, true)
			}
		}()
	}
	for i := 0; i < 10; i++ {
		doc2 := strings.ReplaceAll(fmt.Sprintf(doc, 1+i%4), "DIR", h.dir)
		cfg, err := config.Parse("reload.toml", []byte("queue_dir = \""+h.dir+"/queue\"\n"+doc2))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.hub.Reload(cfg); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	testpeer.Wait(t, "the clients during reloads", time.Minute, &wg)
	failed.Range(func(k, v any) bool {
		t.Errorf("lost during reload: %q: %v", k, v)
		return true
	})
	n := 0
	accepted.Range(func(any, any) bool { n++; return true })
	if n != senders*perSender {
		t.Fatalf("accepted %d of %d", n, senders*perSender)
	}
	testpeer.WaitFor(t, "every message delivered", 60*time.Second, func() bool {
		return len(maildirFiles(t, filepath.Join(h.dir, "maildir"), "example.com", "user")) == n
	})
	seen := map[string]int{}
	for _, m := range maildirFiles(t, filepath.Join(h.dir, "maildir"), "example.com", "user") {
		seen[stripTrace(m)]++
	}
	accepted.Range(func(k, _ any) bool {
		if seen[k.(string)] != 1 {
			t.Errorf("%q delivered %d times", k, seen[k.(string)])
		}
		return true
	})
}

// TestHubDeadHubDoesNotHoldOthers: with one next hop down (connections hang
// until their timeout), mail for other routes still flows.
func TestHubDeadHubDoesNotHoldOthers(t *testing.T) {
	// A listener that accepts and never answers: each QMTP attempt waits for
	// its I/O timeout.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	h := startHub(t, fmt.Sprintf(`
rcpthosts = ["local.test", "stuck.test"]
[qmtp]
listen = ["127.0.0.1:0"]
[delivery]
timeout = "1h"
[[route]]
domains = ["stuck.test"]
via = "qmtp://%s"
concurrency = 2
[[route]]
domains = ["local.test"]
via = "maildir:DIR/maildir"
`, l.Addr()))
	for i := 0; i < 30; i++ {
		for _, rcpt := range []string{fmt.Sprintf("u%d@stuck.test", i), "user@local.test"} {
			st := sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "s@x.test", Recipients: []string{rcpt}}, fmt.Sprintf("Subject: %d\n\nx\n", i))
			if !st[0].IsAccept() {
				t.Fatal(st[0])
			}
		}
	}
	testpeer.WaitFor(t, "local deliveries while the other hub hangs", 30*time.Second, func() bool {
		return len(maildirFiles(t, filepath.Join(h.dir, "maildir"), "local.test", "user")) == 30
	})
	// A maildir file is there before its delivery is recorded and the message
	// leaves the queue, so wait for the queue to drain to the stuck ones.
	testpeer.WaitFor(t, "the queue to hold only the stuck hub's mail", 30*time.Second, func() bool {
		return h.hub.Queue().Metrics().Messages == 30
	})
}
