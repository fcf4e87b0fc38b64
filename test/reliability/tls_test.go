//go:build linux

package reliability

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmtp"
)

// TestTLSAndPrivileges: QMTPS and SMTP STARTTLS with certificates from a
// test CA; TLS below 1.2 refused on both; over QMTPS a client certificate
// from client_ca is what allows relaying. The daemon, started as root,
// binds port 25 and then runs as nobody with no capabilities; started as
// root without `user` it refuses to run; started as an ordinary user it
// needs nothing more.
func TestTLSAndPrivileges(t *testing.T) {
	testpeer.NeedRoot(t, "checks the privilege drop of a root start")
	h := newNetHost(t)
	pki := newPKI(t)
	foreign := newSink(t, "qmtp", h.addr(t))
	qmtpsA, smtpA := h.addr(t), h.addr(t)
	smtp25 := net.JoinHostPort(h.ip(1), "25")
	if l, err := net.Listen("tcp", smtp25); err != nil {
		smtp25 = h.addr(t) // port 25 taken on this address: test the drop without it
	} else {
		l.Close()
	}
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "tls.test"
rcpthosts = ["example.com"]
[qmtp]
listen_tls = [%q]
tls_cert = %q
tls_key = %q
client_ca = %q
[smtp]
listen = [%q, %q]
tls_cert = %q
tls_key = %q
[[route]]
domains = ["example.com"]
via = "maildir:{{DIR}}/maildir"
[[route]]
domains = ["*"]
via = "qmtp://%s"
`, qmtpsA, pki.Cert, pki.Key, pki.CA, smtpA, smtp25, pki.Cert, pki.Key, foreign.addr()))
	d.start()
	var checks []string
	ok := func(name string, good bool, format string, args ...any) {
		t.Helper()
		checks = append(checks, name)
		if !good {
			t.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
		}
	}

	// TLS versions, QMTPS and STARTTLS.
	for _, v := range []struct {
		name string
		ver  uint16
		want bool
	}{{"TLS 1.0", tls.VersionTLS10, false}, {"TLS 1.1", tls.VersionTLS11, false}, {"TLS 1.2", tls.VersionTLS12, true}, {"TLS 1.3", tls.VersionTLS13, true}} {
		cfg := pki.clientTLS()
		cfg.MinVersion, cfg.MaxVersion = v.ver, v.ver
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", qmtpsA, cfg)
		if err == nil {
			c.Close()
		}
		ok("QMTPS "+v.name, (err == nil) == v.want, "handshake error %v", err)
		err = starttls(smtpA, cfg)
		ok("STARTTLS "+v.name, (err == nil) == v.want, "handshake error %v", err)
	}
	// The certificate is the test CA's: verification succeeds with it
	// and fails without it.
	cfg := &tls.Config{ServerName: "localhost", MinVersion: tls.VersionTLS12}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", qmtpsA, cfg)
	if err == nil {
		c.Close()
	}
	ok("QMTPS certificate not trusted without the test CA", err != nil, "a handshake verified against the system roots")

	// Relaying over QMTPS needs a client certificate from client_ca.
	send := func(cert *tls.Certificate, rcpt, marker string) mail.Status {
		tc := pki.clientTLS()
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		body := makeBody(marker)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res, err := (&qmtp.Client{TLSConfig: tc, ConnectTimeout: 5 * time.Second}).Send(ctx, qmtpsA,
			&qmtp.Message{Envelope: mail.Envelope{Sender: "s@x.test", Recipients: []string{rcpt}}, Body: bytes.NewReader(body), Size: int64(len(body))})
		if len(res) == 1 && len(res[0]) == 1 {
			return res[0][0]
		}
		return mail.StatusOf(err)
	}
	st := send(&pki.Client, "friend@foreign.test", "tls-relay-cert")
	ok("QMTPS client certificate may relay", st.IsAccept(), "%s", st.Reply())
	st = send(nil, "friend@foreign.test", "tls-relay-nocert")
	ok("QMTPS without a client certificate may not relay", st.IsPermanent() && st.EnhancedCode() == "5.7.1", "%s", st.Reply())
	st = send(nil, "joe@example.com", "tls-local-nocert")
	ok("QMTPS without a client certificate delivers locally", st.IsAccept(), "%s", st.Reply())
	st = send(&pki.Stranger, "friend@foreign.test", "tls-relay-stranger")
	ok("QMTPS with another CA's certificate may not relay", !st.IsAccept(), "%s", st.Reply())
	testpeer.WaitFor(t, "the relayed message", 30*time.Second, func() bool { return len(foreign.copies()) >= 1 })
	for _, c := range foreign.copies() {
		if c.Key.Marker != "tls-relay-cert" {
			t.Errorf("%s reached the foreign hop", c.Key.Marker)
		}
	}

	// Privileges.
	uids := d.uids()
	ok("daemon runs as nobody", len(uids) == 4 && uids[0] == "65534" && uids[1] == "65534" && uids[2] == "65534" && uids[3] == "65534", "Uid: %v", uids)
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.pid()))
	ok("daemon holds no capabilities", strings.Contains(string(status), "CapEff:\t0000000000000000") && strings.Contains(string(status), "CapPrm:\t0000000000000000"), "%s", grepLog(string(status), "Cap", 5))
	ok("daemon still serves the port it bound as root", starttls(smtp25, pki.clientTLS()) == nil, "no STARTTLS on %s", smtp25)
	fi, err := os.Stat(filepath.Join(d.dir, "queue"))
	if err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		// Private: only nobody reads or writes it; others may only search
		// it, to reach the control socket (any user may read the queue's
		// summary through the daemon, as with Postfix's showq).
		perm := fi.Mode().Perm()
		ok("queue directory private to nobody", st.Uid == 65534 && perm&0o700 == 0o700 && perm&0o066 == 0, "uid %d mode %v", st.Uid, perm)
	}
	d.stop()

	// As root without `user`: refused.
	cfgPath := filepath.Join(d.dir, "nouser.toml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("queue_dir = %q\n[smtp]\nlisten = [%q]\n", filepath.Join(d.dir, "q2"), h.addr(t))), 0o644)
	out, err := exec.Command(qmgateBin, "serve", "-config", cfgPath).CombinedOutput()
	code := -1
	if ee, isExit := err.(*exec.ExitError); isExit {
		code = ee.ExitCode()
	}
	ok("root without `user` refuses to start", code == 78 && strings.Contains(string(out), "user = "), "exit %d: %s", code, out)

	// As an ordinary user without `user`: runs.
	userDir := filepath.Join(d.dir, "asuser")
	os.MkdirAll(userDir, 0o755)
	os.Chown(userDir, 65534, 65534)
	userCfg := filepath.Join(userDir, "qmgate.toml")
	userSMTP, userMetrics := h.addr(t), h.addr(t)
	os.WriteFile(userCfg, []byte(fmt.Sprintf("queue_dir = %q\nrcpthosts = [\"example.com\"]\n[smtp]\nlisten = [%q]\n[metrics]\nlisten = %q\n[[route]]\ndomains = [\"example.com\"]\nvia = \"maildir:%s/maildir\"\n",
		filepath.Join(userDir, "queue"), userSMTP, userMetrics, userDir)), 0o644)
	cmd := exec.Command(qmgateBin, "serve", "-config", userCfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Pdeathsig: syscall.SIGKILL}
	var logb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logb, &logb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	served := testpeer.Poll(30*time.Second, 25*time.Millisecond, func() bool {
		st := probe("", "", userSMTP, "joe@example.com", fmt.Sprintf("asuser-%d", time.Now().UnixNano()), newLedger())
		return st["SMTP"].IsAccept()
	})
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() }) // if it ignores SIGTERM
	cmd.Process.Signal(syscall.SIGTERM)
	werr := testpeer.Recv(t, "the daemon to exit on SIGTERM", time.Minute, exited)
	ok("an ordinary user runs it without `user`", served && werr == nil, "served %v, exit %v\n%s", served, werr, logb.String())

	report(t, &row{
		Test:   "TLS and privileges",
		Load:   "QMTPS with client_ca, SMTP with STARTTLS, certificates from a test CA",
		Inputs: "TLS 1.0 to 1.3 on QMTPS and after STARTTLS; QMTPS with our client certificate, none, another CA's; a root start with and without `user`; an ordinary user's start",
		Notes: "TLS 1.0 and 1.1 handshakes fail on both listeners, 1.2 and 1.3 succeed; only a client certificate from client_ca relays over QMTPS; started as root the daemon binds port 25 " +
			"and runs as nobody (all four uids) with no capabilities, its queue private to it; without `user` a root start exits 78 naming the setting; an ordinary user needs no configuration for it. Checks: " +
			strings.Join(checks, "; ") + ".",
	})
}

// starttls says EHLO and STARTTLS and completes a handshake with cfg.
func starttls(addr string, cfg *tls.Config) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	readReply(br)
	fmt.Fprintf(c, "EHLO tls.test\r\n")
	readReply(br)
	fmt.Fprintf(c, "STARTTLS\r\n")
	if code, text := readReply(br); code != "220" {
		return fmt.Errorf("STARTTLS: %q", text)
	}
	tc := tls.Client(c, cfg)
	return tc.Handshake()
}
