package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/qmail"
	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/queue"
)

func qmqpServer(t *testing.T, reply mail.Status) (string, *[]string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var bodies []string
	srv := &qmqp.Server{AllowFunc: func(*mail.ConnInfo) bool { return true }, ErrorLog: quiet(),
		Handler: qmqp.HandlerFunc(func(ctx context.Context, req *qmqp.Request) mail.Status {
			b, _ := io.ReadAll(req.Body)
			if _, err := req.Envelope(); err != nil {
				return mail.StatusOf(err)
			}
			bodies = append(bodies, string(b))
			return reply
		})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), &bodies
}

// closedAddr returns a loopback address where nothing listens, reserved
// until the test ends: a server started later on port 0 cannot be given it.
func closedAddr(t *testing.T) string { return testpeer.FreePort(t) }

func muteAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			var b [1]byte
			c.Read(b[:])
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

func sinkPut(t *testing.T, s qmail.Sink, body string) qmail.Result {
	t.Helper()
	m, err := s.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(m, body)
	return m.Commit(context.Background(), mail.Envelope{Sender: "s@x", Recipients: []string{"r@y"}})
}

func TestQMQPSinkExitCodes(t *testing.T) {
	okAddr, bodies := qmqpServer(t, mail.OK("ok"))
	zAddr, _ := qmqpServer(t, mail.Temp("4.3.0", "later"))
	dAddr, _ := qmqpServer(t, mail.Perm("5.7.1", "no"))
	committed := 0
	commit := func(ctx context.Context, dir string, env mail.Envelope, body io.Reader, size int64) (string, error) {
		if dir == "fail" {
			return "", errors.New("permission denied")
		}
		committed++
		return "Q1", nil
	}
	cases := []struct {
		name    string
		s       *QMQPSink
		exit    int
		prefix  string
		commits int
	}{
		{"K", &QMQPSink{Servers: []string{okAddr}}, 0, "Kok", 0},
		{"failover", &QMQPSink{Servers: []string{closedAddr(t), okAddr}}, 0, "Kok", 0},
		{"Z", &QMQPSink{Servers: []string{zAddr}}, 71, "Zlater", 0},
		{"D", &QMQPSink{Servers: []string{dAddr}}, 31, "Dno", 0},
		{"refused", &QMQPSink{Servers: []string{closedAddr(t)}}, 73, "Zconnection to mail server rejected", 0},
		{"mute", &QMQPSink{Servers: []string{muteAddr(t)}}, 74, "Zcommunication with mail server failed", 0},
		{"no servers", &QMQPSink{}, 55, "Zqq unable to read configuration", 0},
		{"refused, queue dir", &QMQPSink{Servers: []string{closedAddr(t)}, QueueDir: "q", Commit: commit}, 0, "Kok ", 1},
		{"mute, no queue dir fallback", &QMQPSink{Servers: []string{muteAddr(t)}, QueueDir: "q", Commit: commit}, 74, "Z", 0},
		{"refused, queue dir fails", &QMQPSink{Servers: []string{closedAddr(t)}, QueueDir: "fail", Commit: commit}, 53, "Zqq write error", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := committed
			res := sinkPut(t, tc.s, "Subject: s\n\nbody\n")
			if res.Exit != tc.exit || !strings.HasPrefix(string(res.Status.Reply()), tc.prefix) || committed-before != tc.commits {
				t.Fatalf("exit %d %q commits %d", res.Exit, res.Status.Reply(), committed-before)
			}
		})
	}
	if len(*bodies) == 0 || !strings.HasSuffix((*bodies)[0], "\nSubject: s\n\nbody\n") {
		t.Fatalf("bodies %q", *bodies)
	}
}

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
	// While a process holds the queue past SpoolLockWait, a direct commit
	// is refused.
	defer func(w time.Duration) { SpoolLockWait = w }(SpoolLockWait)
	SpoolLockWait = 100 * time.Millisecond
	_, err = CommitToQueue(context.Background(), dir, env, strings.NewReader(body), int64(len(body)))
	if !errors.Is(err, ErrQueueBusy) {
		t.Fatalf("got %v", err)
	}
	// A holder that lets go within the wait (another sendmail spooling at
	// the same moment) only delays the commit.
	SpoolLockWait = time.Minute
	go func() {
		time.Sleep(200 * time.Millisecond)
		q.Close()
	}()
	id2, err := CommitToQueue(context.Background(), dir, env, strings.NewReader(body), int64(len(body)))
	if err != nil || id2 == "" || id2 == id {
		t.Fatalf("commit after the lock was released: %q %v", id2, err)
	}
}

// TestCommitToQueueConcurrent: sendmails spooling at the same moment all
// succeed, one after another.
func TestCommitToQueueConcurrent(t *testing.T) {
	dir := t.TempDir()
	body := "Subject: spooled\n\nbody\n"
	env := mail.Envelope{Sender: "app@example.net", Recipients: []string{"a@example.org"}}
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := CommitToQueue(context.Background(), dir, env, strings.NewReader(body), int64(len(body)))
			errs <- err
		}()
	}
	for range n {
		if err := testpeer.Recv(t, "a commit", 30*time.Second, errs); err != nil {
			t.Fatal(err)
		}
	}
	q, err := queue.Open(dir, queue.Options{Passive: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	rows, err := q.List(context.Background())
	if err != nil || len(rows) != n {
		t.Fatalf("%d messages in the queue, want %d (%v)", len(rows), n, err)
	}
}

func TestCommitToQueueMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "absent")
	_, err := CommitToQueue(context.Background(), dir, mail.Envelope{Recipients: []string{"a@x"}}, strings.NewReader("x"), 1)
	if err == nil {
		t.Fatal("a missing queue directory was created")
	}
}

// TestQMQPSinkProblem: a message that could not be queued says why in
// plain words for the operator, and the client's status names no path.
func TestQMQPSinkProblem(t *testing.T) {
	dir := t.TempDir()
	s := &QMQPSink{Servers: []string{"unix:" + filepath.Join(dir, "gone.sock")}, QueueDir: filepath.Join(dir, "no-queue")}
	m, err := s.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m.Write([]byte("Subject: x\n\nbody\n"))
	res := m.Commit(context.Background(), mail.Envelope{Sender: "a@b", Recipients: []string{"c@d"}})
	if res.Exit != qmail.ExitConnectRefused || res.Status.IsAccept() {
		t.Fatalf("result %+v", res)
	}
	for _, want := range []string{"could not connect to unix:", "is the daemon running?", "no-queue does not exist"} {
		if !strings.Contains(res.Problem, want) {
			t.Errorf("problem %q lacks %q", res.Problem, want)
		}
	}
	if strings.Contains(res.Status.Text, dir) {
		t.Errorf("the client's status names a path: %q", res.Status.Text)
	}
}
