package relay

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// mkUserDir makes a maildir user's directory (the user's maildir) with
// control files, mode 0600 unless the name carries a mode ("name:0666").
func mkUserDir(t *testing.T, root, domain, user string, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(root, domain, user)
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range files {
		mode := os.FileMode(0o600)
		if n, m, ok := strings.Cut(name, ":"); ok {
			var v uint32
			fmt.Sscanf(m, "%o", &v)
			name, mode = n, os.FileMode(v)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// newFiles returns the messages in dir/new.
func newFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "new", "*"))
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

const userControlHub = `
hostname = "hub.test"
rcpthosts = ["example.com", "other.example"]
[qmtp]
listen = ["127.0.0.1:0"]
[queue]
retry_min = "200ms"
retry_max = "400ms"
[[route]]
domains = ["example.com"]
via = "maildir:DIR/maildir"
%s
[[route]]
domains = ["other.example"]
via = "mbox:DIR/mbox"
[[route]]
domains = ["*"]
via = "maildir:DIR/far"
`

// TestHubUserControl: through a running hub and its queue, the user's
// control files decide: joe-lists into Maildir-lists, joe-shop forwarded to
// another route, joe-x into the IMAP folder .x, joe-other into joe's own
// maildir, and a loop of two forwards stopped with a bounce.
func TestHubUserControl(t *testing.T) {
	h := startHub(t, fmt.Sprintf(userControlHub, ""))
	root := filepath.Join(h.dir, "maildir")
	joe := mkUserDir(t, root, "example.com", "joe", map[string]string{
		".qmail-lists": "# lists go apart\n./Maildir-lists/\n",
		".qmail-shop":  "&shop@other.example\n",
		".qmail-loop":  "ann-loop\n", // a bare local part: ann-loop@example.com
	})
	mkUserDir(t, root, "example.com", "ann", map[string]string{".qmail-loop": "&joe-loop@example.com\n"})
	for _, sub := range []string{"tmp", "new", "cur"} {
		os.MkdirAll(filepath.Join(joe, ".x", sub), 0o700) // the IMAP folder "x"
	}

	send := func(rcpt, body string) {
		t.Helper()
		st := sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "alice@example.com", Recipients: []string{rcpt}}, body)
		if !st[0].IsAccept() {
			t.Fatalf("%s refused: %v", rcpt, st[0])
		}
	}
	send("joe-lists@example.com", "Subject: lists\n\nl\n")
	send("joe-shop@example.com", "Subject: shop\n\ns\n")
	send("joe-X@example.com", "Subject: folder\n\nx\n")
	send("joe-other@example.com", "Subject: other\n\no\n")
	send("joe-loop@example.com", "Subject: loop\n\nround and round\n")

	testpeer.WaitFor(t, "joe-lists in Maildir-lists", 20*time.Second, func() bool { return len(newFiles(t, filepath.Join(joe, "Maildir-lists"))) == 1 })
	m := newFiles(t, filepath.Join(joe, "Maildir-lists"))[0]
	if !strings.HasPrefix(m, "Return-Path: <alice@example.com>\nDelivered-To: joe-lists@example.com\n") || stripTrace(m) != "Subject: lists\n\nl\n" {
		t.Errorf("Maildir-lists:\n%s", m)
	}

	testpeer.WaitFor(t, "joe-x in the folder .x", 20*time.Second, func() bool { return len(newFiles(t, filepath.Join(joe, ".x"))) == 1 })
	if m := newFiles(t, filepath.Join(joe, ".x"))[0]; !strings.Contains(m, "Delivered-To: joe-X@example.com\n") || stripTrace(m) != "Subject: folder\n\nx\n" {
		t.Errorf(".x:\n%s", m)
	}

	mbox := filepath.Join(h.dir, "mbox", "other.example", "shop")
	testpeer.WaitFor(t, "joe-shop forwarded into shop's mbox", 20*time.Second, func() bool {
		b, _ := os.ReadFile(mbox)
		return strings.Contains(string(b), "Subject: shop")
	})
	b, _ := os.ReadFile(mbox)
	for _, want := range []string{"From alice@example.com ", "Return-Path: <alice@example.com>\nDelivered-To: shop@other.example\n", "\nDelivered-To: joe-shop@example.com\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("shop's mbox lacks %q:\n%s", want, b)
		}
	}

	// The loop: joe-loop → ann-loop → joe-loop, which already carries
	// joe-loop's Delivered-To line: a bounce to alice.
	testpeer.WaitFor(t, "the loop's bounce in alice's maildir", 30*time.Second, func() bool {
		for _, m := range newFiles(t, filepath.Join(root, "example.com", "alice")) {
			if strings.Contains(m, "report-type=delivery-status") {
				return true
			}
		}
		return false
	})
	var dsn string
	for _, m := range newFiles(t, filepath.Join(root, "example.com", "alice")) {
		if strings.Contains(m, "report-type=delivery-status") {
			dsn = m
		}
	}
	for _, want := range []string{"Final-Recipient: rfc822; joe-loop@example.com", "Status: 5.4.6", "looping", "Subject: loop"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("bounce lacks %q:\n%s", want, dsn)
		}
	}

	// joe's own maildir got joe-other only.
	own := newFiles(t, joe)
	if len(own) != 1 || stripTrace(own[0]) != "Subject: other\n\no\n" {
		t.Errorf("joe's own maildir: %q", own)
	}
	testpeer.WaitFor(t, "the queue to empty", 20*time.Second, func() bool { return h.hub.Queue().Metrics().Messages == 0 })
}

