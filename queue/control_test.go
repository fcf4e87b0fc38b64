package queue

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
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
	if st, err := os.Stat(filepath.Join(dir, "control")); err != nil || st.Mode().Perm() != 0o600 {
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
