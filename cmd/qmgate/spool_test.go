package main

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/relay"
)

// Spool mode, end to end: the hub is down, sendmail still exits 0 (once
// with no local daemon at all, once through the daemon's socket), and both
// messages reach the hub when it comes back, forwarded by the app server's
// own daemon (relay.Hub, what `qmgate serve` runs).
func TestSendmailSpoolDeliveredWhenHubReturns(t *testing.T) {
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	if err := os.Mkdir(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "qmqp.sock")
	// The hub's address, reserved now (until the test ends), served later.
	hubAddr := testpeer.FreePort(t)

	cfgText := `
hostname = "app1.example.net"
default_domain = "example.net"
queue_dir = "` + spool + `"
[qmqp]
listen = ["unix:` + sock + `"]
[queue]
retry_min = "1s"
retry_max = "2s"
[[route]]
domains = ["*"]
via = "qmqp://` + hubAddr + `"
[nullclient]
qmqp_servers = ["` + hubAddr + `"]
spool_dir = "` + spool + `"
`
	cfgPath := filepath.Join(dir, "app.toml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	sendmail := func(rcpt, subject string) {
		t.Helper()
		cmd := exec.Command(qmgateBinary(t), "sendmail", "-config", cfgPath, "-v", "-f", "app@example.net", rcpt)
		cmd.Env = cleanEnv()
		cmd.Stdin = strings.NewReader("Subject: " + subject + "\n\nbody\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sendmail: %v\n%s", err, out)
		}
		t.Logf("sendmail:\n%s", out)
	}

	// No daemon and no hub: committed into the spool directory itself.
	sendmail("a@example.org", "first")

	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	h, err := relay.New(cfg, discardLogger())
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

	// The daemon runs, the hub does not: the daemon's socket takes it.
	sendmail("b@example.org", "second")

	// The hub comes back.
	hl, err := net.Listen("tcp", hubAddr)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]string{}
	done := make(chan struct{})
	srv := &qmqp.Server{AllowFunc: func(*mail.ConnInfo) bool { return true }, ErrorLog: discardLogger(),
		Handler: qmqp.HandlerFunc(func(ctx context.Context, req *qmqp.Request) mail.Status {
			b, _ := io.ReadAll(req.Body)
			env, err := req.Envelope()
			if err != nil {
				return mail.StatusOf(err)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, r := range env.Recipients {
				got[r] = string(b)
			}
			if len(got) == 2 {
				select {
				case <-done:
				default:
					close(done)
				}
			}
			return mail.OK("ok")
		})}
	go srv.Serve(hl)
	defer srv.Close()

	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the hub got %d of 2 messages", len(got))
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(got["a@example.org"], "Subject: first\n") || !strings.Contains(got["b@example.org"], "Subject: second\n") {
		t.Fatalf("%q", got)
	}
}

// Root's mail (cron) committed directly into the daemon's queue leaves files
// the daemon's user owns: root becomes the queue directory's owner first.
func TestSendmailSpoolAsRootBecomesOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	dir := t.TempDir()
	// The queue's owner must reach it: t.TempDir's parent is private.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	spool := filepath.Join(dir, "spool")
	if err := os.Mkdir(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(spool, uid, gid); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "app.toml")
	os.WriteFile(cfgPath, []byte("default_domain = \"example.net\"\n[nullclient]\nqmqp_servers = [\"127.0.0.1:1\"]\nspool_dir = \""+spool+"\"\n"), 0o644)
	cmd := exec.Command(qmgateBinary(t), "sendmail", "-config", cfgPath, "root")
	cmd.Env = cleanEnv()
	cmd.Stdin = strings.NewReader("Subject: cron\n\nx\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	err = filepath.Walk(spool, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid {
			t.Errorf("%s is owned by uid %d, not the queue's owner %d", p, st.Uid, uid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
