package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
)

// These tests run qmgate's qmtpd and qmqpd the way qmail runs its own:
// under tcpserver (ucspi-tcp), with QMAILQUEUE pointing at a script that
// records fd 0 and fd 1, and check what reaches it byte for byte.

// recorder is a qmail-queue stand-in: it keeps fd 0 as msg.PID and fd 1 as
// env.PID in dir, then exits with code (and, for 82, writes text on fd 6).
func recorder(t *testing.T, dir string, code int, fd6 string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qmail-queue")
	script := fmt.Sprintf("#!/bin/sh\ncat > %q/msg.$$ && cat <&1 > %q/env.$$\n", dir, dir)
	if fd6 != "" {
		script += fmt.Sprintf("printf '%%s' %q >&6\n", fd6)
	}
	script += fmt.Sprintf("exit %d\n", code)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// recorded returns what the recorder kept, in PID order.
func recorded(t *testing.T, dir string) (msgs, envs []string) {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, "msg.*"))
	sort.Strings(names)
	for _, n := range names {
		m, _ := os.ReadFile(n)
		e, _ := os.ReadFile(strings.Replace(n, "msg.", "env.", 1))
		msgs = append(msgs, string(m))
		envs = append(envs, string(e))
	}
	return msgs, envs
}

// qmgateBinary is this test binary under the name "qmgate", which
// testscript.Main (TestMain) has put on PATH.
func qmgateBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("qmgate")
	if err != nil {
		t.Fatalf("qmgate is not on PATH: %v", err)
	}
	return p
}

// tcpserve starts tcpserver on a free loopback port running "qmgate DAEMON
// -config CFG" with env added, and returns the address.
func tcpserve(t *testing.T, daemon, cfg string, env ...string) string {
	t.Helper()
	tcpserver := testpeer.Need(t, "tcpserver")
	cfgPath := filepath.Join(t.TempDir(), "qmgate.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tcpserver, "-1", "-R", "-H", "-l", "mx.example", "127.0.0.1", "0", qmgateBinary(t), daemon, "-config", cfgPath)
	cmd.Env = append(cleanEnv(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("tcpserver stderr:\n%s", stderr.String())
		}
	})
	// tcpserver -1 prints the port once it listens.
	port, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("tcpserver did not start: %v (%s)", err, stderr.String())
	}
	return net.JoinHostPort("127.0.0.1", strings.TrimSpace(port))
}

// cleanEnv is this process's environment without what would change the
// daemons' behaviour.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "QMAILQUEUE", "RELAYCLIENT", "DATABYTES", "QMGATE_CONFIG":
			continue
		}
		out = append(out, kv)
	}
	return out
}

const hubConfig = `
hostname = "mx.example"
rcpthosts = ["example.com", ".example.com"]
`

var receivedQMTP = regexp.MustCompile(`\AReceived: from unknown \(127\.0\.0\.1\)\n  by mx\.example with QMTP; \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d -0000\n`)

