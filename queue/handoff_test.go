package queue

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// TestContinue: a handed-off message continues its arrival time, attempts
// and delay notice, and keeps them across a restart (the snapshot is
// durable); an arrival later than the local one is ignored.
func TestContinue(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	q := openT(t, dir, Options{Logger: quietLogger(), Passive: true})
	id, err := q.Put(ctx, mail.Envelope{Sender: "s@a.test", Recipients: []string{"r@b.test", "q@b.test"}}, strings.NewReader("Subject: x\n\nbody\n"))
	if err != nil {
		t.Fatal(err)
	}
	arrival := time.Now().Add(-3 * time.Hour).UTC().Truncate(time.Millisecond)
	if err := q.Continue(ctx, id, Continuation{Arrival: arrival, Attempts: 4, DelayNotified: true}); err != nil {
		t.Fatal(err)
	}
	if err := q.Continue(ctx, id, Continuation{Arrival: time.Now().Add(time.Hour), Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	if err := q.Continue(ctx, "nosuchid", Continuation{}); err == nil {
		t.Fatal("unknown ID continued")
	}
	q.Close()
	q = openT(t, dir, Options{Logger: quietLogger(), Passive: true})
	defer q.Close()
	d, err := q.Show(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Received.Equal(arrival) || d.Attempts != 4 || !d.DelayNotified {
		t.Fatalf("after restart: received %v attempts %d delay notified %v", d.Received, d.Attempts, d.DelayNotified)
	}
	if !strings.Contains(d.Header, "Subject: x") {
		t.Fatalf("header after restart: %q", d.Header)
	}
}
