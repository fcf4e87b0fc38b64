package relay

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
)

// stepTransport delivers job after job, marking each Done, and before each
// job after the first waits until the queue has recorded the ones before
// it: the record of a job must not wait for the rest of its batch.
type stepTransport struct {
	t       *testing.T
	q       *queue.Queue
	total   int
	waited  []bool
	started chan struct{}
}

func (s *stepTransport) Deliver(ctx context.Context, jobs []*Job) {
	for k, j := range jobs {
		if k > 0 {
			want := s.total - k // messages left once k jobs are recorded
			deadline := time.Now().Add(10 * time.Second)
			for s.q.Metrics().Messages > want && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			s.waited = append(s.waited, s.q.Metrics().Messages <= want)
		}
		j.setAll(mail.OK("taken"), "step:")
		j.Done()
	}
}

func (s *stepTransport) Close() error { return nil }

// TestEngineRecordsEachJobWhenDone: a transport that marks each job Done
// gets it recorded while it is still delivering the rest of its batch, so
// a crash mid-batch repeats at most the job under way (the crash window),
// not the whole batch.
func TestEngineRecordsEachJobWhenDone(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	q, err := queue.Open(t.TempDir(), queue.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	const n = 4
	for i := 0; i < n; i++ {
		env := mail.Envelope{Sender: "s@x.test", Recipients: []string{"r@y.test"}}
		if _, err := q.Put(context.Background(), env, strings.NewReader("Subject: step\n\nx\n")); err != nil {
			t.Fatal(err)
		}
	}
	ds := q.Claim(n)
	if len(ds) != n {
		t.Fatalf("claimed %d deliveries, want %d", len(ds), n)
	}
	tr := &stepTransport{t: t, q: q, total: n}
	e := &Engine{Queue: q, Log: log}
	e.deliver(context.Background(), &Route{Name: "route[0]", Via: "step:", Transport: tr}, ds)
	for k, ok := range tr.waited {
		if !ok {
			t.Errorf("job %d started before the jobs ahead of it in the batch were recorded", k+1)
		}
	}
	if m := q.Metrics().Messages; m != 0 {
		t.Errorf("%d messages left after the batch", m)
	}
}
