package qmail

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
)

func TestCommitToQueue(t *testing.T) {
	dir := t.TempDir()
	body := "Subject: spooled\n\nbody\n"
	env := mail.Envelope{Sender: "app@example.net", Recipients: []string{"a@example.org", "b@example.org"}}
	id, err := CommitToQueue(context.Background(), dir, env, strings.NewReader(body+"extra"), int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Open(dir, queue.Options{Passive: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := q.List(context.Background())
	if err != nil || len(rows) != 1 || rows[0].ID != id || rows[0].Size != int64(len(body)) || rows[0].Sender != env.Sender || len(rows[0].Pending) != 2 {
		t.Fatalf("%+v %v", rows, err)
	}
	// While a process holds the queue, a direct commit is refused.
	_, err = CommitToQueue(context.Background(), dir, env, strings.NewReader(body), int64(len(body)))
	if !errors.Is(err, ErrQueueBusy) {
		t.Fatalf("got %v", err)
	}
	q.Close()
}

func TestCommitToQueueMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "absent")
	_, err := CommitToQueue(context.Background(), dir, mail.Envelope{Recipients: []string{"a@x"}}, strings.NewReader("x"), 1)
	if err == nil {
		t.Fatal("a missing queue directory was created")
	}
}
