package queue

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

func TestAdminWhileDaemonRuns(t *testing.T) {
	testpeer.CheckGoroutines(t, 10*time.Second)
	// A long directory name exercises the /proc/self/fd route around
	// sun_path's 108 bytes.
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 90))
	clk := newFakeClock()
	opt := testOptions(clk)
	opt.Passive = false
	q := openT(t, dir, opt)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- q.ServeControl(ctx) }()
	a := putT(t, q, "alice@example.org", bodyOf(500, 1), "bob@example.com")
	b := putT(t, q, "alice@example.org", bodyOf(500, 2), "carol@example.net")

	var adm Admin
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		adm, err = OpenAdmin(dir, testOptions(clk))
		if err != nil {
			t.Fatal(err)
		}
		if _, err = adm.List(ctx); err == nil || time.Now().After(deadline) {
			break
		}
		adm.Close()
		time.Sleep(10 * time.Millisecond) // the socket is not listening yet
	}
	defer adm.Close()
	if _, ok := adm.(*controlClient); !ok {
		t.Fatalf("OpenAdmin returned %T while the daemon holds the queue", adm)
	}
	rows, err := adm.List(ctx)
	if err != nil || len(rows) != 2 || rows[0].ID != a {
		t.Fatalf("List: %v %+v", err, rows)
	}
	if err := adm.Hold(ctx, a); err != nil {
		t.Fatal(err)
	}
	if ds := claimAll(q); len(ds) != 1 || ds[0].ID != b {
		t.Fatalf("daemon claimed %+v after remote hold", ds)
	}
	det, err := adm.Show(ctx, a)
	if err != nil || det.State != RowHeld || !strings.Contains(det.Header, "Subject: message 1") {
		t.Fatalf("Show: %v %+v", err, det)
	}
	st, err := adm.Stat(ctx)
	if err != nil || st.Messages != 2 || st.Held != 1 {
		t.Fatalf("Stat: %v %+v", err, st)
	}
	err = adm.Remove(ctx, b, "01zzzzzzzzzzz")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "01zzzzzzzzzzz") || strings.Contains(err.Error(), b) {
		t.Fatalf("Remove with an unknown ID: %v", err)
	}
	if _, err := adm.Show(ctx, "01zzzzzzzzzzz"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Show unknown: %v", err)
	}
	if err := adm.Release(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := adm.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if ds := claimAll(q); len(ds) != 1 || ds[0].ID != a {
		t.Fatalf("after remote release claimed %+v", ds)
	}
	if st, err := os.Stat(filepath.Join(dir, "control")); err != nil || st.Mode().Perm() != 0o666 {
		t.Fatalf("control socket mode: %v %v", st.Mode(), err)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("ServeControl: %v", err)
	}
	q.Close()

	// No daemon: OpenAdmin opens the queue itself, and sees what the
	// remote calls did.
	adm2, err := OpenAdmin(dir, testOptions(clk))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := adm2.(*Queue); !ok {
		t.Fatalf("OpenAdmin returned %T with no daemon", adm2)
	}
	rows, _ = adm2.List(context.Background())
	if len(rows) != 1 || rows[0].ID != a {
		t.Fatalf("direct List %+v", rows)
	}
	adm2.Close()
	if _, err := OpenAdmin(filepath.Join(dir, "missing"), testOptions(clk)); err == nil {
		t.Fatal("OpenAdmin created a queue in a missing directory")
	}
}

