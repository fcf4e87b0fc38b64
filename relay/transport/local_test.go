package transport

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qmgate/qmgate/mail"
)

func testJob(sender string, body string, rcpts ...string) *Job {
	return &Job{
		ID:       "test1",
		Envelope: mail.Envelope{Sender: sender, Recipients: rcpts},
		Size:     int64(len(body)),
		Open:     func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil },
	}
}

func TestMailboxName(t *testing.T) {
	for _, tc := range []struct {
		rcpt, dom, user string
		ok              bool
	}{
		{"joe@example.com", "example.com", "joe", true},
		{"Joe-Lists-Go@Example.COM.", "example.com", "joe", true},
		{"joe", "", "", false},
		{"../../etc@example.com", "", "", false},
		{"joe@../x", "", "", false},
		{"joe@a/b", "", "", false},
		{".hidden@example.com", "", "", false},
		{"-ext@example.com", "", "", false},
		{"jo e@example.com", "", "", false},
		{"joe\x00@example.com", "", "", false},
		{"joe@", "", "", false},
	} {
		dom, user, err := mail.MailboxName(tc.rcpt)
		if (err == nil) != tc.ok || dom != tc.dom || user != tc.user {
			t.Errorf("MailboxName(%q) = %q, %q, %v; want %q, %q, ok=%v", tc.rcpt, dom, user, err, tc.dom, tc.user, tc.ok)
		}
	}
}

