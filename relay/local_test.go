package relay

import (
	"context"
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
		dom, user, err := mailboxName(tc.rcpt)
		if (err == nil) != tc.ok || dom != tc.dom || user != tc.user {
			t.Errorf("mailboxName(%q) = %q, %q, %v; want %q, %q, ok=%v", tc.rcpt, dom, user, err, tc.dom, tc.user, tc.ok)
		}
	}
}

func TestMaildirDelivery(t *testing.T) {
	dir := t.TempDir()
	md := &Maildir{Dir: dir, Hostname: "hub.example"}
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
	md := &Maildir{Dir: dir}
	j := testJob("", "x\n", "joe@example.com")
	md.Deliver(context.Background(), []*Job{j})
	if !j.Results[0].Status.IsTemporary() {
		t.Fatalf("want temporary, got %v", j.Results[0])
	}
}

func TestMboxDelivery(t *testing.T) {
	dir := t.TempDir()
	mb := &Mbox{Dir: dir}
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
	discard{}.Deliver(context.Background(), []*Job{j})
	for _, r := range j.Results {
		if !r.Status.IsAccept() {
			t.Fatal(r)
		}
	}
}
