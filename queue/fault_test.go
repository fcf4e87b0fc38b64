package queue

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qmgate/qmgate/mail"
)

// faultFS wraps the real file system and fails chosen operations.
type faultFS struct {
	inner fileSystem
	mu    sync.Mutex
	fail  func(op, path string) error
}

func (f *faultFS) check(op, path string) error {
	f.mu.Lock()
	fn := f.fail
	f.mu.Unlock()
	if fn == nil {
		return nil
	}
	if err := fn(op, path); err != nil {
		return &os.PathError{Op: op, Path: path, Err: err}
	}
	return nil
}

func (f *faultFS) set(fn func(op, path string) error) {
	f.mu.Lock()
	f.fail = fn
	f.mu.Unlock()
}

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	op := "open"
	if flag&os.O_CREATE != 0 {
		op = "create"
	}
	if err := f.check(op, name); err != nil {
		return nil, err
	}
	fl, err := f.inner.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{file: fl, fs: f}, nil
}

func (f *faultFS) Remove(name string) error {
	if err := f.check("remove", name); err != nil {
		return err
	}
	return f.inner.Remove(name)
}

func (f *faultFS) Mkdir(name string, perm os.FileMode) error {
	if err := f.check("mkdir", name); err != nil {
		return err
	}
	return f.inner.Mkdir(name, perm)
}

func (f *faultFS) ReadDir(name string) ([]os.DirEntry, error) {
	if err := f.check("readdir", name); err != nil {
		return nil, err
	}
	return f.inner.ReadDir(name)
}

func (f *faultFS) Stat(name string) (os.FileInfo, error) {
	if err := f.check("stat", name); err != nil {
		return nil, err
	}
	return f.inner.Stat(name)
}

func (f *faultFS) SyncDir(dir string) error {
	if err := f.check("syncdir", dir); err != nil {
		return err
	}
	return f.inner.SyncDir(dir)
}

type faultFile struct {
	file
	fs *faultFS
}

func (f *faultFile) Write(p []byte) (int, error) {
	if err := f.fs.check("write", f.Name()); err != nil {
		return 0, err
	}
	return f.file.Write(p)
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fs.check("write", f.Name()); err != nil {
		// A full disk often takes part of the write first.
		n, _ := f.file.WriteAt(p[:len(p)/2], off)
		return n, err
	}
	return f.file.WriteAt(p, off)
}

func (f *faultFile) Sync() error {
	if err := f.fs.check("sync", f.Name()); err != nil {
		return err
	}
	return f.file.Sync()
}

func (f *faultFile) Datasync() error {
	if err := f.fs.check("datasync", f.Name()); err != nil {
		return err
	}
	return f.file.Datasync()
}

func (f *faultFile) Truncate(n int64) error {
	if err := f.fs.check("truncate", f.Name()); err != nil {
		return err
	}
	return f.file.Truncate(n)
}

func (f *faultFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.fs.check("read", f.Name()); err != nil {
		return 0, err
	}
	return f.file.ReadAt(p, off)
}

// failOn returns a rule that fails op on paths containing sub with errno.
func failOn(op, sub string, errno error) func(string, string) error {
	return func(o, p string) error {
		if o == op && strings.Contains(p, sub) {
			return errno
		}
		return nil
	}
}

