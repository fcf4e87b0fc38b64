package relay

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/netstring"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/queue"
	"github.com/qmgate/qmgate/relay/transport"
)

// stepTransport delivers job after job, marking each Done, and before each
// job after the first waits until the queue has recorded the ones before
// it: the record of a job must not wait for the rest of its batch.
type stepTransport struct {
	t      *testing.T
	q      *queue.Queue
	total  int
	waited []bool
}

func (s *stepTransport) Deliver(ctx context.Context, jobs []*transport.Job) {
	for k, j := range jobs {
		if k > 0 {
			s.waited = append(s.waited, waitRecorded(s.q, s.total-k))
		}
		j.SetAll(mail.OK("taken"), "step:")
		j.Done()
	}
}

func (s *stepTransport) Close() error { return nil }

// waitRecorded waits (up to 10 s) until at most left messages remain in q,
// that is until the ones before have been recorded, and reports whether
// they were.
func waitRecorded(q *queue.Queue, left int) bool {
	return testpeer.Poll(10*time.Second, 5*time.Millisecond, func() bool { return q.Metrics().Messages <= left })
}

// queueOfSteps opens a queue holding n one-recipient messages.
// wholeParts makes each claimed delivery one part, as the engine does when
// one route serves all its recipients, and takes its slot.
func wholeParts(e *Engine, ds []*queue.Delivery) []*part {
	e.tokens = make(chan struct{}, len(ds))
	ps := make([]*part, len(ds))
	for k, d := range ds {
		e.tokens <- struct{}{}
		c := newClaimed(d)
		c.left = 1
		ps[k] = &part{c: c}
		for i := range d.Recipients {
			ps[k].idx = append(ps[k].idx, i)
		}
	}
	return ps
}

func queueOfSteps(t *testing.T, n int) (*queue.Queue, *slog.Logger) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	q, err := queue.Open(t.TempDir(), queue.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	for i := 0; i < n; i++ {
		env := mail.Envelope{Sender: "s@x.test", Recipients: []string{"r@y.test"}}
		if _, err := q.Put(context.Background(), env, strings.NewReader("Subject: step\n\nx\n")); err != nil {
			t.Fatal(err)
		}
	}
	return q, log
}

// TestEngineRecordsEachJobWhenDone: a transport that marks each job Done
// gets it recorded while it is still delivering the rest of its batch, so
// a crash mid-batch repeats at most the job under way (the crash window),
// not the whole batch.
func TestEngineRecordsEachJobWhenDone(t *testing.T) {
	const n = 4
	q, log := queueOfSteps(t, n)
	ds := q.Claim(n)
	if len(ds) != n {
		t.Fatalf("claimed %d deliveries, want %d", len(ds), n)
	}
	tr := &stepTransport{t: t, q: q, total: n}
	e := &Engine{Queue: q, Log: log}
	e.deliver(context.Background(), &Route{Name: "route[0]", Via: "step:", Transport: tr}, wholeParts(e, ds))
	testpeer.Wait(t, "the delivery records", 30*time.Second, &e.records)
	for k, ok := range tr.waited {
		if !ok {
			t.Errorf("job %d started before the jobs ahead of it in the batch were recorded", k+1)
		}
	}
	if m := q.Metrics().Messages; m != 0 {
		t.Errorf("%d messages left after the batch", m)
	}
}

// TestEngineRecordsQMTPPerMessage: over the QMTP transport, a pipelined
// batch's messages are recorded one by one as their replies arrive. The
// next hop here answers each package only once the queue has recorded the
// ones before it; if the transport recorded the batch only at its end, the
// hop would wait in vain.
func TestEngineRecordsQMTPPerMessage(t *testing.T) {
	const n = 5
	q, log := queueOfSteps(t, n)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	waited := make(chan []bool, 1)
	go func() {
		var got []bool
		defer func() { waited <- got }()
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		ns := netstring.NewReader(bufio.NewReader(c))
		for k := 0; k < n; k++ {
			for part := 0; part < 3; part++ { // message, sender, recipients
				if _, err := ns.ReadBytes(1 << 20); err != nil {
					return
				}
			}
			if k > 0 {
				got = append(got, waitRecorded(q, n-k))
			}
			if _, err := c.Write(netstring.Append(nil, []byte("Kok"))); err != nil {
				return
			}
		}
	}()
	ds := q.Claim(n)
	if len(ds) != n {
		t.Fatalf("claimed %d deliveries, want %d", len(ds), n)
	}
	tr := transport.NewQMTP(l.Addr().String(), &qmtp.Client{}, transport.Reuse{MaxIdle: 1})
	defer tr.Close()
	e := &Engine{Queue: q, Log: log}
	e.deliver(context.Background(), &Route{Name: "route[0]", Via: "qmtp://" + l.Addr().String(), Transport: tr}, wholeParts(e, ds))
	testpeer.Wait(t, "the delivery records", 30*time.Second, &e.records)
	got := testpeer.Recv(t, "the server's count", 30*time.Second, waited)
	if len(got) != n-1 {
		t.Fatalf("the next hop answered %d packages after the first, want %d", len(got), n-1)
	}
	for k, ok := range got {
		if !ok {
			t.Errorf("message %d answered before the ones ahead of it in the batch were recorded", k+2)
		}
	}
	if m := q.Metrics().Messages; m != 0 {
		t.Errorf("%d messages left after the batch", m)
	}
}
