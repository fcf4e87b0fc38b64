package qmqp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// TestInteropQmqpSource: Postfix's load generator sends 1000 messages over
// 10 parallel sessions. It exits non-zero on the first reply that is not K,
// and every message must reach the handler byte for byte.
func TestInteropQmqpSource(t *testing.T) {
	source := testpeer.Need(t, "qmqp-source")
	logs := &logBuffer{}
	h := &recorder{}
	s := &Server{Handler: h, Allow: loopback, ErrorLog: logs.logger()}
	addr := startServer(t, s)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, source, "-s", "10", "-m", "1000", "-l", "2048", addr).CombinedOutput()
	if err != nil {
		t.Fatalf("qmqp-source: %v\n%s", err, out)
	}
	got := h.deliveries()
	if len(got) != 1000 {
		t.Fatalf("%d messages, want 1000", len(got))
	}
	_, first := stripReceived(t, got[0].Body)
	env := got[0].Env
	for i, d := range got {
		if !d.Committed {
			t.Fatalf("message %d not committed: %v", i, d.EnvErr)
		}
		_, msg := stripReceived(t, d.Body)
		if !bytes.Equal(msg, first) {
			t.Fatalf("message %d differs from the first", i)
		}
		if d.Env.Sender != env.Sender || len(d.Env.Recipients) != 1 || d.Env.Recipients[0] != env.Recipients[0] {
			t.Fatalf("message %d envelope %+v, first %+v", i, d.Env, env)
		}
	}
	// What qmqp-source builds (src/smtpstone/qmqp-source.c): exactly -l
	// bytes, LF only, From/To/Date/Message-Id, a blank line, then lines of
	// X growing by one up to 79, the last byte a newline.
	if len(first) != 2048 || first[len(first)-1] != '\n' || bytes.IndexByte(first, '\r') >= 0 {
		t.Fatalf("message of %d bytes: %q", len(first), first)
	}
	if !strings.HasPrefix(env.Sender, "foo@") || env.Recipients[0] != env.Sender {
		t.Fatalf("envelope %+v", env)
	}
	head, body, ok := bytes.Cut(first, []byte("\n\n"))
	if !ok {
		t.Fatal("no header/body separator")
	}
	lines := strings.Split(string(head), "\n")
	if len(lines) != 4 || lines[0] != "From: <"+env.Sender+">" || lines[1] != "To: <"+env.Recipients[0]+">" ||
		!strings.HasPrefix(lines[2], "Date: ") || !strings.HasPrefix(lines[3], "Message-Id: <") {
		t.Fatalf("header %q", head)
	}
	for i, l := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
		if strings.Trim(l, "X") != "" || (len(l) != min(i+1, 79) && i < len(body)/80) {
			t.Fatalf("body line %d: %q", i, l)
		}
	}
	// qmqp-source closes with SO_LINGER 0: the resets are routine.
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") {
			t.Errorf("log: %s", line)
		}
	}
}

// TestInteropPostfixQmqpd: our client hands a message to Postfix's qmqpd,
// and Postfix relays it to a sink with the same envelope and body.
func TestInteropPostfixQmqpd(t *testing.T) {
	sink := testpeer.NewSMTPSink(t)
	pf := testpeer.StartPostfix(t, testpeer.PostfixConfig{QMQP: true, Relayhost: sink.Relayhost()})

	body := "From: A <a@example.com>\nTo: b@example.org\nSubject: interop\nMessage-Id: <1@example.com>\n" +
		"Date: 1 Jan 2026 00:00:00 -0000\n\nline one\n\nline three with trailing space \n" + strings.Repeat(strings.Repeat("z", 900)+"\n", 50)
	env := mail.Envelope{Sender: "a@example.com", Recipients: []string{"b@example.org", "c@example.net"}}
	res, err := send(t, &Client{Servers: []string{pf.QMQPAddr}}, env, body)
	if err != nil || !res.Status.IsAccept() || !strings.HasPrefix(res.Status.Text, "Ok: queued as ") {
		t.Fatalf("%+v, %v", res, err)
	}
	msgs := sink.Wait(t, 1, 2*time.Minute)
	m := msgs[0]
	sort.Strings(m.To)
	if m.From != env.Sender || strings.Join(m.To, ",") != "b@example.org,c@example.net" {
		t.Fatalf("sink envelope: from %q to %q", m.From, m.To)
	}
	// Postfix adds only its Received line on top.
	pre, ok := bytes.CutSuffix(m.Data, []byte(body))
	if !ok || !bytes.HasPrefix(pre, []byte("Received: from ")) || !bytes.Contains(pre, []byte("with QMQP")) {
		t.Fatalf("sink data:\n%s", m.Data)
	}
}