func TestFaultsLeaveNothingHalfVisible(t *testing.T) {
	cases := []struct {
		name  string
		big   bool // body larger than InlineMax
		fresh bool // the fault hits the first write of a new segment
		rule  func(string, string) error
		// placed: an inline body large enough for its Writer to place
		// the record into the journal itself.
		placed bool
	}{
		{"journal write ENOSPC", false, false, failOn("write", ".seg", unix.ENOSPC), false},
		{"journal fdatasync EIO", false, false, failOn("datasync", ".seg", unix.EIO), false},
		{"journal fdatasync EIO, truncate fails too", false, false, func(o, p string) error {
			if (o == "datasync" || o == "truncate") && strings.Contains(p, ".seg") {
				return unix.EIO
			}
			return nil
		}, false},
		{"new segment: journal directory missing", false, true, failOn("create", ".seg", unix.ENOENT), false},
		{"new segment: directory fsync EIO", false, true, failOn("syncdir", "journal", unix.EIO), false},
		{"body write ENOSPC", true, false, failOn("write", "body", unix.ENOSPC), false},
		{"body fsync EIO", true, false, failOn("sync", "body", unix.EIO), false},
		{"body directory missing", true, false, failOn("create", "body", unix.ENOENT), false},
		{"body directory fsync EIO", true, false, failOn("syncdir", "body", unix.EIO), false},
		{"journal write EIO with big body", true, false, failOn("write", ".seg", unix.EIO), false},
		{name: "placed record: journal write ENOSPC", placed: true, rule: failOn("write", ".seg", unix.ENOSPC)},
		{name: "placed record: journal fdatasync EIO", placed: true, rule: failOn("datasync", ".seg", unix.EIO)},
		{name: "placed record: fdatasync EIO, truncate fails too", placed: true, rule: func(o, p string) error {
			if (o == "datasync" || o == "truncate") && strings.Contains(p, ".seg") {
				return unix.EIO
			}
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ffs := &faultFS{inner: osFS{}}
			opt := testOptions(newFakeClock())
			opt.fs = ffs
			opt.InlineMax = 1024
			size := 500
			if tc.big {
				size = 5000
			}
			if tc.placed {
				size = 800 // at least half of InlineMax: placed
			}
			q := openT(t, dir, opt)
			ctx := context.Background()
			good := map[string][]byte{}
			if !tc.fresh {
				for i := 0; i < 3; i++ {
					b := bodyOf(size, i)
					good[putT(t, q, "s@x", b, "r@y")] = b
				}
			}
			ffs.set(tc.rule)
			_, err := q.Put(ctx, mail.Envelope{Sender: "s@x", Recipients: []string{"r@y"}}, bytes.NewReader(bodyOf(size, 99)))
			if err == nil {
				t.Fatal("Put succeeded despite the fault")
			}
			if st := mail.StatusOf(err); !st.IsTemporary() {
				t.Fatalf("error %v is not temporary: %+v", err, st)
			}
			var qe *Error
			if !errors.As(err, &qe) {
				t.Fatalf("error %T %v is not a *queue.Error", err, err)
			}
			if rows, _ := q.List(ctx); len(rows) != len(good) {
				t.Fatalf("%d messages visible, want %d", len(rows), len(good))
			}
			// The fault clears: the queue works again without a restart.
			ffs.set(nil)
			for i := 10; i < 13; i++ {
				b := bodyOf(size, i)
				good[putT(t, q, "s@x", b, "r@y")] = b
			}
			q.Close()
			q = openT(t, dir, opt)
			defer q.Close()
			ds := claimAll(q)
			if len(ds) != len(good) {
				t.Fatalf("after reopen %d messages, want %d", len(ds), len(good))
			}
			for _, d := range ds {
				if b, ok := good[d.ID]; !ok || !bytes.Equal(readAll(t, d), b) {
					t.Fatalf("message %s unexpected or damaged", d.ID)
				}
			}
			ents, _ := os.ReadDir(filepath.Join(dir, "body"))
			want := 0
			if tc.big {
				want = len(good)
			}
			if len(ents) != want {
				t.Errorf("%d body files, want %d", len(ents), want)
			}
		})
	}
}

func TestFaultDuringRecordAndAdmin(t *testing.T) {
	dir := t.TempDir()
	ffs := &faultFS{inner: osFS{}}
	opt := testOptions(newFakeClock())
	opt.fs = ffs
	q := openT(t, dir, opt)
	ctx := context.Background()
	id := putT(t, q, "s@x", []byte("x\n"), "r@y")
	ds := claimAll(q)
	ffs.set(failOn("datasync", ".seg", unix.EIO))
	if err := q.Record(ctx, ds[0], results(ds[0], accepted, "mx")); err == nil || !mail.StatusOf(err).IsTemporary() {
		t.Fatalf("Record with a failing disk: %v", err)
	}
	// In memory the recipient is delivered: it is not handed out again.
	if got := claimAll(q); len(got) != 0 {
		t.Fatal("delivered recipient handed out again")
	}
	if err := q.Hold(ctx, id); err == nil {
		t.Log("hold of a gone message ok")
	}
	ffs.set(nil)
	q.Close()
	// The record was cut off the journal: after a restart the recipient is
	// pending again (the one repeat invariant 3 allows).
	q = openT(t, dir, opt)
	defer q.Close()
	if got := claimAll(q); len(got) != 1 || got[0].ID != id {
		t.Fatalf("after restart claimed %+v", got)
	}
}

func TestOpenFaults(t *testing.T) {
	dir := t.TempDir()
	q := openT(t, dir, testOptions(newFakeClock()))
	putT(t, q, "s@x", []byte("x\n"), "r@y")
	q.Close()
	ffs := &faultFS{inner: osFS{}}
	opt := testOptions(newFakeClock())
	opt.fs = ffs
	ffs.set(failOn("readdir", "journal", unix.EIO))
	if _, err := Open(dir, opt); err == nil || !mail.StatusOf(err).IsTemporary() {
		t.Fatalf("Open with unreadable journal: %v", err)
	}
	ffs.set(failOn("open", ".seg", unix.EIO))
	if _, err := Open(dir, opt); err == nil {
		t.Fatal("Open with an unreadable segment succeeded: it would lose mail")
	}
	ffs.set(nil)
	q = openT(t, dir, opt)
	defer q.Close()
	if n := q.Metrics().Messages; n != 1 {
		t.Fatalf("%d messages", n)
	}
}

