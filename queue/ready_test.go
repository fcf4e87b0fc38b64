package queue

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestReady(t *testing.T) {
	free := int64(1 << 30)
	old := statfsFree
	statfsFree = func(string) (int64, error) { return free, nil }
	defer func() { statfsFree = old }()

	dir := t.TempDir()
	q, err := Open(dir, Options{MinFreeBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Ready(); err != nil {
		t.Fatalf("fresh queue: %v", err)
	}
	free = 1 << 19
	q.space.at.Store(0)
	if err := q.Ready(); !errors.Is(err, ErrLowSpace) {
		t.Fatalf("below the reserve: %v", err)
	}
	free = 1 << 30
	q.space.at.Store(0)
	if os.Geteuid() != 0 { // root writes through permissions
		os.Chmod(filepath.Join(dir, "journal"), 0o500)
		if err := q.Ready(); err == nil {
			t.Error("read-only journal directory: ready")
		}
		os.Chmod(filepath.Join(dir, "journal"), 0o700)
	}
	if err := q.Ready(); err != nil {
		t.Fatalf("again: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "journal"))
	for _, e := range ents {
		if filepath.Ext(e.Name()) == "" && e.Name()[0] == '.' {
			t.Errorf("probe file left behind: %s", e.Name())
		}
	}
	q.Close()
	if err := q.Ready(); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
}