func qmtpSend(t *testing.T, addr string, msgs ...*qmtp.Message) [][]mail.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := qmtp.Send(ctx, addr, msgs...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func msg(env mail.Envelope, body string, crlf bool) *qmtp.Message {
	return &qmtp.Message{Envelope: env, Body: strings.NewReader(body), Size: int64(len(body)), CRLF: crlf}
}

var okReply = regexp.MustCompile(`\AKok \d+ qp \d+\z`)

func TestTCPServerQMTPD(t *testing.T) {
	dir := t.TempDir()
	addr := tcpserve(t, "qmtpd", hubConfig, "QMAILQUEUE="+recorder(t, dir, 0, ""))

	body := "Subject: one\n\nline 1\nno final newline"
	crBody := "Subject: two\r\n\r\nCR LF\r\nlone\rCR\r\nbare LF\nend\r"
	res := qmtpSend(t, addr,
		msg(mail.Envelope{Sender: "s@example.org", Recipients: []string{"a@example.com", "b@elsewhere.org", "c@sub.example.com"}}, body, false),
		msg(mail.Envelope{Sender: "", Recipients: []string{"d@example.com"}}, crBody, true),
	)
	if r := res[0]; !okReply.Match(r[0].Reply()) || string(r[1].Reply()) != "Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)" || string(r[2].Reply()) != string(r[0].Reply()) {
		t.Fatalf("package 1 replies: %q %q %q", r[0].Reply(), r[1].Reply(), r[2].Reply())
	}
	if !okReply.Match(res[1][0].Reply()) {
		t.Fatalf("package 2 reply: %q", res[1][0].Reply())
	}
	msgs, envs := recorded(t, dir)
	if len(msgs) != 2 {
		t.Fatalf("%d messages recorded", len(msgs))
	}
	// The qp in each reply is the pid of the qmail-queue run that took it.
	for i, m := range msgs {
		loc := receivedQMTP.FindStringIndex(m)
		if loc == nil {
			t.Fatalf("message %d: no qmail-style Received line:\n%q", i, m)
		}
		msgs[i] = m[loc[1]:]
	}
	byBody := map[string]string{}
	for i := range msgs {
		byBody[msgs[i]] = envs[i]
	}
	if env, ok := byBody[body]; !ok || env != "Fs@example.org\x00Ta@example.com\x00Tc@sub.example.com\x00\x00" {
		t.Fatalf("LF-mode message or envelope differs: %q", byBody)
	}
	if env, ok := byBody["Subject: two\n\nCR LF\nlone\rCR\nbare LF\nend\r"]; !ok || env != "F\x00Td@example.com\x00\x00" {
		t.Fatalf("CR-mode message or envelope differs: %q", byBody)
	}
}

func TestTCPServerQMTPDRelayClient(t *testing.T) {
	dir := t.TempDir()
	addr := tcpserve(t, "qmtpd", hubConfig, "QMAILQUEUE="+recorder(t, dir, 0, ""), "RELAYCLIENT=")
	res := qmtpSend(t, addr, msg(mail.Envelope{Sender: "s@x", Recipients: []string{"a@elsewhere.org"}}, "x\n", false))
	if !okReply.Match(res[0][0].Reply()) {
		t.Fatalf("%q", res[0][0].Reply())
	}
	// A value is appended to every recipient, as qmail does.
	dir2 := t.TempDir()
	addr = tcpserve(t, "qmtpd", hubConfig, "QMAILQUEUE="+recorder(t, dir2, 0, ""), "RELAYCLIENT=.relay.example")
	qmtpSend(t, addr, msg(mail.Envelope{Sender: "s@x", Recipients: []string{"a@elsewhere.org", "b@example.com"}}, "x\n", false))
	_, envs := recorded(t, dir2)
	if len(envs) != 1 || envs[0] != "Fs@x\x00Ta@elsewhere.org.relay.example\x00Tb@example.com.relay.example\x00\x00" {
		t.Fatalf("%q", envs)
	}
}

func TestTCPServerQMTPDDatabytes(t *testing.T) {
	dir := t.TempDir()
	addr := tcpserve(t, "qmtpd", hubConfig, "QMAILQUEUE="+recorder(t, dir, 0, ""), "DATABYTES=20")
	res := qmtpSend(t, addr,
		msg(mail.Envelope{Sender: "s@x", Recipients: []string{"a@example.com", "b@example.com"}}, "Subject: big\n\n0123456789\n", false),
		msg(mail.Envelope{Sender: "s@x", Recipients: []string{"a@example.com"}}, "Subject: ok\n\n", false),
	)
	const tooBig = "Dsorry, that message size exceeds my databytes limit (#5.3.4)"
	if string(res[0][0].Reply()) != tooBig || string(res[0][1].Reply()) != tooBig || !okReply.Match(res[1][0].Reply()) {
		t.Fatalf("%q %q %q", res[0][0].Reply(), res[0][1].Reply(), res[1][0].Reply())
	}
	// The refused message never got an envelope: nothing was queued.
	_, envs := recorded(t, dir)
	queued := 0
	for _, e := range envs {
		if e != "" {
			queued++
		}
	}
	if queued != 1 {
		t.Fatalf("%d envelopes completed: %q", queued, envs)
	}
}

// qmail-queue's exit codes become qmail's reply texts, notqmail's custom
// reply on fd 6 included.
func TestTCPServerQMTPDQueueExit(t *testing.T) {
	for _, tc := range []struct {
		code  int
		fd6   string
		reply string
	}{
		{31, "", "Dmail server permanently rejected message (#5.3.0)"},
		{53, "", "Zqq write error or disk full (#4.3.0)"},
		{82, "Dthis looks like spam (#5.7.1)", "Dthis looks like spam (#5.7.1)"},
	} {
		addr := tcpserve(t, "qmtpd", hubConfig, "QMAILQUEUE="+recorder(t, t.TempDir(), tc.code, tc.fd6))
		res := qmtpSend(t, addr, msg(mail.Envelope{Sender: "s@x", Recipients: []string{"a@example.com"}}, "x\n", false))
		if got := string(res[0][0].Reply()); got != tc.reply {
			t.Errorf("exit %d: %q, want %q", tc.code, got, tc.reply)
		}
	}
}

// A broken package gets no reply: the connection just closes (qmail-qmtpd
// exits 100).
func TestTCPServerQMTPDProtocolError(t *testing.T) {
	addr := tcpserve(t, "qmtpd", hubConfig, "QMAILQUEUE="+recorder(t, t.TempDir(), 0, ""))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	io.WriteString(c, "0:,")
	b, err := io.ReadAll(c)
	if len(b) != 0 || err != nil {
		t.Fatalf("got %q, %v", b, err)
	}
}

func TestTCPServerQMQPD(t *testing.T) {
	dir := t.TempDir()
	addr := tcpserve(t, "qmqpd", hubConfig+qmqpTrustTCPServer, "QMAILQUEUE="+recorder(t, dir, 0, ""))
	body := "Subject: qmqp\r\n\nkept as sent, CR and all\n."
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// QMQP relays anywhere: who may connect is tcpserver's business.
	res, err := qmqp.Send(ctx, []string{addr}, mail.Envelope{Sender: "s@x", Recipients: []string{"a@elsewhere.org", "b@example.com"}}, strings.NewReader(body), int64(len(body)))
	if err != nil || !okReply.Match(res.Status.Reply()) {
		t.Fatalf("%q %v", res.Status.Reply(), err)
	}
	msgs, envs := recorded(t, dir)
	want := regexp.MustCompile(`\AReceived: from unknown \(127\.0\.0\.1\)\n  by mx\.example with QMQP; [^\n]+ -0000\n` + regexp.QuoteMeta(body) + `\z`)
	if len(msgs) != 1 || !want.MatchString(msgs[0]) || envs[0] != "Fs@x\x00Ta@elsewhere.org\x00Tb@example.com\x00\x00" {
		t.Fatalf("%q %q", msgs, envs)
	}

	addr = tcpserve(t, "qmqpd", hubConfig+qmqpTrustTCPServer, "QMAILQUEUE="+recorder(t, t.TempDir(), 0, ""), "DATABYTES=10")
	res, err = qmqp.Send(ctx, []string{addr}, mail.Envelope{Recipients: []string{"a@x"}}, strings.NewReader(body), int64(len(body)))
	if err != nil || !res.Status.IsPermanent() || res.Status.EnhancedCode() != "5.3.4" {
		t.Fatalf("DATABYTES: %q %v", res.Status.Reply(), err)
	}
}

// Without QMAILQUEUE the daemons hand messages to qmgate's own daemon over
// its unix socket.
func TestTCPServerQMTPDToDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmqp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	srv := &qmqp.Server{ErrorLog: discardLogger(), Handler: qmqp.HandlerFunc(func(ctx context.Context, req *qmqp.Request) mail.Status {
		b, _ := io.ReadAll(req.Body)
		env, err := req.Envelope()
		if err != nil {
			return mail.StatusOf(err)
		}
		got <- string(b) + "|" + strings.Join(env.Recipients, ",")
		return mail.OK("queued as Q1")
	})}
	go srv.Serve(l)
	defer srv.Close()
	addr := tcpserve(t, "qmtpd", hubConfig+"[qmqp]\nlisten = [\"unix:"+sock+"\"]\n")
	res := qmtpSend(t, addr, msg(mail.Envelope{Sender: "s@x", Recipients: []string{"a@example.com"}}, "Subject: d\n\nx\n", false))
	if string(res[0][0].Reply()) != "Kqueued as Q1" {
		t.Fatalf("%q", res[0][0].Reply())
	}
	s := <-got
	if !strings.Contains(s, "with QMQP") || !strings.Contains(s, "by mx.example with QMTP") || !strings.HasSuffix(s, "Subject: d\n\nx\n|a@example.com") {
		t.Fatalf("%q", s)
	}
}
