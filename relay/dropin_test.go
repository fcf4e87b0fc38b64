package relay

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/qmail"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
)

// memSink records what reaches it and answers with result.
type memSink struct {
	mu      sync.Mutex
	result  mail.Status
	bodies  []string
	envs    []mail.Envelope
	aborted int
}

func (s *memSink) Begin(context.Context) (qmail.Message, error) { return &memMessage{s: s}, nil }

type memMessage struct {
	s *memSink
	b bytes.Buffer
}

func (m *memMessage) Write(p []byte) (int, error) { return m.b.Write(p) }
func (m *memMessage) Abort() {
	m.s.mu.Lock()
	m.s.aborted++
	m.s.mu.Unlock()
}
func (m *memMessage) Commit(_ context.Context, env mail.Envelope) qmail.Result {
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	m.s.bodies = append(m.s.bodies, m.b.String())
	m.s.envs = append(m.s.envs, env)
	return qmail.Result{Status: m.s.result, Exit: qmail.ExitForStatus(m.s.result)}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// dropIn is a drop-in with the configuration doc, tcpserver's environment
// env and a qmail-queue program (program) or the daemon as its sink.
func dropIn(t *testing.T, doc string, env qmail.Env, sink qmail.Sink, program bool) *DropIn {
	t.Helper()
	cfg, err := config.Parse("test.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	d := &DropIn{Config: cfg, Env: env, Sink: sink, Program: program, Log: quiet()}
	if err := d.LoadRoutes(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.Routes != nil {
			d.Routes.Close()
		}
	})
	return d
}

func serveQMTP(t *testing.T, srv *qmtp.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func replies(sts []mail.Status) string {
	var out []string
	for _, s := range sts {
		out = append(out, string(s.Reply()))
	}
	return strings.Join(out, " | ")
}

const exampleHosts = "rcpthosts = [\"example.com\", \".example.com\"]\n"

func TestDropInQMTPRcptHosts(t *testing.T) {
	sink := &memSink{result: mail.OK("ok 1 qp 2")}
	addr := serveQMTP(t, dropIn(t, exampleHosts, qmail.Env{}, sink, true).QMTPServer())
	env := mail.Envelope{Sender: "s@x", Recipients: []string{"a@example.com", "b@elsewhere.org", "c@sub.example.com", "postmaster"}}
	got := replies(sendQMTP(t, addr, env, "Subject: x\n\nbody\n"))
	want := "Kok 1 qp 2 | Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1) | Kok 1 qp 2 | Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if len(sink.envs) != 1 || strings.Join(sink.envs[0].Recipients, ",") != "a@example.com,c@sub.example.com" {
		t.Fatalf("envelopes %+v", sink.envs)
	}
	if !strings.HasPrefix(sink.bodies[0], "Received: from ") || !strings.HasSuffix(sink.bodies[0], "\nSubject: x\n\nbody\n") {
		t.Fatalf("body %q", sink.bodies[0])
	}
	// Nobody acceptable: nothing committed.
	got = replies(sendQMTP(t, addr, mail.Envelope{Recipients: []string{"x@elsewhere.org"}}, "x\n"))
	if !strings.HasPrefix(got, "D") || sink.aborted != 1 || len(sink.envs) != 1 {
		t.Fatalf("%s aborted=%d", got, sink.aborted)
	}
}

func TestDropInQMTPRelayClient(t *testing.T) {
	sink := &memSink{result: mail.OK("ok")}
	env := qmail.Env{RelaySet: true, RelayClient: "-ext"}
	addr := serveQMTP(t, dropIn(t, exampleHosts, env, sink, true).QMTPServer())
	long := strings.Repeat("a", mail.MaxAddressLen-5) + "@x" // grows past the limit
	got := replies(sendQMTP(t, addr, mail.Envelope{Recipients: []string{"a@anywhere.org", long}}, "x\n"))
	if got != "Kok | Dsorry, I can't handle that recipient (#5.1.3)" {
		t.Fatal(got)
	}
	if r := sink.envs[0].Recipients; len(r) != 1 || r[0] != "a@anywhere.org-ext" {
		t.Fatalf("%q", r)
	}
}

func TestDropInQMTPDatabytes(t *testing.T) {
	sink := &memSink{result: mail.OK("ok")}
	env := qmail.Env{RelaySet: true, DataBytes: 10, DataBytesSet: true}
	addr := serveQMTP(t, dropIn(t, exampleHosts, env, sink, true).QMTPServer())
	got := replies(sendQMTP(t, addr, mail.Envelope{Recipients: []string{"a@x", "b@y"}}, "0123456789AB\n"))
	want := "Dsorry, that message size exceeds my databytes limit (#5.3.4) | Dsorry, that message size exceeds my databytes limit (#5.3.4)"
	if got != want || len(sink.envs) != 0 {
		t.Fatalf("got %s (committed %d)", got, len(sink.envs))
	}
}

func TestDropInQMTPRelayClients(t *testing.T) {
	sink := &memSink{result: mail.OK("ok")}
	addr := serveQMTP(t, dropIn(t, exampleHosts+"[qmtp]\nrelay_clients = [\"127.0.0.0/8\"]\n", qmail.Env{}, sink, true).QMTPServer())
	if got := replies(sendQMTP(t, addr, mail.Envelope{Recipients: []string{"a@elsewhere.org"}}, "x\n")); got != "Kok" {
		t.Fatal(got)
	}
	addr = serveQMTP(t, dropIn(t, exampleHosts+"[qmtp]\nrelay_clients = [\"10.0.0.0/8\"]\n", qmail.Env{}, sink, true).QMTPServer())
	if got := replies(sendQMTP(t, addr, mail.Envelope{Recipients: []string{"a@elsewhere.org"}}, "x\n")); !strings.HasPrefix(got, "Dsorry, that domain") {
		t.Fatal(got)
	}
}

// A drop-in that hands its mail to the daemon refuses each recipient the
// daemon's policy would refuse, alone: the daemon answers a QMQP message
// with one reply, so one such recipient used to fail the whole package.
func TestDropInQMTPRefusesBadRecipientAlone(t *testing.T) {
	sink := &memSink{result: mail.OK("queued")}
	doc := "rcpthosts = [\"example.com\", \"example.org\"]\n[[route]]\ndomains = [\"example.com\"]\nvia = \"maildir:/nonexistent\"\n"
	addr := serveQMTP(t, dropIn(t, doc, qmail.Env{}, sink, false).QMTPServer())
	rcpts := []string{"a@example.com", "b@example.org", "../x@example.com", ".x@example.com", "-x@example.com", "\u212Aate@example.com"}
	got := replies(sendQMTP(t, addr, mail.Envelope{Sender: "s@x", Recipients: rcpts}, "x\n"))
	want := "Kqueued | Dsorry, I have no route for that domain (#5.1.2)" + strings.Repeat(" | Dsorry, that address is not deliverable (#5.1.3)", 4)
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if len(sink.envs) != 1 || strings.Join(sink.envs[0].Recipients, ",") != "a@example.com" {
		t.Fatalf("envelopes %+v", sink.envs)
	}
}

func TestDropInQMQP(t *testing.T) {
	sink := &memSink{result: mail.OK("ok 1 qp 2")}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := dropIn(t, exampleHosts+"[qmqp]\ntrust_tcpserver = true\n", qmail.Env{}, sink, true).QMQPServer()
	go srv.Serve(l)
	defer srv.Close()
	body := "Subject: q\n\nno newline"
	res, err := qmqp.Send(context.Background(), []string{l.Addr().String()}, mail.Envelope{Sender: "s@x", Recipients: []string{"r@anywhere.org"}}, strings.NewReader(body), int64(len(body)))
	if err != nil || string(res.Status.Reply()) != "Kok 1 qp 2" {
		t.Fatalf("%v %v", res.Status, err)
	}
	if !strings.HasPrefix(sink.bodies[0], "Received: from ") || !strings.Contains(sink.bodies[0], " with QMQP; ") || !strings.HasSuffix(sink.bodies[0], "\n"+body) {
		t.Fatalf("%q", sink.bodies[0])
	}
	sink.result = mail.Perm("5.7.1", "no")
	res, _ = qmqp.Send(context.Background(), []string{l.Addr().String()}, mail.Envelope{Recipients: []string{"r@x"}}, strings.NewReader("x"), 1)
	if string(res.Status.Reply()) != "Dno (#5.7.1)" {
		t.Fatal(res.Status)
	}
}

// The qmqpd drop-in applies [qmqp] allow as serve does (empty: nobody);
// only trust_tcpserver leaves access to tcpserver's rules.
func TestDropInQMQPAllow(t *testing.T) {
	in := &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3)}
	out := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1)}
	for _, tc := range []struct {
		doc     string
		in, out bool
	}{
		{"", false, false},
		{"[qmqp]\nallow = [\"10.0.0.0/8\"]\n", true, false},
		{"[qmqp]\ntrust_tcpserver = true\n", true, true},
	} {
		srv := dropIn(t, tc.doc, qmail.Env{}, &memSink{}, true).QMQPServer()
		for _, c := range []struct {
			addr net.Addr
			want bool
		}{{in, tc.in}, {out, tc.out}} {
			if got := srv.AllowFunc(&mail.ConnInfo{RemoteAddr: c.addr}); got != c.want {
				t.Errorf("%q: %v allowed %v, want %v", tc.doc, c.addr, got, c.want)
			}
		}
	}
}