// TestInteropPostfixEarlyRefusals: Postfix replies D before it has read the
// request and closes (qmqpd.c); the client must report that D, not
// a broken connection, even though its write fails.
func TestInteropPostfixEarlyRefusals(t *testing.T) {
	pf := testpeer.StartPostfix(t, testpeer.PostfixConfig{QMQP: true, QMQPClients: "none"})
	big := strings.Repeat("x", 4<<20)
	res, err := send(t, &Client{Servers: []string{pf.QMQPAddr}}, testEnv, big)
	if err != nil || !res.Status.IsPermanent() || !strings.Contains(res.Status.Text, "is not authorized to use this service") {
		t.Fatalf("unauthorized: %+v, %v", res, err)
	}

	pf2 := testpeer.StartPostfix(t, testpeer.PostfixConfig{QMQP: true, Main: map[string]string{"message_size_limit": "100000"}})
	res, err = send(t, &Client{Servers: []string{pf2.QMQPAddr}}, testEnv, big)
	if err != nil || !res.Status.IsPermanent() {
		t.Fatalf("too large: %+v, %v", res, err)
	}
	t.Logf("Postfix said: %s", res.Status.Reply())
}

// nullmailerSend runs nullmailer's QMQP module on one message against addr
// and returns its exit code and output.
func nullmailerSend(t *testing.T, prog, addr string, env mail.Envelope, msg string) (int, string) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	// The queue file format: sender, recipients, a blank line, the message.
	// The module reads it on fd 3 and needs to seek in it.
	f, err := os.Create(filepath.Join(t.TempDir(), "msg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "%s\n%s\n\n%s", env.Sender, strings.Join(env.Recipients, "\n"), msg)
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog)
	cmd.Stdin = strings.NewReader("host=" + host + "\nport=" + port + "\n")
	cmd.ExtraFiles = []*os.File{f}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("nullmailer qmqp: %v\n%s", err, out)
	}
	return 0, string(out)
}

// TestInteropNullmailer: nullmailer's QMQP module sends to our server; its
// exit code follows our reply: 0 for K, 16 (temporary) for Z, 35
// (permanent: bit 32) for D (nullmailer errcodes.h).
func TestInteropNullmailer(t *testing.T) {
	prog := testpeer.Need(t, "nullmailer-qmqp")
	msg := "Received: (nullmailer pid 1 invoked by uid 0);\n\tThu, 01 Jan 2026 00:00:00 -0000\n" +
		"From: a@example.com\nTo: b@example.org\nSubject: via nullmailer\n\nhello\n\nbye\n"
	env := mail.Envelope{Sender: "a@example.com", Recipients: []string{"b@example.org", "c@example.net"}}
	for _, tc := range []struct {
		status mail.Status
		exit   int
	}{
		{mail.Status{}, 0},
		{mail.Temp("4.3.0", "disk full"), 16},
		{mail.Perm("5.7.1", "no thanks"), 35},
	} {
		h := &recorder{status: tc.status}
		s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
		addr := startServer(t, s)
		code, out := nullmailerSend(t, prog, addr, env, msg)
		if code != tc.exit {
			t.Errorf("reply %q: exit %d, want %d\n%s", tc.status.Reply(), code, tc.exit, out)
		}
		d := h.deliveries()
		if len(d) != 1 {
			t.Fatalf("%d deliveries", len(d))
		}
		if _, got := stripReceived(t, d[0].Body); string(got) != msg {
			t.Errorf("message %q", got)
		}
		if d[0].Env.Sender != env.Sender || strings.Join(d[0].Env.Recipients, ",") != "b@example.org,c@example.net" {
			t.Errorf("envelope %+v", d[0].Env)
		}
	}
	// A refused client: nullmailer gets the D before sending and fails
	// permanently.
	s := &Server{Handler: &recorder{}, ErrorLog: (&logBuffer{}).logger()}
	addr := startServer(t, s)
	if code, out := nullmailerSend(t, prog, addr, env, msg); code != 35 || !strings.Contains(out, "not authorized") {
		t.Errorf("refused client: exit %d\n%s", code, out)
	}
}
