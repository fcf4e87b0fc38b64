package relay

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
	"github.com/qmgate/qmgate/relay/transport"
)

// blockedMX answers every job as an mx route does when port 25 is
// filtered: no exchanger answered a connection.
type blockedMX struct {
	mu    sync.Mutex
	tries int
	fail  string
}

func (b *blockedMX) Deliver(_ context.Context, jobs []*transport.Job) {
	b.mu.Lock()
	b.tries += len(jobs)
	b.mu.Unlock()
	for _, j := range jobs {
		j.SetAll(mail.Temp("4.4.1", "could not connect to any mail exchanger of y.test"), "y.test")
		for i := range j.Results {
			j.Results[i].Failure = b.fail
		}
	}
}
func (b *blockedMX) Close() error { return nil }

// TestFallbackAtOnce: an mx route whose exchangers time out hands the mail
// to its fallback route in the same delivery; a failure fallback_on does
// not name leaves it to the queue's retry.
func TestFallbackAtOnce(t *testing.T) {
	for _, tc := range []struct {
		on, fail string
		fellBack bool
	}{
		{"connect-timeout", transport.FailureConnectTimeout, true},
		{"connect", transport.FailureConnectTimeout, true},
		{"connect-timeout", transport.FailureConnect, false},
	} {
		q, log := queueOfSteps(t, 1)
		mx := &blockedMX{fail: tc.fail}
		smart := &orderTransport{}
		router := &Router{Routes: []*Route{
			{Name: "relay", Via: "order:", Transport: smart, Concurrency: 1, Patterns: mail.HostList([]string{"smarthost.invalid"})},
			{Name: "any-mx", Via: "mx", Transport: mx, Concurrency: 1, Patterns: mail.HostList([]string{"*"}),
				Fallback: &Fallback{Route: "relay", After: 3, On: []string{tc.on}}},
		}}
		e := &Engine{Queue: q, Log: log, Routes: func() *Router { return router }}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		if tc.fellBack {
			if !waitRecorded(q, 0) {
				t.Errorf("%s on %s: not delivered through the fallback", tc.fail, tc.on)
			}
		} else {
			testpeer.Poll(10*time.Second, 5*time.Millisecond, func() bool { mx.mu.Lock(); defer mx.mu.Unlock(); return mx.tries > 0 })
		}
		cancel()
		testpeer.Recv(t, "the engine to stop", 30*time.Second, done)
		smart.mu.Lock()
		got := len(smart.ids)
		smart.mu.Unlock()
		if (got == 1) != tc.fellBack {
			t.Errorf("%s on %s: fallback took %d messages", tc.fail, tc.on, got)
		}
	}
}

// TestFallbackAfterAttempts: a message that failed fallback_after times on
// its mx route goes to the fallback route.
func TestFallbackAfterAttempts(t *testing.T) {
	q, log := queueOfSteps(t, 1)
	ds := q.Claim(1)
	for a := 0; a < 2; a++ {
		if err := q.Record(context.Background(), ds[0], []queue.Result{{Recipient: "r@y.test", Status: mail.Temp("4.4.1", "no")}}); err != nil {
			t.Fatal(err)
		}
		q.Flush(context.Background())
		if ds = q.Claim(1); len(ds) != 1 {
			t.Fatalf("claimed %d", len(ds))
		}
	}
	if ds[0].Attempts != 2 {
		t.Fatalf("attempts %d", ds[0].Attempts)
	}
	q.Record(context.Background(), ds[0], nil)
	mx := &blockedMX{}
	smart := &orderTransport{}
	router := &Router{Routes: []*Route{
		{Name: "relay", Via: "order:", Transport: smart, Concurrency: 1, Patterns: mail.HostList([]string{"smarthost.invalid"})},
		{Name: "any-mx", Via: "mx", Transport: mx, Concurrency: 1, Patterns: mail.HostList([]string{"*"}),
			Fallback: &Fallback{Route: "relay", After: 2}},
	}}
	e := &Engine{Queue: q, Log: log, Routes: func() *Router { return router }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	if !waitRecorded(q, 0) {
		t.Errorf("not delivered through the fallback")
	}
	cancel()
	testpeer.Recv(t, "the engine to stop", 30*time.Second, done)
	if strings.Join(smart.ids, ",") == "" || mx.tries != 0 {
		t.Errorf("fallback got %v, mx tried %d", smart.ids, mx.tries)
	}
}