// TestHubUserControlUnsafe: a control file others can write is refused
// with a temporary failure, logged, and the message stays queued; nothing
// is delivered anywhere.
func TestHubUserControlUnsafe(t *testing.T) {
	h := startHub(t, fmt.Sprintf(userControlHub, ""))
	root := filepath.Join(h.dir, "maildir")
	joe := mkUserDir(t, root, "example.com", "joe", map[string]string{".qmail-bad:0666": "&shop@other.example\n"})
	st := sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "alice@example.com", Recipients: []string{"joe-bad@example.com"}}, "Subject: bad\n\nb\n")
	if !st[0].IsAccept() {
		t.Fatal(st[0])
	}
	testpeer.WaitFor(t, "the refusal in the log", 20*time.Second, func() bool {
		return strings.Contains(h.logText(), "mailbox control file refused")
	})
	if !strings.Contains(h.logText(), ".qmail-bad") {
		t.Errorf("the log does not name the file:\n%s", h.logText())
	}
	if n := h.hub.Queue().Metrics().Messages; n != 1 {
		t.Errorf("queue holds %d messages, want the deferred one", n)
	}
	if len(newFiles(t, joe)) != 0 {
		t.Error("delivered despite the unsafe control file")
	}
	if _, err := os.Stat(filepath.Join(h.dir, "mbox", "other.example", "shop")); err == nil {
		t.Error("forwarded despite the unsafe control file")
	}
}

// TestHubUserControlSRS: a forward leaving rcpthosts gets an SRS sender;
// a bounce to that address is accepted and returned to the original
// sender; a forged SRS address is refused at RCPT.
func TestHubUserControlSRS(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "srs.secret")
	if err := os.WriteFile(secret, []byte("a long enough test secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := startHub(t, fmt.Sprintf(userControlHub, fmt.Sprintf("srs_secret_file = %q", secret)))
	root := filepath.Join(h.dir, "maildir")
	mkUserDir(t, root, "example.com", "joe", map[string]string{".qmail-away": "&joe@far.example\n"})
	st := sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "bob@other.example", Recipients: []string{"joe-away@example.com"}}, "Subject: away\n\na\n")
	if !st[0].IsAccept() {
		t.Fatal(st[0])
	}
	far := filepath.Join(h.dir, "far", "far.example", "joe")
	testpeer.WaitFor(t, "the forward at far.example", 20*time.Second, func() bool { return len(newFiles(t, far)) == 1 })
	m := newFiles(t, far)[0]
	rp, _, _ := strings.Cut(strings.TrimPrefix(m, "Return-Path: <"), ">")
	if !strings.HasPrefix(rp, "SRS0=") || !strings.HasSuffix(rp, "=other.example=bob@example.com") {
		t.Fatalf("forwarded with sender %q:\n%s", rp, m)
	}

	// The far site bounces to the SRS address.
	st = sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "", Recipients: []string{rp, "SRS0=xxxx=AA=other.example=bob@example.com"}}, "Subject: bounce\n\nyour mail bounced\n")
	if !st[0].IsAccept() {
		t.Fatalf("bounce to the SRS address refused: %v", st[0])
	}
	if !st[1].IsPermanent() {
		t.Fatalf("forged SRS address: %v", st[1])
	}
	mbox := filepath.Join(h.dir, "mbox", "other.example", "bob")
	testpeer.WaitFor(t, "the bounce back at bob", 20*time.Second, func() bool {
		b, _ := os.ReadFile(mbox)
		return strings.Contains(string(b), "your mail bounced")
	})
	b, _ := os.ReadFile(mbox)
	if !strings.Contains(string(b), "Return-Path: <>\nDelivered-To: bob@other.example\n") {
		t.Errorf("bob's mbox:\n%s", b)
	}
}
