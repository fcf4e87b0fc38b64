package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/dkim"
	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
)

// dkimKey is a key file made for a test and its DNS record.
type dkimKey struct {
	selector, file, txt string
}

// makeKey writes a new key for selector into dir, mode 0600 as keygen does.
func makeKey(t *testing.T, dir, algo, selector string) dkimKey {
	t.Helper()
	priv, txt, err := dkim.Keygen(algo, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, selector+".key")
	if err := dkim.WriteKeyFile(f, priv); err != nil {
		t.Fatal(err)
	}
	return dkimKey{selector: selector, file: f, txt: txt}
}

// dkimSection is the [[dkim]] section for k.
func (k dkimKey) section(domain string) string {
	return fmt.Sprintf("[[dkim]]\ndomain = %q\nselector = %q\nkey_file = %q\nsubdomains = true\n", domain, k.selector, k.file)
}

// dkimpyVerdicts has dkimpy verify every DKIM-Signature of each message,
// with the public keys of keys for domain given directly instead of DNS. It
// returns, per message name, "pass" or "fail" per signature ("" for none).
func dkimpyVerdicts(t *testing.T, domain string, keys []dkimKey, msgs map[string]string) map[string]string {
	t.Helper()
	py := testpeer.Dkimpy(t)
	dir := t.TempDir()
	recs := map[string]string{}
	for _, k := range keys {
		recs[k.selector+"._domainkey."+domain] = k.txt
	}
	byFile := map[string]string{}
	var files []string
	for name, m := range msgs {
		f := filepath.Join(dir, strings.ReplaceAll(name, "/", "_"))
		if err := os.WriteFile(f, []byte(m), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		byFile[f] = name
	}
	job, _ := json.Marshal(map[string]any{"records": recs, "messages": files})
	jf := filepath.Join(dir, "job.json")
	if err := os.WriteFile(jf, job, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "../internal/dkim/testdata/dkimpy_verify.py", jf)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Logf("dkimpy notes:\n%s", stderr.String())
	}
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f, verdict, _ := strings.Cut(l, " ")
		got[byFile[f]] = strings.TrimSpace(verdict)
	}
	return got
}

// selectors lists the s= tags of a message's DKIM-Signature fields.
func selectors(msg string) []string {
	var out []string
	for _, l := range strings.SplitAfter(msg, "\n") {
		if !strings.HasPrefix(strings.ToLower(l), "dkim-signature:") {
			if l == "\n" || l == "\r\n" {
				break
			}
			continue
		}
		_, rest, _ := strings.Cut(msg[strings.Index(msg, l):], " s=")
		sel, _, _ := strings.Cut(rest, ";")
		out = append(out, sel)
	}
	return out
}

func submitQMQP(t *testing.T, addr string, env mail.Envelope, body string) mail.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := qmqp.Send(ctx, []string{addr}, env, strings.NewReader(body), int64(len(body)))
	if err != nil && res.Status.Class == 0 {
		t.Fatalf("qmqp send: %v", err)
	}
	return res.Status
}

