package qmail

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/qmgate/qmgate/mail"
)

// script writes an executable shell script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qq")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestQueuePutRecords(t *testing.T) {
	dir := t.TempDir()
	q := &Queue{Path: script(t, "cat > \"$OUT/msg\" && cat <&1 > \"$OUT/env\"\n"), Env: []string{"OUT=" + dir}}
	body := "Subject: hi\n\nno final newline"
	env := mail.Envelope{Sender: "a@x", Recipients: []string{"b@y", "c@z"}}
	res := q.Put(context.Background(), env, strings.NewReader(body))
	if !res.Status.IsAccept() {
		t.Fatalf("status %v", res.Status)
	}
	if want := " qp " + strconv.Itoa(res.PID); !strings.HasPrefix(res.Status.Text, "ok ") || !strings.HasSuffix(res.Status.Text, want) {
		t.Fatalf("text %q", res.Status.Text)
	}
	msg, _ := os.ReadFile(filepath.Join(dir, "msg"))
	envb, _ := os.ReadFile(filepath.Join(dir, "env"))
	if string(msg) != body {
		t.Errorf("fd 0: %q", msg)
	}
	if string(envb) != "Fa@x\x00Tb@y\x00Tc@z\x00\x00" {
		t.Errorf("fd 1: %q", envb)
	}
}

func TestQueuePutExitCodes(t *testing.T) {
	cases := []struct {
		code  int
		reply string
	}{
		{11, "Denvelope address too long for qq (#5.1.3)"},
		{31, "Dmail server permanently rejected message (#5.3.0)"},
		{51, "Zqq out of memory (#4.3.0)"},
		{52, "Zqq timeout (#4.3.0)"},
		{53, "Zqq write error or disk full (#4.3.0)"},
		{54, "Zqq read error (#4.3.0)"},
		{55, "Zqq unable to read configuration (#4.3.0)"},
		{56, "Zqq trouble making network connection (#4.3.0)"},
		{61, "Zqq trouble in home directory (#4.3.0)"},
		{64, "Zqq trouble creating files in queue (#4.3.0)"},
		{71, "Zmail server temporarily rejected message (#4.3.0)"},
		{72, "Zconnection to mail server timed out (#4.4.1)"},
		{73, "Zconnection to mail server rejected (#4.4.1)"},
		{74, "Zcommunication with mail server failed (#4.4.2)"},
		{81, "Zqq internal bug (#4.3.0)"},
		{91, "Zqq internal bug (#4.3.0)"},
		{82, "Zqq temporary problem (#4.3.0)"}, // no text on fd 6
		{25, "Dqq permanent problem (#5.3.0)"},
		{100, "Zqq temporary problem (#4.3.0)"},
	}
	for _, tc := range cases {
		q := &Queue{Path: script(t, "cat >/dev/null; exit "+strconv.Itoa(tc.code)+"\n")}
		res := q.Put(context.Background(), mail.Envelope{Sender: "a@x", Recipients: []string{"b@y"}}, strings.NewReader("x\n"))
		if got := string(res.Status.Reply()); got != tc.reply {
			t.Errorf("exit %d: %q, want %q", tc.code, got, tc.reply)
		}
		if res.Exit != tc.code {
			t.Errorf("exit %d: Result.Exit %d", tc.code, res.Exit)
		}
	}
}

func TestQueuePutCustomReply(t *testing.T) {
	q := &Queue{Path: script(t, "cat >/dev/null; printf 'Dthis message looks like spam (#5.7.1)' >&6; exit 82\n")}
	res := q.Put(context.Background(), mail.Envelope{Recipients: []string{"b@y"}}, strings.NewReader("x\n"))
	if got := string(res.Status.Reply()); got != "Dthis message looks like spam (#5.7.1)" {
		t.Fatalf("got %q", got)
	}
	// Two bytes or fewer are not a reply, as in notqmail.
	q = &Queue{Path: script(t, "cat >/dev/null; printf 'Dx' >&6; exit 82\n")}
	res = q.Put(context.Background(), mail.Envelope{Recipients: []string{"b@y"}}, strings.NewReader("x\n"))
	if got := string(res.Status.Reply()); got != "Zqq temporary problem (#4.3.0)" {
		t.Fatalf("short custom reply: %q", got)
	}
}

func TestQueuePutNoProgram(t *testing.T) {
	q := &Queue{Path: filepath.Join(t.TempDir(), "missing")}
	res := q.Put(context.Background(), mail.Envelope{Recipients: []string{"b@y"}}, strings.NewReader("x\n"))
	if got := string(res.Status.Reply()); got != "Zunable to exec qq (#4.3.0)" {
		t.Fatalf("got %q", got)
	}
}

func TestQueuePutCrash(t *testing.T) {
	q := &Queue{Path: script(t, "kill -9 $$\n")}
	res := q.Put(context.Background(), mail.Envelope{Recipients: []string{"b@y"}}, strings.NewReader("x\n"))
	if got := string(res.Status.Reply()); got != "Zqq crashed (#4.3.0)" {
		t.Fatalf("got %q", got)
	}
}

// A body that fails must leave the program without an envelope: a real
// qmail-queue then exits 54 and commits nothing. The status is the body's.
func TestQueuePutBodyError(t *testing.T) {
	dir := t.TempDir()
	q := &Queue{Path: script(t, "cat > \"$OUT/msg\"; cat <&1 > \"$OUT/env\"; exit 54\n"), Env: []string{"OUT=" + dir}}
	body := io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(mail.StatusTooBig))
	res := q.Put(context.Background(), mail.Envelope{Recipients: []string{"b@y"}}, body)
	if res.Status != mail.StatusTooBig {
		t.Fatalf("status %+v", res.Status)
	}
	if env, _ := os.ReadFile(filepath.Join(dir, "env")); len(env) != 0 {
		t.Fatalf("envelope written after a body error: %q", env)
	}
	res = q.Put(context.Background(), mail.Envelope{Recipients: []string{"b@y"}}, iotest.ErrReader(errors.New("disk on fire")))
	if !res.Status.IsTemporary() || strings.Contains(res.Status.Text, "fire") {
		t.Fatalf("unknown body error: %+v", res.Status)
	}
}

// A program that exits 0 without reading the envelope has not queued
// anything we know of: qmail_close reports it as a read error.
func TestQueuePutZeroWithoutReading(t *testing.T) {
	q := &Queue{Path: script(t, "exit 0\n")}
	big := strings.NewReader(strings.Repeat("x", 1<<20))
	res := q.Put(context.Background(), mail.Envelope{Recipients: []string{"b@y"}}, big)
	if got := string(res.Status.Reply()); got != "Zqq read error (#4.3.0)" {
		t.Fatalf("got %q", got)
	}
}

func TestQueuePutNUL(t *testing.T) {
	q := &Queue{Path: script(t, "exit 0\n")}
	res := q.Put(context.Background(), mail.Envelope{Recipients: []string{"b\x00@y"}}, strings.NewReader("x"))
	if !res.Status.IsPermanent() {
		t.Fatalf("got %+v", res.Status)
	}
}

func TestExitForStatus(t *testing.T) {
	if ExitForStatus(mail.OK("")) != 0 || ExitForStatus(mail.StatusTooBig) != 31 || ExitForStatus(mail.StatusTempFailure) != 71 {
		t.Fatal("mapping")
	}
	for code := 0; code < 130; code++ {
		st := StatusForExit(code, nil)
		if PermanentExit(code) != st.IsPermanent() && code != 115 { // 115: qmail.c maps it like 11
			t.Errorf("exit %d: %v", code, st)
		}
	}
}
