package transport

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qmgate/qmgate/internal/qmail/dotqmail"
	"github.com/qmgate/qmgate/mail"
)

// writeFiles makes dir and writes the files (mode 0600) into it.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// requeued records what a transport queued again.
type requeued struct {
	mu   sync.Mutex
	envs []mail.Envelope
	msgs []string
}

func (r *requeued) fn(ctx context.Context, env mail.Envelope, prefix []byte, body io.Reader) error {
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.envs = append(r.envs, env)
	r.msgs = append(r.msgs, string(prefix)+string(b))
	return nil
}

func countNew(t *testing.T, dir string) int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "new", "*"))
	return len(files)
}

// TestMaildirControlPlus: with separator '+', joe+lists follows
// .qmail-lists, joe-x is the user "joe-x" (never split at '-'), and
// joe+a-b falls back to .qmail-a-default.
func TestMaildirControlPlus(t *testing.T) {
	dir := t.TempDir()
	joe := filepath.Join(dir, "example.com", "joe")
	writeFiles(t, joe, map[string]string{".qmail-lists": "./Maildir-lists/\n", ".qmail-a-default": "./Maildir-a/\n"})
	md := &Maildir{Mailboxes: Mailboxes{Dir: dir, UserControl: UserControl{Separator: '+'}}, Hostname: "hub.example"}
	if st := md.CheckRecipient("joe-x@example.com"); !st.IsAccept() {
		t.Errorf("joe-x refused with separator +: %v", st)
	}
	if _, user, _ := md.mailbox("joe-x+y@example.com"); user != "joe-x" {
		t.Errorf("joe-x+y is the mailbox %q, want joe-x", user)
	}
	j := testJob("s@example.org", "x\n", "joe+lists@example.com", "joe+a-b@example.com", "joe@example.com")
	md.Deliver(context.Background(), []*Job{j})
	for i, r := range j.Results {
		if !r.Status.IsAccept() {
			t.Fatalf("result %d: %v", i, r.Status)
		}
	}
	if countNew(t, filepath.Join(joe, "Maildir-lists")) != 1 || countNew(t, filepath.Join(joe, "Maildir-a")) != 1 || countNew(t, joe) != 1 {
		t.Errorf("deliveries: lists %d, a %d, own %d", countNew(t, filepath.Join(joe, "Maildir-lists")), countNew(t, filepath.Join(joe, "Maildir-a")), countNew(t, joe))
	}
}

// TestMaildirFoldersOff: with NoFolders, joe-x goes to joe's own maildir
// even though the folder .x exists.
func TestMaildirFoldersOff(t *testing.T) {
	dir := t.TempDir()
	joe := filepath.Join(dir, "example.com", "joe")
	writeFiles(t, filepath.Join(joe, ".x", "new"), nil)
	md := &Maildir{Mailboxes: Mailboxes{Dir: dir, UserControl: UserControl{NoFolders: true}}}
	j := testJob("s@example.org", "x\n", "joe-x@example.com")
	md.Deliver(context.Background(), []*Job{j})
	if !j.Results[0].Status.IsAccept() || countNew(t, joe) != 1 || countNew(t, filepath.Join(joe, ".x")) != 0 {
		t.Fatalf("%v; own %d, folder %d", j.Results[0].Status, countNew(t, joe), countNew(t, filepath.Join(joe, ".x")))
	}
}

// TestMboxControl: an mbox route reads control files from
// DIR/domain/.home/user; a forward goes through the requeue function
// with the Delivered-To line; without one it fails temporarily.
func TestMboxControl(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "example.com", MboxHomeDir, "joe")
	writeFiles(t, home, map[string]string{".qmail-x": "./mbox-x\n", ".qmail-fw": "&ann@example.net\n./mbox-fw\n"})
	mb := &Mbox{Mailboxes: Mailboxes{Dir: dir}}
	j := testJob("s@example.org", "Subject: s\n\nFrom here\n", "joe-x@example.com", "joe-fw@example.com")
	mb.Deliver(context.Background(), []*Job{j})
	if !j.Results[0].Status.IsAccept() {
		t.Fatal(j.Results[0].Status)
	}
	b, err := os.ReadFile(filepath.Join(home, "mbox-x"))
	if err != nil || !strings.Contains(string(b), "Delivered-To: joe-x@example.com\n") || !strings.Contains(string(b), "\n>From here\n") {
		t.Fatalf("mbox-x: %v\n%s", err, b)
	}
	if !j.Results[1].Status.IsTemporary() {
		t.Fatalf("forward without a requeue function: %v", j.Results[1].Status)
	}

	var rq requeued
	mb.SetRequeue(rq.fn)
	j = testJob("s@example.org", "Subject: s\n\nbody\n", "joe-fw@example.com")
	mb.Deliver(context.Background(), []*Job{j})
	if !j.Results[0].Status.IsAccept() {
		t.Fatal(j.Results[0].Status)
	}
	if len(rq.envs) != 1 || rq.envs[0].Sender != "s@example.org" || len(rq.envs[0].Recipients) != 1 || rq.envs[0].Recipients[0] != "ann@example.net" {
		t.Fatalf("requeued %v", rq.envs)
	}
	if rq.msgs[0] != "Delivered-To: joe-fw@example.com\nSubject: s\n\nbody\n" {
		t.Errorf("requeued message %q", rq.msgs[0])
	}
	if _, err := os.Stat(filepath.Join(dir, "example.com", "joe")); err == nil {
		t.Error("the own mbox was written")
	}
}