func crlfText(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// TestHubDKIM: hub A signs its clients' mail with an Ed25519 and an
// RSA-2048 key (RFC 8463 dual signing) and delivers it into a Maildir, over
// QMTP to hub B (which holds the same keys and does not sign again) and over
// SMTP to hub C; dkimpy verifies every delivered copy, of messages that
// came in over QMQP with LF and with CR LF line ends and over SMTP from
// swaks. A stranger's mail for A's rcpthosts is not signed.
func TestHubDKIM(t *testing.T) {
	swaks := testpeer.Need(t, "swaks")
	testpeer.Dkimpy(t)
	kdir := t.TempDir()
	ed := makeKey(t, kdir, "ed25519", "e2026")
	rs := makeKey(t, kdir, "rsa", "r2026")
	keys := ed.section("example.net") + rs.section("example.net")
	b := startHub(t, `
hostname = "hub-b.test"
rcpthosts = ["qmtp.example"]
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.0/8"]
[[route]]
domains = ["*"]
via = "maildir:DIR/maildir"
`+keys)
	c := startHub(t, `
hostname = "hub-c.test"
rcpthosts = ["smtp.example"]
[smtp]
listen = ["127.0.0.1:0"]
[[route]]
domains = ["*"]
via = "maildir:DIR/maildir"
`)
	a := startHub(t, fmt.Sprintf(`
hostname = "hub-a.test"
rcpthosts = ["local.example"]
[qmqp]
listen = ["127.0.0.1:0"]
allow = ["127.0.0.0/8"]
[smtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.0/8"]
[qmtp]
listen = ["127.0.0.1:0"]
[[route]]
domains = ["local.example"]
via = "maildir:DIR/maildir"
[[route]]
domains = ["qmtp.example"]
via = "qmtp://%s"
[[route]]
domains = ["smtp.example"]
via = "smtp://%s"
tls = "none"
`, b.addr("qmtp"), c.addr("smtp"))+keys)

	const msg = "From: Cron Daemon <cron@app17.example.net>\nTo: ops@example.org\nSubject: backup %s\n" +
		"Date: Wed, 02 Dec 2026 04:00:00 +0000\nMessage-ID: <%s@app17.example.net>\n\nBackup finished.\n\n\n"
	rcpts := func(user string) []string {
		return []string{user + "@local.example", user + "@qmtp.example", user + "@smtp.example"}
	}
	for _, tc := range []struct{ user, body string }{
		{"lf", fmt.Sprintf(msg, "lf", "lf")},
		{"crlf", crlfText(fmt.Sprintf(msg, "crlf", "crlf"))},
	} {
		if st := submitQMQP(t, a.addr("qmqp"), mail.Envelope{Sender: "cron@app17.example.net", Recipients: rcpts(tc.user)}, tc.body); !st.IsAccept() {
			t.Fatalf("QMQP %s: %v", tc.user, st)
		}
	}
	cmd := exec.Command(swaks, "--server", a.addr("smtp"), "--from", "cron@app17.example.net",
		"--to", strings.Join(rcpts("smtp"), ","), "--data", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf(msg, "smtp", "smtp"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	// A stranger (no relay rights) sends to rcpthosts with our From:.
	if st := sendQMTP(t, a.addr("qmtp"), mail.Envelope{Sender: "x@stranger.test", Recipients: []string{"stranger@local.example"}},
		fmt.Sprintf(msg, "stranger", "stranger")); !st[0].IsAccept() {
		t.Fatalf("stranger: %v", st[0])
	}

	where := map[string]string{"local.example": a.dir, "qmtp.example": b.dir, "smtp.example": c.dir}
	msgs := map[string]string{}
	for _, user := range []string{"lf", "crlf", "smtp"} {
		for dom, dir := range where {
			root := filepath.Join(dir, "maildir")
			testpeer.WaitFor(t, user+"@"+dom, 60*time.Second, func() bool { return len(maildirFiles(t, root, dom, user)) == 1 })
			m := maildirFiles(t, root, dom, user)[0]
			if sel := selectors(m); strings.Join(sel, ",") != "e2026,r2026" {
				t.Errorf("%s@%s: signatures by %v, want e2026 and r2026 once each:\n%s", user, dom, sel, m)
			}
			msgs[user+"@"+dom] = m
		}
	}
	root := filepath.Join(a.dir, "maildir")
	testpeer.WaitFor(t, "the stranger's message", 30*time.Second, func() bool { return len(maildirFiles(t, root, "local.example", "stranger")) == 1 })
	if m := maildirFiles(t, root, "local.example", "stranger")[0]; strings.Contains(strings.ToLower(m), "dkim-signature") {
		t.Errorf("a stranger's mail was signed:\n%s", m)
	}
	if !strings.Contains(msgs["crlf@local.example"], "Backup finished.\r\n") {
		t.Errorf("the CR LF message was not stored with its CR LF:\n%q", msgs["crlf@local.example"])
	}
	got := dkimpyVerdicts(t, "example.net", []dkimKey{ed, rs}, msgs)
	for name, m := range msgs {
		if got[name] != "pass pass" {
			t.Errorf("%s: dkimpy says %q, want pass for both signatures:\n%q", name, got[name], m)
		}
	}
	// The signatures were made once, at A: B kept them.
	if !strings.Contains(b.logText(), "already carries our valid signatures") {
		t.Error("hub B's log does not say it kept A's signatures")
	}
}

// TestHubDKIMRotation: the documented rotation, by reloads: the old
// selector signs; both sign once the new key is added; the new one alone
// once the old is retired. A key its group may read refuses the start and
// the reload (the running keys stay).
func TestHubDKIMRotation(t *testing.T) {
	testpeer.Dkimpy(t)
	kdir := t.TempDir()
	oldK := makeKey(t, kdir, "ed25519", "old")
	newK := makeKey(t, kdir, "rsa", "new")
	base := `
rcpthosts = ["example.net"]
[qmqp]
listen = ["127.0.0.1:0"]
allow = ["127.0.0.0/8"]
[[route]]
domains = ["*"]
via = "maildir:DIR/maildir"
`
	h := startHub(t, base+oldK.section("example.net"))
	reload := func(sections string) error {
		cfg, err := config.Parse("reload.toml", []byte("queue_dir = \""+h.dir+"/queue\"\n"+strings.ReplaceAll(base, "DIR", h.dir)+sections))
		if err != nil {
			t.Fatal(err)
		}
		return h.hub.Reload(cfg)
	}
	root := filepath.Join(h.dir, "maildir")
	msgs := map[string]string{}
	send := func(step, want string) {
		t.Helper()
		body := "From: ops@example.net\nSubject: " + step + "\n\nrotation step " + step + "\n"
		if st := submitQMQP(t, h.addr("qmqp"), mail.Envelope{Sender: "ops@example.net", Recipients: []string{step + "@example.net"}}, body); !st.IsAccept() {
			t.Fatalf("%s: %v", step, st)
		}
		testpeer.WaitFor(t, step, 30*time.Second, func() bool { return len(maildirFiles(t, root, "example.net", step)) == 1 })
		m := maildirFiles(t, root, "example.net", step)[0]
		if got := strings.Join(selectors(m), ","); got != want {
			t.Fatalf("%s: signed by %q, want %q", step, got, want)
		}
		msgs[step] = m
	}
	send("before", "old")
	if err := reload(oldK.section("example.net") + newK.section("example.net")); err != nil {
		t.Fatal(err)
	}
	send("both", "old,new")
	if err := os.Chmod(newK.file, 0o640); err != nil {
		t.Fatal(err)
	}
	err := reload(newK.section("example.net"))
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("reload with a group-readable key: %v", err)
	}
	cfg, cerr := config.Parse("t.toml", []byte("queue_dir = \""+t.TempDir()+"\"\n"+base+newK.section("example.net")))
	if cerr != nil {
		t.Fatal(cerr)
	}
	if _, err := New(cfg, quiet()); err == nil {
		t.Fatal("a hub started with a group-readable key")
	}
	send("refused", "old,new") // the refused reload changed nothing
	os.Chmod(newK.file, 0o600)
	if err := reload(newK.section("example.net")); err != nil {
		t.Fatal(err)
	}
	send("after", "new")
	got := dkimpyVerdicts(t, "example.net", []dkimKey{oldK, newK}, msgs)
	want := map[string]string{"before": "pass", "both": "pass pass", "refused": "pass pass", "after": "pass"}
	for step, v := range want {
		if got[step] != v {
			t.Errorf("%s: dkimpy says %q, want %q", step, got[step], v)
		}
	}
}

// TestHubRewrite: masquerading of an app server's mail, submitted over
// QMQP: the envelope sender and the From: field rewritten (root@* to the
// ops address, *.internal to example.net), mail for root of the app server
// sent to the admin address, the change named in the Received line's
// comment, and the DKIM signature made over the rewritten From:. A
// stranger's mail is left as it came.
func TestHubRewrite(t *testing.T) {
	testpeer.Dkimpy(t)
	k := makeKey(t, t.TempDir(), "ed25519", "s1")
	h := startHub(t, `
hostname = "hub.example.net"
rcpthosts = ["example.net"]
[qmqp]
listen = ["127.0.0.1:0"]
allow = ["127.0.0.0/8"]
[qmtp]
listen = ["127.0.0.1:0"]
[[route]]
domains = ["*"]
via = "maildir:DIR/maildir"
[rewrite]
headers = true
hosts = [{match = "*.internal", domain = "example.net"}]
users = [{match = "root@*", address = "ops@example.net"}]
admin = {address = "admin@example.net", hosts = ["*.internal"], users = ["root", "postmaster"]}
`+k.section("example.net"))
	body := "From: Cron Daemon <root@app17.internal>\nSender: www-data@web3.internal\nTo: root@app17.internal\n" +
		"Subject: disk\n\n/ is 91% full\n"
	env := mail.Envelope{Sender: "root@app17.internal", Recipients: []string{"root@app17.internal", "www-data@web3.internal"}}
	if st := submitQMQP(t, h.addr("qmqp"), env, body); !st.IsAccept() {
		t.Fatal(st)
	}
	root := filepath.Join(h.dir, "maildir")
	testpeer.WaitFor(t, "the admin's copy", 30*time.Second, func() bool { return len(maildirFiles(t, root, "example.net", "admin")) == 1 })
	m := maildirFiles(t, root, "example.net", "admin")[0]
	t.Logf("delivered:\n%s", m)
	for _, want := range []string{
		"Return-Path: <ops@example.net>\n",
		"\nFrom: Cron Daemon <ops@example.net>\n",
		"\nSender: www-data@example.net\n",
		"\nTo: root@app17.internal\n", // To: is not the sender's: kept
		"(rewritten: sender root@app17.internal to ops@example.net, recipient root@app17.internal to admin@example.net, From: root@app17.internal to ops@example.net, Sender: www-data@web3.internal to www-data@example.net); ",
		"  by hub.example.net with QMQP\n",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("delivered message lacks %q:\n%s", want, m)
		}
	}
	// The other recipient, not root or postmaster, keeps its address.
	testpeer.WaitFor(t, "www-data's copy", 30*time.Second, func() bool { return len(maildirFiles(t, root, "web3.internal", "www")) == 1 })
	if got := dkimpyVerdicts(t, "example.net", []dkimKey{k}, map[string]string{"admin": m}); got["admin"] != "pass" {
		t.Errorf("dkimpy says %q for the rewritten message", got["admin"])
	}
	// A stranger over QMTP, for rcpthosts: neither rewritten nor signed.
	if st := sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "root@app17.internal", Recipients: []string{"postmaster@example.net"}}, body); !st[0].IsAccept() {
		t.Fatal(st[0])
	}
	testpeer.WaitFor(t, "the stranger's message", 30*time.Second, func() bool { return len(maildirFiles(t, root, "example.net", "postmaster")) == 1 })
	s := maildirFiles(t, root, "example.net", "postmaster")[0]
	if !strings.HasPrefix(s, "Return-Path: <root@app17.internal>\n") || !strings.Contains(s, "\nFrom: Cron Daemon <root@app17.internal>\n") ||
		strings.Contains(s, "rewritten") || strings.Contains(s, "DKIM-Signature") {
		t.Errorf("a stranger's message was changed:\n%s", s)
	}
}