// TestRealFullDisk fills a 1 MiB tmpfs (root only): Put fails with a
// temporary error, and works again, without a restart, once there is room.
func TestRealFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 300<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, "q")
	opt := testOptions(newFakeClock())
	opt.InlineMax = 16 << 10
	opt.MinFreeBytes = -1 // the real ENOSPC path, not the reserve
	q := openT(t, dir, opt)
	ctx := context.Background()
	good := map[string][]byte{}
	var fullErr error
	for i := 0; i < 1000; i++ {
		b := bodyOf(8000+i*3797%20000, i)
		id, err := q.Put(ctx, mail.Envelope{Sender: "s@x", Recipients: []string{"r@y"}}, bytes.NewReader(b))
		if err != nil {
			fullErr = err
			break
		}
		good[id] = b
	}
	if fullErr == nil {
		t.Fatal("1 MiB tmpfs never filled")
	}
	if !errors.Is(fullErr, unix.ENOSPC) || !mail.StatusOf(fullErr).IsTemporary() {
		t.Fatalf("full disk error: %v", fullErr)
	}
	t.Logf("disk full after %d messages: %v", len(good), fullErr)
	if rows, _ := q.List(ctx); len(rows) != len(good) {
		t.Fatalf("%d messages visible, want %d", len(rows), len(good))
	}
	os.Remove(filler)
	for i := 0; i < 3; i++ {
		b := bodyOf(20000, 2000+i)
		good[putT(t, q, "s@x", b, "r@y")] = b
	}
	q.Close()
	q = openT(t, dir, opt)
	defer q.Close()
	ds := claimAll(q)
	if len(ds) != len(good) {
		t.Fatalf("after reopen %d messages, want %d", len(ds), len(good))
	}
	for _, d := range ds {
		if !bytes.Equal(readAll(t, d), good[d.ID]) {
			t.Fatalf("%s damaged", d.ID)
		}
	}
}

// A large body is made durable by its own Writer before its record joins
// a group commit, so a failure on that path fails that message alone:
// small messages committed meanwhile, in the batches around it, stay
// queued, and the failed body leaves no file behind.
func TestFaultLargeBodyAloneFails(t *testing.T) {
	for _, rule := range []struct {
		name string
		fn   func(string, string) error
	}{
		{"file fsync EIO", failOn("sync", "/body/", unix.EIO)},
		{"its directory's fsync EIO", failOn("syncdir", "/body", unix.EIO)},
	} {
		t.Run(rule.name, func(t *testing.T) {
			dir := t.TempDir()
			ffs := &faultFS{inner: osFS{}}
			opt := testOptions(newFakeClock())
			opt.fs = ffs
			opt.InlineMax = 1024
			q := openT(t, dir, opt)
			ctx := context.Background()
			ffs.set(rule.fn)
			good := map[string][]byte{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 5 {
						b := bodyOf(500, 10*w+i)
						id, err := q.Put(ctx, mail.Envelope{Sender: "s@x", Recipients: []string{"r@y"}}, bytes.NewReader(b))
						if err != nil {
							t.Errorf("small message failed with the large one: %v", err)
							return
						}
						mu.Lock()
						good[id] = b
						mu.Unlock()
					}
				}()
			}
			for i := range 5 {
				_, err := q.Put(ctx, mail.Envelope{Sender: "s@x", Recipients: []string{"r@y"}}, bytes.NewReader(bodyOf(5000, 100+i)))
				if err == nil {
					t.Fatal("Put of a large body succeeded despite the fault")
				}
				if st := mail.StatusOf(err); !st.IsTemporary() {
					t.Fatalf("error %v is not temporary", err)
				}
			}
			wg.Wait()
			q.Close()
			ffs.set(nil)
			q = openT(t, dir, opt)
			defer q.Close()
			ds := claimAll(q)
			if len(ds) != len(good) {
				t.Fatalf("after reopen %d messages, want %d", len(ds), len(good))
			}
			for _, d := range ds {
				if b, ok := good[d.ID]; !ok || !bytes.Equal(readAll(t, d), b) {
					t.Fatalf("message %s unexpected or damaged", d.ID)
				}
			}
			if ents, _ := os.ReadDir(filepath.Join(dir, "body")); len(ents) != 0 {
				t.Errorf("%d body files left by failed commits, want 0", len(ents))
			}
		})
	}
}

// syncGroup: every caller gets the result of a round that started after
// it asked (so the round's fsync covers what the caller made), and
// callers that overlap share rounds.
func TestSyncGroupRounds(t *testing.T) {
	var g syncGroup
	var tickets, startedAt, runs atomic.Int64
	fail := errors.New("flush failed")
	var failing atomic.Bool
	fn := func() error {
		startedAt.Store(tickets.Load())
		runs.Add(1)
		if failing.Load() {
			return fail
		}
		return nil
	}
	var wg sync.WaitGroup
	const callers = 16
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				my := tickets.Add(1)
				if err := g.do(fn); err != nil {
					t.Errorf("do: %v", err)
					return
				}
				if got := startedAt.Load(); got < my {
					t.Errorf("round started at ticket %d, before caller %d asked", got, my)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := runs.Load(); n > callers*50 || n == 0 {
		t.Fatalf("%d rounds for %d calls", n, callers*50)
	}
	failing.Store(true)
	if err := g.do(fn); err != fail {
		t.Fatalf("error %v, want the round's", err)
	}
}