// TestOpenAdminOtherOwner: root must not create files in another user's
// queue; it is told whom to run as (or uses the daemon's socket).
func TestOpenAdminOtherOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	dir := t.TempDir()
	q := openT(t, dir, testOptions(newFakeClock()))
	putT(t, q, "s@x", []byte("x\n"), "r@y")
	q.Close()
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Skip(err)
	}
	_, err := OpenAdmin(dir, testOptions(newFakeClock()))
	if err == nil || !strings.Contains(err.Error(), "uid 65534") {
		t.Fatalf("OpenAdmin of another user's idle queue: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "journal"))
	if len(ents) != 1 {
		t.Fatalf("OpenAdmin wrote into another user's queue: %v", ents)
	}
}

// otherUser is the uid and gid the helper process of
// TestControlOtherUser runs as.
const otherUser = 65534

// TestControlOtherUser: a user who is neither root nor the queue's owner
// reads the queue through the daemon (list, stat, show), as mailq does,
// and is refused every change. The reader is a child process with another
// uid, so the kernel reports its real credentials to the daemon.
func TestControlOtherUser(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skipf("tested on Linux; %s is compile-checked", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a process as another user (CI runs this test as root)")
	}
	testpeer.CheckGoroutines(t, 10*time.Second)
	// The other user must be able to reach the queue and run the test
	// binary: the temporary directory's parent is made searchable, and
	// the binary copied where it can be executed.
	top := t.TempDir()
	if err := os.Chmod(filepath.Dir(top), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(top, 0o711); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(top, "queue.test")
	copyExecutable(t, os.Args[0], bin)
	dir := filepath.Join(top, "queue")

	clk := newFakeClock()
	opt := testOptions(clk)
	opt.Passive = false
	q := openT(t, dir, opt)
	defer q.Close()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- q.ServeControl(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("ServeControl: %v", err)
		}
	}()
	a := putT(t, q, "alice@example.org", bodyOf(500, 1), "bob@example.com")
	putT(t, q, "alice@example.org", bodyOf(500, 2), "carol@example.net")
	waitControl(t, dir)

	cmd := exec.Command(bin, "-test.run=^TestControlOtherUserHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "QMGATE_CONTROL_HELPER="+dir, "QMGATE_CONTROL_HELPER_ID="+a)
	cmd.Dir = top
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: otherUser, Gid: otherUser}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestControlOtherUserHelper") {
		t.Fatalf("helper as uid %d: %v\n%s", otherUser, err, out)
	}
	// The refused change changed nothing.
	det, err := q.Show(context.Background(), a)
	if err != nil || det.State == RowHeld {
		t.Fatalf("after a refused hold: %v %+v", err, det)
	}
}

// TestControlOtherUserHelper is the other user's side of
// TestControlOtherUser; it only runs in the helper process.
func TestControlOtherUserHelper(t *testing.T) {
	dir := os.Getenv("QMGATE_CONTROL_HELPER")
	if dir == "" {
		t.Skip("helper of TestControlOtherUser")
	}
	id := os.Getenv("QMGATE_CONTROL_HELPER_ID")
	if os.Geteuid() != otherUser {
		t.Fatalf("helper runs as uid %d", os.Geteuid())
	}
	ctx := context.Background()
	adm, err := OpenAdmin(dir, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if _, ok := adm.(*controlClient); !ok {
		t.Fatalf("OpenAdmin returned %T for another user's queue", adm)
	}
	rows, err := adm.List(ctx)
	if err != nil || len(rows) != 2 {
		t.Fatalf("List: %v %+v", err, rows)
	}
	if st, err := adm.Stat(ctx); err != nil || st.Messages != 2 {
		t.Fatalf("Stat: %v %+v", err, st)
	}
	if det, err := adm.Show(ctx, id); err != nil || det.ID != id {
		t.Fatalf("Show: %v %+v", err, det)
	}
	changes := map[string]func(context.Context, ...string) error{
		"hold": adm.Hold, "release": adm.Release, "remove": adm.Remove, "flush": adm.Flush,
	}
	for op, f := range changes {
		err := f(ctx, id)
		if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "owner") {
			t.Errorf("%s by another user: %v, want a refusal naming the owner", op, err)
		}
	}
	for _, op := range []string{"drain", "handoff"} {
		if _, err := Drain(ctx, dir, op, DrainRequest{}); !errors.Is(err, os.ErrPermission) {
			t.Errorf("%s by another user: %v, want a refusal", op, err)
		}
	}
}

// waitControl waits until dir's control socket accepts connections.
func waitControl(t *testing.T, dir string) {
	t.Helper()
	var err error
	if !testpeer.Poll(30*time.Second, 10*time.Millisecond, func() bool { err = probeControl(dir); return err == nil }) {
		t.Fatalf("control socket not listening: %v", err)
	}
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestControlReadOnlyOps: only list, stat and show are open to every user.
func TestControlReadOnlyOps(t *testing.T) {
	for _, op := range []string{"list", "stat", "show"} {
		if !readOnly(op) {
			t.Errorf("%s is not read-only", op)
		}
	}
	for _, op := range []string{"hold", "release", "remove", "flush", "drain", "handoff", "", "LIST", "unknown"} {
		if readOnly(op) {
			t.Errorf("%q is read-only", op)
		}
	}
}
