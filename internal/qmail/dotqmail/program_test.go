package dotqmail

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// programRunner returns a Runner and a user directory it can enter: as
// root, the programs run as nobody (never as root), in a directory nobody
// can reach.
func programRunner(t *testing.T) (*Runner, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "dotqmail-program")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &Runner{}
	if os.Geteuid() == 0 {
		r.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
	}
	return r, dir
}

func programPlan(t *testing.T, dir, rcpt, file, command string) (*Plan, Delivery) {
	t.Helper()
	if err := os.WriteFile(dir+"/"+file, []byte("|"+command+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Lookup(dir, rcpt, "s@example.org", Options{AllowPrograms: true})
	if err != nil {
		t.Fatal(err)
	}
	return p, p.Deliveries[0]
}

func TestRunnerEnvironment(t *testing.T) {
	r, dir := programRunner(t)
	t.Setenv("QMGATE_SECRET_OF_THE_DAEMON", "leaked")
	p, d := programPlan(t, dir, "Joe-List-Foo-Bar@mail.example.com", ".qmail-list-default",
		`echo "$SENDER|$NEWSENDER|$RECIPIENT|$USER|$LOCAL|$EXT|$EXT2|$EXT3|$EXT4|$DEFAULT|$HOST|$HOST2|$HOST3|$HOST4|${QMGATE_SECRET_OF_THE_DAEMON-unset}|$(pwd)"; printf %s "$DTLINE$RPLINE"; exit 100`)
	err := r.Run(context.Background(), p, d, strings.NewReader("hello\n"))
	st := mail.StatusOf(err)
	if !st.IsPermanent() {
		t.Fatalf("exit 100: %v", err)
	}
	want := "s@example.org|s@example.org|Joe-List-Foo-Bar@mail.example.com|joe|Joe-List-Foo-Bar|List-Foo-Bar|Foo-Bar|Bar||Foo-Bar|mail.example.com|mail.example|mail|mail|unset|" + dir +
		"/Delivered-To: Joe-List-Foo-Bar@mail.example.com/Return-Path: <s@example.org>"
	if st.Text != want {
		t.Errorf("environment\n got %s\nwant %s", st.Text, want)
	}
}

func TestRunnerExitCodes(t *testing.T) {
	r, dir := programRunner(t)
	for _, tc := range []struct {
		command string
		check   func(error) bool
	}{
		{"grep -q '^hello' || exit 111", func(err error) bool { return err == nil }},
		{"exit 99", func(err error) bool { return errors.Is(err, ErrStop) }},
		{"exit 111", func(err error) bool { return mail.StatusOf(err).IsTemporary() && err != nil }},
		{"exit 1", func(err error) bool { return mail.StatusOf(err).IsTemporary() && err != nil }},
		{"echo no such list; exit 77", func(err error) bool {
			st := mail.StatusOf(err)
			return st.IsPermanent() && st.Text == "no such list"
		}},
		{"exit 112", func(err error) bool { return mail.StatusOf(err).IsPermanent() }},
		{"kill -9 $$", func(err error) bool {
			st := mail.StatusOf(err)
			return st.IsTemporary() && strings.Contains(st.Text, "crashed")
		}},
	} {
		p, d := programPlan(t, dir, "joe-x@example.com", ".qmail-x", tc.command)
		err := r.Run(context.Background(), p, d, strings.NewReader("hello\n"))
		if !tc.check(err) {
			t.Errorf("%q: %v", tc.command, err)
		}
	}
}

func TestRunnerLimits(t *testing.T) {
	r, dir := programRunner(t)
	r.Timeout = 50 * time.Millisecond
	r.MaxOutput = 10
	p, d := programPlan(t, dir, "joe-x@example.com", ".qmail-x", "sleep 30 & sleep 30")
	err := r.Run(context.Background(), p, d, strings.NewReader(""))
	if st := mail.StatusOf(err); !st.IsTemporary() || !strings.Contains(st.Text, "too long") {
		t.Errorf("time limit: %v", err)
	}
	r.Timeout = 0
	p, d = programPlan(t, dir, "joe-x@example.com", ".qmail-x", "echo 0123456789abcdef; exit 100")
	err = r.Run(context.Background(), p, d, strings.NewReader(""))
	if st := mail.StatusOf(err); st.Text != "0123456789" {
		t.Errorf("output bound: %q", st.Text)
	}
	root := &Runner{Credential: &syscall.Credential{Uid: 0, Gid: 0}}
	if err := root.Run(context.Background(), p, d, strings.NewReader("")); !strings.Contains(mail.StatusOf(err).Text, "root") {
		t.Errorf("as root: %v", err)
	}
	if err := root.Run(context.Background(), p, Delivery{Kind: Maildir}, strings.NewReader("")); err == nil {
		t.Error("a maildir delivery given to the runner")
	}
}
