package smtp

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// runPeer runs a peer program to completion and returns its output.
func runPeer(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %q: %v\n%s", filepath.Base(name), args, err, out.String())
	}
	return out.String()
}

// swaks, through STARTTLS and AUTH PLAIN and LOGIN, into our server.
func TestInteropSwaks(t *testing.T) {
	swaks := testpeer.Need(t, "swaks")
	// swaks does TLS only with Net::SSLeay (Debian: libnet-ssleay-perl,
	// a Recommends that a --no-install-recommends install leaves out).
	if out, _ := exec.Command(swaks, "--support").CombinedOutput(); !strings.Contains(string(out), "=== TLS supported") {
		msg := "swaks has no TLS support (install libnet-ssleay-perl)"
		if testpeer.CI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	h := &recHandler{}
	srv := authServer(t, h)
	srv.RequireAuth = true
	addr := startServer(t, srv)
	body := "Subject: swaks test\n\n.leading dot\nsecond line\n"
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		runPeer(t, swaks, "--server", addr, "--ehlo", "swaks.test",
			"--from", "sender@example.org", "--to", "rcpt@example.net,other@example.net",
			"--tls", "--auth", mech, "--auth-user", "alice", "--auth-password", "secret",
			"--data", body, "--timeout", "30")
	}
	msgs := h.messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	for _, m := range msgs {
		if m.info.AuthUser != "alice" || m.info.TLS == nil || m.info.Proto != "ESMTPSA" || m.info.Helo != "swaks.test" {
			t.Errorf("ConnInfo %+v", m.info)
		}
		if m.env.Sender != "sender@example.org" || len(m.env.Recipients) != 2 {
			t.Errorf("envelope %+v", m.env)
		}
		// swaks ends the data with CR LF "." CR LF after the text's own
		// line end, which makes one empty line more.
		if got := stripReceived(t, m.body); got != body+"\n" {
			t.Errorf("body %q, want %q", got, body)
		}
	}
	// A wrong password is refused, and swaks says so.
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, swaks, "--server", addr, "--from", "a@b.example", "--to", "c@d.example",
		"--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "wrong", "--timeout", "30").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "535 5.7.8") {
		t.Errorf("wrong password: %v\n%s", err, out)
	}
}

// Postfix's smtp-source: 200 messages over 5 parallel sessions.
func TestInteropSmtpSource(t *testing.T) {
	source := testpeer.Need(t, "smtp-source")
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h})
	runPeer(t, source, "-s", "5", "-m", "200", "-l", "2048", "-f", "source@example.org", "-t", "sink@example.net", addr)
	msgs := h.messages()
	if len(msgs) != 200 {
		t.Fatalf("%d messages accepted, want 200", len(msgs))
	}
	for _, m := range msgs {
		if m.env.Sender != "source@example.org" || len(m.env.Recipients) != 1 || m.env.Recipients[0] != "sink@example.net" {
			t.Fatalf("envelope %+v", m.env)
		}
		if n := len(stripReceived(t, m.body)); n < 2048 {
			t.Fatalf("body of %d bytes", n)
		}
	}
}

// startSink runs Postfix's smtp-sink on a free port until the test ends.
func startSink(t *testing.T, args ...string) string {
	t.Helper()
	sink := testpeer.Need(t, "smtp-sink")
	addr := testpeer.FreePort(t)
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...)
	}
	args = append(args, addr, "100")
	cmd := exec.Command(sink, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("smtp-sink output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(testTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("smtp-sink never listened on %s: %v\n%s", addr, err, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Our client into smtp-sink: many messages over one connection, quoting and
// VERP as a real server records them.
func TestInteropSmtpSink(t *testing.T) {
	// smtp-sink runs as nobody (when we are root) and must write there.
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o777)
	addr := startSink(t, "-d", filepath.Join(dir, "%H%M%S."))
	c := &Client{TLS: TLSOpportunistic, LocalName: "client.test", ErrorLog: quietLog(t)}
	cn := dialT(t, c, addr)
	for i := 0; i < 50; i++ {
		env := mail.Envelope{Sender: "a@example.org", Recipients: []string{"r1@example.net", "r2@example.net", "r3@example.net"}}
		sts, err := send(t, cn, env, strings.NewReader("Subject: sink "+itoa(i)+"\n\n.dot\nbody\n"))
		if err != nil {
			t.Fatal(err)
		}
		wantClasses(t, sts, mail.Accept, mail.Accept, mail.Accept)
	}
	env := mail.Envelope{Sender: "list-@lists.example-@[]", Recipients: []string{"Hate.The Quoting@example.com", "u2@b.example"}}
	sts, err := send(t, cn, env, strings.NewReader("Subject: verp\n\nx\n"))
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, sts, mail.Accept, mail.Accept)
	cn.Close()

	// The dumps: 50 + 2 transactions; find the VERP ones.
	var dumps []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			b, _ := os.ReadFile(p)
			dumps = append(dumps, string(b))
		}
		return nil
	})
	if len(dumps) != 52 {
		t.Errorf("%d dumps, want 52", len(dumps))
	}
	all := strings.Join(dumps, "\n")
	if !strings.Contains(all, "Subject: verp") {
		t.Logf("dumps:\n%s", all)
	}
	for _, want := range []string{
		`X-Mail-Args: <"list-Hate.The Quoting=example.com"@lists.example> BODY=8BITMIME`,
		`X-Rcpt-Args: <"Hate.The Quoting"@example.com>`,
		`X-Mail-Args: <list-u2=b.example@lists.example> BODY=8BITMIME`,
		"Subject: sink 49\n\n.dot\nbody\n",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no dump contains %q", want)
		}
	}
}

// smtp-sink refusing: RCPT hard (no DATA follows), the data soft.
func TestInteropSmtpSinkRefusing(t *testing.T) {
	env := mail.Envelope{Sender: "a@example.org", Recipients: []string{"r1@example.net", "r2@example.net"}}
	c := &Client{TLS: TLSNone, LocalName: "client.test", ErrorLog: quietLog(t)}

	addr := startSink(t, "-f", "RCPT")
	cn := dialT(t, c, addr)
	sts, err := send(t, cn, env, strings.NewReader("x\n"))
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, sts, mail.Permanent, mail.Permanent)
	if !strings.Contains(sts[0].Text, "remote host said: 5") {
		t.Errorf("status %+v", sts[0])
	}

	addr = startSink(t, "-r", ".")
	cn = dialT(t, c, addr)
	sts, err = send(t, cn, env, strings.NewReader("x\n"))
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, sts, mail.Temporary, mail.Temporary)
	// The connection goes on after the refusals.
	sts, _ = send(t, cn, env, strings.NewReader("x\n"))
	wantClasses(t, sts, mail.Temporary, mail.Temporary)
}