// TestMaildirControlEscape: a line leading outside the user's directory
// and a symbolic link control file pointing outside it are refused
// temporarily, with a destination of their own.
func TestMaildirControlEscape(t *testing.T) {
	dir := t.TempDir()
	joe := filepath.Join(dir, "example.com", "joe")
	outside := filepath.Join(t.TempDir(), "qmail")
	writeFiles(t, joe, map[string]string{".qmail-up": "./../ann/\n"})
	os.WriteFile(outside, []byte("./Maildir-x/\n"), 0o600)
	if err := os.Symlink(outside, filepath.Join(joe, ".qmail-link")); err != nil {
		t.Fatal(err)
	}
	md := &Maildir{Mailboxes: Mailboxes{Dir: dir}}
	j := testJob("s@example.org", "x\n", "joe-up@example.com", "joe-link@example.com")
	md.Deliver(context.Background(), []*Job{j})
	for i, r := range j.Results {
		if !r.Status.IsTemporary() || r.Destination != "mailbox:example.com/joe" {
			t.Errorf("result %d: %v (destination %q)", i, r.Status, r.Destination)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "example.com", "ann")); err == nil {
		t.Error("delivered outside the user's directory")
	}
}

// TestMaildirControlPrograms: program lines fail temporarily unless the
// route allows them; allowed, they run with qmail-local's environment.
func TestMaildirControlPrograms(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("programs are never run as root")
	}
	dir := t.TempDir()
	joe := filepath.Join(dir, "example.com", "joe")
	writeFiles(t, joe, map[string]string{".qmail-prog": "|cat > got; echo \"$EXT $SENDER\" > env\n"})
	md := &Maildir{Mailboxes: Mailboxes{Dir: dir}}
	j := testJob("s@example.org", "x\n", "joe-prog@example.com")
	md.Deliver(context.Background(), []*Job{j})
	if !j.Results[0].Status.IsTemporary() {
		t.Fatalf("programs off: %v", j.Results[0].Status)
	}
	md.Programs = true
	j = testJob("s@example.org", "x\n", "joe-prog@example.com")
	md.Deliver(context.Background(), []*Job{j})
	if !j.Results[0].Status.IsAccept() {
		t.Fatalf("programs on: %v", j.Results[0].Status)
	}
	got, _ := os.ReadFile(filepath.Join(joe, "got"))
	env, _ := os.ReadFile(filepath.Join(joe, "env"))
	if string(got) != "x\n" || string(env) != "prog s@example.org\n" {
		t.Errorf("program got %q, env %q", got, env)
	}
}

// TestSRSForwardAndReverse: a forward leaving LocalDomains gets an SRS
// sender; one staying keeps it; the SRS address is accepted and reversed.
func TestSRSForwardAndReverse(t *testing.T) {
	dir := t.TempDir()
	joe := filepath.Join(dir, "example.com", "joe")
	writeFiles(t, joe, map[string]string{".qmail-out": "&ann@far.example\n", ".qmail-in": "&ann@example.com\n"})
	srs := &dotqmail.SRS{Secrets: [][]byte{[]byte("secret")}, Domain: "example.com"}
	md := &Maildir{Mailboxes: Mailboxes{Dir: dir, UserControl: UserControl{SRS: srs, LocalDomains: mail.HostList{"example.com"}}}}
	var rq requeued
	md.SetRequeue(rq.fn)
	j := testJob("bob@other.example", "x\n", "joe-out@example.com", "joe-in@example.com")
	md.Deliver(context.Background(), []*Job{j})
	if len(rq.envs) != 2 {
		t.Fatalf("requeued %v (%v)", rq.envs, j.Results)
	}
	out, in := rq.envs[0].Sender, rq.envs[1].Sender
	if !strings.HasPrefix(out, "SRS0=") || in != "bob@other.example" {
		t.Fatalf("senders %q, %q", out, in)
	}
	if st := md.CheckRecipient(out); !st.IsAccept() {
		t.Fatalf("SRS address refused: %v", st)
	}
	if st := md.CheckRecipient("SRS0=abcd=AA=x.example=y@example.com"); !st.IsPermanent() {
		t.Fatalf("forged SRS address: %v", st)
	}
	j = testJob("", "bounce\n", out)
	md.Deliver(context.Background(), []*Job{j})
	if !j.Results[0].Status.IsAccept() || len(rq.envs) != 3 || rq.envs[2].Recipients[0] != "bob@other.example" || rq.envs[2].Sender != "" {
		t.Fatalf("reversal: %v, %v", j.Results[0].Status, rq.envs)
	}
	if !bytes.HasPrefix([]byte(rq.msgs[2]), []byte("Delivered-To: "+out+"\n")) {
		t.Errorf("reversed message %q", rq.msgs[2])
	}
}
