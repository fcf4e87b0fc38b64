package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
	"github.com/qmgate/qmgate/relay"
)

// TestQueueHandoff: "qmgate queue handoff" moves a stopped hub's queue to
// a running peer, and "-held" the held messages too.
func TestQueueHandoff(t *testing.T) {
	dir := t.TempDir()
	peerCfg, err := config.Parse("peer.toml", []byte(`
queue_dir = "`+dir+`/peer"
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.1"]
[[route]]
domains = ["*"]
via = "discard:"
`))
	if err != nil {
		t.Fatal(err)
	}
	peer, err := relay.New(peerCfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := peer.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := peer.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		peer.Shutdown(ctx)
	}()

	qdir := filepath.Join(dir, "queue")
	q, err := queue.Open(qdir, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ids []string
	for range 3 {
		id, err := q.Put(ctx, mail.Envelope{Sender: "s@x.test", Recipients: []string{"r@y.test"}}, strings.NewReader("x\n"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := q.Hold(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	q.Close()
	cfgFile := filepath.Join(dir, "qmgate.toml")
	os.WriteFile(cfgFile, []byte("queue_dir = \""+qdir+"\"\n"), 0o644)

	run := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := runQueue(append([]string{"handoff", "-config", cfgFile}, args...), nil, &out, &errb)
		return code, out.String() + errb.String()
	}
	peerAddr := "qmtp://" + peer.Addrs()["qmtp"][0]
	if code, out := run("qmtp://127.0.0.1:1," + peerAddr); code != 0 || !strings.Contains(out, "handed off 2 recipients of 2 messages") {
		t.Fatalf("handoff: %d\n%s", code, out)
	}
	if code, out := run("-held", peerAddr); code != 0 || !strings.Contains(out, "handed off 1 recipients") || !strings.Contains(out, "0 messages (0 recipients) remain") {
		t.Fatalf("handoff -held: %d\n%s", code, out)
	}
	if code, _ := run("smtp://x"); code != 64 {
		t.Fatalf("bad peer: exit %d", code)
	}
}
