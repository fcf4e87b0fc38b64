package qmail

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

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

func (s *memSink) Begin(context.Context) (Message, error) { return &memMessage{s: s}, nil }

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
func (m *memMessage) Commit(_ context.Context, env mail.Envelope) Result {
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	m.s.bodies = append(m.s.bodies, m.b.String())
	m.s.envs = append(m.s.envs, env)
	return Result{Status: m.s.result, Exit: ExitForStatus(m.s.result)}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func serveQMTP(t *testing.T, srv *qmtp.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.ErrorLog = quiet()
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func sendQMTP(t *testing.T, addr string, env mail.Envelope, body string) []mail.Status {
	t.Helper()
	res, err := qmtp.Send(context.Background(), addr, &qmtp.Message{Envelope: env, Body: strings.NewReader(body), Size: int64(len(body))})
	if err != nil {
		t.Fatal(err)
	}
	return res[0]
}

func replies(sts []mail.Status) string {
	var out []string
	for _, s := range sts {
		out = append(out, string(s.Reply()))
	}
	return strings.Join(out, " | ")
}

func TestQMTPHandlerRcptHosts(t *testing.T) {
	sink := &memSink{result: mail.OK("ok 1 qp 2")}
	addr := serveQMTP(t, &qmtp.Server{Handler: &QMTPHandler{Sink: sink, RcptHosts: mail.HostList{"example.com", ".example.com"}}})
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

func TestQMTPHandlerRelayClient(t *testing.T) {
	sink := &memSink{result: mail.OK("ok")}
	addr := serveQMTP(t, &qmtp.Server{Handler: &QMTPHandler{Sink: sink, RelaySet: true, RelayClient: "-ext"}})
	long := strings.Repeat("a", mail.MaxAddressLen-5) + "@x" // grows past the limit
	got := replies(sendQMTP(t, addr, mail.Envelope{Recipients: []string{"a@anywhere.org", long}}, "x\n"))
	if got != "Kok | Dsorry, I can't handle that recipient (#5.1.3)" {
		t.Fatal(got)
	}
	if r := sink.envs[0].Recipients; len(r) != 1 || r[0] != "a@anywhere.org-ext" {
		t.Fatalf("%q", r)
	}
}

func TestQMTPHandlerDatabytes(t *testing.T) {
	sink := &memSink{result: mail.OK("ok")}
	addr := serveQMTP(t, &qmtp.Server{Handler: &QMTPHandler{Sink: sink, RelaySet: true}, MaxMessageBytes: 10})
	got := replies(sendQMTP(t, addr, mail.Envelope{Recipients: []string{"a@x", "b@y"}}, "0123456789AB\n"))
	want := "Dsorry, that message size exceeds my databytes limit (#5.3.4) | Dsorry, that message size exceeds my databytes limit (#5.3.4)"
	if got != want || len(sink.envs) != 0 {
		t.Fatalf("got %s (committed %d)", got, len(sink.envs))
	}
}

func TestQMQPHandler(t *testing.T) {
	sink := &memSink{result: mail.OK("ok 1 qp 2")}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &qmqp.Server{Handler: &QMQPHandler{Sink: sink}, AllowFunc: func(*mail.ConnInfo) bool { return true }, ErrorLog: quiet()}
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

func TestQMTPHandlerRelayClients(t *testing.T) {
	sink := &memSink{result: mail.OK("ok")}
	h := &QMTPHandler{Sink: sink, RcptHosts: mail.HostList{"example.com"}, RelayClients: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	addr := serveQMTP(t, &qmtp.Server{Handler: h})
	if got := replies(sendQMTP(t, addr, mail.Envelope{Recipients: []string{"a@elsewhere.org"}}, "x\n")); got != "Kok" {
		t.Fatal(got)
	}
	h.RelayClients = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	if got := replies(sendQMTP(t, addr, mail.Envelope{Recipients: []string{"a@elsewhere.org"}}, "x\n")); !strings.HasPrefix(got, "Dsorry, that domain") {
		t.Fatal(got)
	}
}

func TestAllowList(t *testing.T) {
	in := &mail.ConnInfo{RemoteAddr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3)}}
	out := &mail.ConnInfo{RemoteAddr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1)}}
	if !AllowList(nil)(out) {
		t.Fatal("an empty list must leave access to tcpserver")
	}
	allow := AllowList([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	if !allow(in) || allow(out) {
		t.Fatal("allow list not applied")
	}
}
