package transport

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// fakeHop answers every job with one status, as a host that failed to
// connect (down) or that took the connection and answered.
type fakeHop struct {
	st    mail.Status
	down  bool
	tried int
}

func (f *fakeHop) Deliver(_ context.Context, jobs []*Job) {
	for _, j := range jobs {
		f.tried++
		j.SetAll(f.st, "fake")
		for i := range j.Results {
			j.Results[i].HostDown = f.down
		}
		if !f.down {
			j.Done()
		}
	}
}
func (f *fakeHop) Close() error { return nil }

func failoverJob() *Job {
	return &Job{ID: "1", Envelope: mail.Envelope{Sender: "a@x.test", Recipients: []string{"b@y.test"}},
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("x\n")), nil }}
}

// TestFailoverOneHostPerMessage: a job moves to the next hop only when its
// hop failed before any transaction; a deferral or a refusal from a hop
// that answered stays that hop's result. Hops in their backoff go last, and
// a route without an OAuth2 token blames no host.
func TestFailoverOneHostPerMessage(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	h := NewHealth(func() time.Time { return now })
	deferring := &fakeHop{st: mail.Temp("4.2.1", "remote host said: 450 mailbox busy")}
	second := &fakeHop{st: mail.OK("ok")}
	f := &Failover{Health: h, Hops: []Hop{{"smtp://a", deferring}, {"smtp://b", second}}}
	j := failoverJob()
	done := 0
	j.OnDone = func() { done++ }
	f.Deliver(context.Background(), []*Job{j})
	j.Done()
	if deferring.tried != 1 || second.tried != 0 || done != 1 || j.Results[0].Status.IsAccept() {
		t.Fatalf("deferral moved on: tried %d/%d, done %d, %v", deferring.tried, second.tried, done, j.Results[0].Status)
	}

	dead := &fakeHop{st: mail.StatusConnectFailed, down: true}
	f = &Failover{Health: h, Hops: []Hop{{"smtp://dead", dead}, {"smtp://b", second}}}
	j = failoverJob()
	f.Deliver(context.Background(), []*Job{j})
	if dead.tried != 1 || second.tried != 1 || !j.Results[0].Status.IsAccept() || j.Results[0].HostDown {
		t.Fatalf("dead host: tried %d/%d, %+v", dead.tried, second.tried, j.Results[0])
	}
	if h.Up("smtp://dead") || !h.Up("smtp://b") {
		t.Fatalf("health %+v", h.Snapshot())
	}
	// In its backoff the dead host goes last: the next job goes straight
	// to b.
	f.Deliver(context.Background(), []*Job{failoverJob()})
	if dead.tried != 1 || second.tried != 2 {
		t.Fatalf("host in backoff tried first: %d/%d", dead.tried, second.tried)
	}
	// After the backoff it is tried again, and a second failure doubles it.
	now = now.Add(MinHostBackoff)
	f.Deliver(context.Background(), []*Job{failoverJob()})
	if dead.tried != 2 {
		t.Fatalf("dead host not retried after its backoff")
	}
	var s HostHealth
	for _, x := range h.Snapshot() {
		if x.Host == "smtp://dead" {
			s = x
		}
	}
	if s.Failures != 2 || !s.DownUntil.Equal(now.Add(2*MinHostBackoff)) {
		t.Fatalf("second failure: %+v", s)
	}

	// No token: the route's trouble, not the host's.
	notoken := &fakeHop{st: mail.Temp("4.7.0", "OAuth2 grant of route m365 was revoked or has expired; run: qmgate oauth2 login m365"), down: true}
	other := &fakeHop{st: mail.OK("ok")}
	f = &Failover{Health: h, Hops: []Hop{{"smtp://c", notoken}, {"smtp://d", other}}}
	j = failoverJob()
	f.Deliver(context.Background(), []*Job{j})
	if other.tried != 0 || !h.Up("smtp://c") || j.Results[0].Status.IsAccept() {
		t.Fatalf("token failure: tried %d, health %+v, %v", other.tried, h.Snapshot(), j.Results[0].Status)
	}
}
