package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/relay"
)

// qmqpTrustTCPServer leaves access to the qmqpd drop-in to tcpserver's
// rules, qmail-qmqpd's way.
const qmqpTrustTCPServer = "[qmqp]\ntrust_tcpserver = true\n"

// Without trust_tcpserver, the qmqpd drop-in applies [qmqp] allow as
// `qmgate serve` does: an empty list lets nobody in, whatever tcpserver
// allowed.
func TestTCPServerQMQPDAllow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	body := "Subject: allow\n\nx\n"
	env := mail.Envelope{Sender: "s@x", Recipients: []string{"a@elsewhere.org"}}
	for _, tc := range []struct {
		cfg  string
		want string
	}{
		{hubConfig, "Dclient 127.0.0.1 is not authorized to use this service (#5.7.1)"},
		{hubConfig + "[qmqp]\nallow = [\"192.0.2.0/24\"]\n", "Dclient 127.0.0.1 is not authorized to use this service (#5.7.1)"},
		{hubConfig + "[qmqp]\nallow = [\"127.0.0.0/8\"]\n", "K"},
		{hubConfig + qmqpTrustTCPServer, "K"},
	} {
		addr := tcpserve(t, "qmqpd", tc.cfg, "QMAILQUEUE="+recorder(t, t.TempDir(), 0, ""))
		res, err := qmqp.Send(ctx, []string{addr}, env, strings.NewReader(body), int64(len(body)))
		if err != nil && res.Status.Class == 0 {
			t.Fatalf("%q: %v", tc.cfg, err)
		}
		if got := string(res.Status.Reply()); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.cfg, got, tc.want)
		}
	}
}

// The qmtpd drop-in that hands its mail to the daemon refuses, one by one,
// the recipients the daemon would refuse (no route, a mailbox name local
// delivery refuses), as qmail-qmtpd refuses a bad recipient alone; the
// others go on.
func TestTCPServerQMTPDRefusesBadRecipientAlone(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmqp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	srv := &qmqp.Server{ErrorLog: discardLogger(), Handler: qmqp.HandlerFunc(func(ctx context.Context, req *qmqp.Request) mail.Status {
		io.Copy(io.Discard, req.Body)
		env, err := req.Envelope()
		if err != nil {
			return mail.StatusOf(err)
		}
		got <- strings.Join(env.Recipients, ",")
		return mail.OK("queued as Q1")
	})}
	go srv.Serve(l)
	defer srv.Close()
	cfg := hubConfig + "[qmqp]\nlisten = [\"unix:" + sock + "\"]\n[[route]]\ndomains = [\"example.com\"]\nvia = \"maildir:/nonexistent\"\n"
	addr := tcpserve(t, "qmtpd", cfg)
	res := qmtpSend(t, addr, msg(mail.Envelope{Sender: "s@x", Recipients: []string{"a@example.com", "b@sub.example.com", "../x@example.com"}}, "Subject: d\n\nx\n", false))
	r := res[0]
	if string(r[0].Reply()) != "Kqueued as Q1" || string(r[1].Reply()) != "Dsorry, I have no route for that domain (#5.1.2)" ||
		string(r[2].Reply()) != "Dsorry, that address is not deliverable (#5.1.3)" {
		t.Fatalf("%q %q %q", r[0].Reply(), r[1].Reply(), r[2].Reply())
	}
	if s := <-got; s != "a@example.com" {
		t.Fatalf("the daemon got %q", s)
	}
}

// lockedBuffer is a log destination shared by the daemon's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Mail the qmtpd drop-in hands to the daemon's socket is logged by the
// daemon as QMTP from the drop-in's client, not as QMQP from a local user:
// the drop-in runs as the daemon's own user here, whom the daemon trusts
// to say so.
func TestTCPServerQMTPDLoggedAsQMTP(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "qmqp.sock")
	cfgText := hubConfig + "queue_dir = \"" + filepath.Join(dir, "queue") + "\"\n[qmqp]\nlisten = [\"unix:" + sock + "\"]\n" +
		"[[route]]\ndomains = [\"*\"]\nvia = \"discard:\"\n"
	cfg, err := config.Parse("hub.toml", []byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	h, err := relay.New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h.Shutdown(ctx)
	}()
	addr := tcpserve(t, "qmtpd", cfgText)
	res := qmtpSend(t, addr, msg(mail.Envelope{Sender: "s@x", Recipients: []string{"a@example.com"}}, "Subject: d\n\nx\n", false))
	if !res[0][0].IsAccept() {
		t.Fatalf("%q", res[0][0].Reply())
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	want := `client=127.0.0.1 proto=QMTP relayed_by="uid ` + u.Uid + ` (` + u.Username + `)"`
	if l := logs.String(); !strings.Contains(l, "msg=accepted") || !strings.Contains(l, want) {
		t.Fatalf("the daemon's log lacks %s:\n%s", want, l)
	}
}
