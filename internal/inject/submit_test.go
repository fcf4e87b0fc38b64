package inject

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
)

// hub is a QMQP server on loopback (or a unix socket) that answers with
// reply and records what it got.
type hub struct {
	addr  string
	srv   *qmqp.Server
	mu    sync.Mutex
	reply mail.Status
	got   []mail.Envelope
}

func startHub(t *testing.T, network string, reply mail.Status) *hub {
	t.Helper()
	h := &hub{reply: reply}
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "qmqp.sock")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	h.addr = l.Addr().String()
	if network == "unix" {
		h.addr = "unix:" + addr
	}
	h.srv = &qmqp.Server{
		AllowFunc: func(*mail.ConnInfo) bool { return true },
		ErrorLog:  slog.New(slog.DiscardHandler),
		Handler: qmqp.HandlerFunc(func(ctx context.Context, req *qmqp.Request) mail.Status {
			io.Copy(io.Discard, req.Body)
			env, err := req.Envelope()
			if err != nil {
				return mail.StatusOf(err)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			h.got = append(h.got, env)
			return h.reply
		}),
	}
	go h.srv.Serve(l)
	t.Cleanup(func() { h.srv.Close() })
	return h
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.got)
}

// deadAddr is a loopback address nobody listens on, reserved until the
// test ends: a hub started later on port 0 cannot be given it.
func deadAddr(t *testing.T) string { return testpeer.FreePort(t) }

// mute answers the connect and closes without a reply, after reading.
func mute(t *testing.T) string {
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

func testMessage(t *testing.T) *Message {
	t.Helper()
	m, err := testComposer().Compose(&Options{Recipients: []string{"rcpt@example.org"}}, strings.NewReader("Subject: t\n\nbody\n"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

type fakeCommit struct {
	n   int
	err error
}

func (f *fakeCommit) commit(ctx context.Context, dir string, env mail.Envelope, body io.Reader, size int64) (string, error) {
	n, _ := io.Copy(io.Discard, body)
	if n != size {
		return "", errors.New("short body")
	}
	f.n++
	return "ID1", f.err
}

func TestNullclientDirect(t *testing.T) {
	ok := startHub(t, "tcp", mail.OK("ok"))
	cases := []struct {
		name    string
		servers []string
		exit    int
	}{
		{"accepted", []string{ok.addr}, 0},
		{"failover on connect", []string{deadAddr(t), ok.addr}, 0},
		{"temporary", []string{startHub(t, "tcp", mail.Temp("4.3.0", "busy")).addr}, ExitTempFail},
		{"unknown user", []string{startHub(t, "tcp", mail.Perm("5.1.1", "no such user")).addr}, ExitNoUser},
		{"content", []string{startHub(t, "tcp", mail.StatusTooBig).addr}, ExitDataErr},
		{"policy", []string{startHub(t, "tcp", mail.Perm("5.7.1", "go away")).addr}, ExitUnavailable},
		{"all down", []string{deadAddr(t), deadAddr(t)}, ExitTempFail},
		{"no reply after connect", []string{mute(t), ok.addr}, ExitTempFail},
		{"no servers", nil, ExitTempFail},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := &Nullclient{Servers: tc.servers}
			o := n.Send(context.Background(), testMessage(t))
			if got := ExitCode(o.Status); got != tc.exit {
				t.Fatalf("exit %d (%s), want %d", got, o.Status.Reply(), tc.exit)
			}
		})
	}
	// After a connection was made, the next server is never tried.
	before := ok.count()
	(&Nullclient{Servers: []string{mute(t), ok.addr}}).Send(context.Background(), testMessage(t))
	if ok.count() != before {
		t.Fatal("a second server was tried after the first connected")
	}
}

func TestNullclientSpool(t *testing.T) {
	dir := t.TempDir()
	okHub := startHub(t, "tcp", mail.OK("ok"))
	local := startHub(t, "unix", mail.OK("queued"))
	deadLocal := "unix:" + filepath.Join(t.TempDir(), "none.sock")
	cases := []struct {
		name      string
		servers   []string
		local     string
		commitErr error
		exit      int
		spooled   bool
		commits   int
	}{
		{"hub accepts", []string{okHub.addr}, local.addr, nil, 0, false, 0},
		{"hub down, local daemon", []string{deadAddr(t)}, local.addr, nil, 0, true, 0},
		{"hub Z, local daemon", []string{startHub(t, "tcp", mail.Temp("4.3.0", "later")).addr}, local.addr, nil, 0, true, 0},
		{"hub mute, local daemon", []string{mute(t)}, local.addr, nil, 0, true, 0},
		{"hub D is final", []string{startHub(t, "tcp", mail.Perm("5.1.1", "unknown")).addr}, local.addr, nil, ExitNoUser, false, 0},
		{"all down, queue dir", []string{deadAddr(t)}, deadLocal, nil, 0, true, 1},
		{"all down, queue dir fails", []string{deadAddr(t)}, deadLocal, errors.New("permission denied"), ExitTempFail, false, 1},
		{"no hubs, no socket", nil, "", nil, 0, true, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fc := &fakeCommit{err: tc.commitErr}
			n := &Nullclient{Servers: tc.servers, Local: tc.local, SpoolDir: dir, Commit: fc.commit}
			o := n.Send(context.Background(), testMessage(t))
			if got := ExitCode(o.Status); got != tc.exit || o.Spooled != tc.spooled || fc.n != tc.commits {
				t.Fatalf("exit %d spooled %v commits %d (%s), want %d %v %d", got, o.Spooled, fc.n, o.Status.Reply(), tc.exit, tc.spooled, tc.commits)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	cases := map[string]int{
		"K": 0, "Z": 75, "D5.1.1": 67, "D5.1.3": 67, "D5.3.4": 65, "D5.6.0": 65, "D5.7.1": 69, "D5.0.0": 69, "D": 69,
	}
	for in, want := range cases {
		st := mail.ParseReply([]byte(in[:1] + "text"))
		if len(in) > 1 {
			st.Code = in[1:]
		}
		if got := ExitCode(st); got != want {
			t.Errorf("%s: %d, want %d", in, got, want)
		}
	}
	if ExitCode(mail.Status{Class: 99}) != ExitTempFail {
		t.Error("unknown class is not temporary")
	}
}