func TestMaildirDelivery(t *testing.T) {
	dir := t.TempDir()
	md := &Maildir{Mailboxes: Mailboxes{Dir: dir}, Hostname: "hub.example"}
	body := "Subject: hi\n\nhello\n"
	j := testJob("sender@example.org", body, "joe-ext@Example.com", "joe@example.com", "../x@example.com")
	md.Deliver(context.Background(), []*Job{j})
	if len(j.Results) != 3 {
		t.Fatalf("results: %v", j.Results)
	}
	if !j.Results[0].Status.IsAccept() || !j.Results[1].Status.IsAccept() {
		t.Fatalf("want accepted, got %v", j.Results)
	}
	if !j.Results[2].Status.IsPermanent() {
		t.Fatalf("unsafe name: want permanent, got %v", j.Results[2])
	}
	files, _ := filepath.Glob(filepath.Join(dir, "example.com", "joe", "new", "*"))
	if len(files) != 2 {
		t.Fatalf("want 2 messages in new/, got %v", files)
	}
	var got []string
	for _, f := range files {
		b, _ := os.ReadFile(f)
		got = append(got, string(b))
	}
	want1 := "Return-Path: <sender@example.org>\nDelivered-To: joe-ext@Example.com\n" + body
	want2 := "Return-Path: <sender@example.org>\nDelivered-To: joe@example.com\n" + body
	if !(got[0] == want1 && got[1] == want2 || got[0] == want2 && got[1] == want1) {
		t.Fatalf("contents:\n%q\n%q", got[0], got[1])
	}
	for _, sub := range []string{"tmp", "cur"} {
		if st, err := os.Stat(filepath.Join(dir, "example.com", "joe", sub)); err != nil || !st.IsDir() {
			t.Errorf("missing %s/: %v", sub, err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "example.com", "joe", "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ not empty: %v", ents)
	}
}

func TestMaildirUnwritable(t *testing.T) {
	// A file where the domain directory should be fails even for root.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "example.com"), nil, 0o600)
	md := &Maildir{Mailboxes: Mailboxes{Dir: dir}}
	j := testJob("", "x\n", "joe@example.com")
	md.Deliver(context.Background(), []*Job{j})
	if !j.Results[0].Status.IsTemporary() {
		t.Fatalf("want temporary, got %v", j.Results[0])
	}
}

func TestMboxDelivery(t *testing.T) {
	dir := t.TempDir()
	mb := &Mbox{Mailboxes: Mailboxes{Dir: dir}}
	body := "Subject: x\n\nFrom me\n>From you\nno newline at end"
	mb.Deliver(context.Background(), []*Job{testJob("a@b.example", body, "joe@example.com")})
	mb.Deliver(context.Background(), []*Job{testJob("", "Subject: y\n\nsecond\n", "joe-x@example.com")})
	b, err := os.ReadFile(filepath.Join(dir, "example.com", "joe"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	parts := strings.SplitAfter(s, "\n")
	if !strings.HasPrefix(parts[0], "From a@b.example ") {
		t.Fatalf("first line %q", parts[0])
	}
	wantFirst := "Return-Path: <a@b.example>\nDelivered-To: joe@example.com\nSubject: x\n\n>From me\n>>From you\nno newline at end\n\n"
	rest := strings.Join(parts[1:], "")
	if !strings.HasPrefix(rest, wantFirst) {
		t.Fatalf("first message:\n%q", rest)
	}
	second := rest[len(wantFirst):]
	if !strings.HasPrefix(second, "From MAILER-DAEMON ") || !strings.HasSuffix(second, "\nReturn-Path: <>\nDelivered-To: joe-x@example.com\nSubject: y\n\nsecond\n\n") {
		t.Fatalf("second message:\n%q", second)
	}
}

func TestMboxrdCopyLongLine(t *testing.T) {
	long := strings.Repeat("x", 200000)
	var b strings.Builder
	if err := mboxrdCopy(&b, strings.NewReader(long+"From x\n"+long+"\nFrom y")); err != nil {
		t.Fatal(err)
	}
	want := long + "From x\n" + long + "\n>From y\n\n"
	if b.String() != want {
		t.Fatalf("mismatch (len %d vs %d)", b.Len(), len(want))
	}
}

func TestDiscard(t *testing.T) {
	j := testJob("", "x", "a@b", "c@d")
	Discard{}.Deliver(context.Background(), []*Job{j})
	for _, r := range j.Results {
		if !r.Status.IsAccept() {
			t.Fatal(r)
		}
	}
}

// TestMailboxNameASCIIOnly: only ASCII is lower-cased, so U+212A KELVIN
// SIGN does not land in kate's mailbox.
func TestMailboxNameASCIIOnly(t *testing.T) {
	for _, rcpt := range []string{"\u212Aate@example.com", "kate@\u212Aexample.com", "\u0130an@example.com"} {
		if dom, user, err := mail.MailboxName(rcpt); err == nil {
			t.Errorf("MailboxName(%q) = %q, %q; want refused", rcpt, dom, user)
		}
	}
}

func TestUsersFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	os.WriteFile(path, []byte("# valid users\njoe\n\nAnn@Example.COM\n"), 0o600)
	users, err := LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	md := &Maildir{Mailboxes: Mailboxes{Dir: t.TempDir(), Users: users}}
	for rcpt, code := range map[string]string{
		"joe@example.com":      "",
		"Joe-lists@other.test": "",
		"ann@example.com":      "",
		"ann@other.test":       "5.1.1",
		"bob@example.com":      "5.1.1",
		"../x@example.com":     "5.1.3",
		"-x@example.com":       "5.1.3",
	} {
		st := md.CheckRecipient(rcpt)
		if code == "" && !st.IsAccept() || code != "" && (!st.IsPermanent() || st.Code != code) {
			t.Errorf("CheckRecipient(%q) = %v, want %q", rcpt, st, code)
		}
	}
	// Delivery applies the same list (the list may have changed since the
	// recipient was accepted).
	j := testJob("s@x.example", "x\n", "joe@example.com", "bob@example.com")
	md.Deliver(context.Background(), []*Job{j})
	if !j.Results[0].Status.IsAccept() || j.Results[1].Status.Code != "5.1.1" {
		t.Fatalf("results %v", j.Results)
	}
	for _, bad := range []string{"a b\n", "../x\n", "x@y@z\n"} {
		os.WriteFile(path, []byte(bad), 0o600)
		if _, err := LoadUsers(path); err == nil {
			t.Errorf("LoadUsers accepted %q", bad)
		}
	}
}

// TestNewMailboxBound: one package of many recipients creates at most
// MaxNewPerHour mailboxes; the rest wait (temporarily, under a destination
// of their own), while existing mailboxes still get their mail.
func TestNewMailboxBound(t *testing.T) {
	for _, kind := range []string{"maildir", "mbox"} {
		dir := t.TempDir()
		var tr Transport = &Maildir{Mailboxes: Mailboxes{Dir: dir, MaxNewPerHour: 3}}
		if kind == "mbox" {
			tr = &Mbox{Mailboxes: Mailboxes{Dir: dir, MaxNewPerHour: 3}}
		}
		var rcpts []string
		for i := range 10 {
			rcpts = append(rcpts, fmt.Sprintf("u%d@example.com", i))
		}
		j := testJob("s@x.example", "x\n", rcpts...)
		tr.Deliver(context.Background(), []*Job{j})
		ok := 0
		for _, r := range j.Results {
			switch {
			case r.Status.IsAccept():
				ok++
			case !r.Status.IsTemporary() || r.Destination == "":
				t.Errorf("%s: %v (destination %q), want a temporary failure with its own destination", kind, r.Status, r.Destination)
			}
		}
		if ok != 3 {
			t.Errorf("%s: %d mailboxes created, want 3", kind, ok)
		}
		ents, _ := os.ReadDir(filepath.Join(dir, "example.com"))
		if len(ents) != 3 {
			t.Errorf("%s: %d entries on disk, want 3", kind, len(ents))
		}
		// Mailboxes that exist take mail beyond the bound.
		j = testJob("s@x.example", "x\n", rcpts[:3]...)
		tr.Deliver(context.Background(), []*Job{j})
		for _, r := range j.Results {
			if !r.Status.IsAccept() {
				t.Errorf("%s: existing mailbox: %v", kind, r.Status)
			}
		}
	}
}
