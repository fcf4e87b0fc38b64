package safedir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The tests give directories to this process's own user, which needs no
// privilege; as root (CI) they also give them to another uid.

func TestMakeOwnedCreates(t *testing.T) {
	dir := t.TempDir()
	q := filepath.Join(dir, "spool", "queue")
	m, err := MakeOwned(q, 0o700, os.Getuid(), os.Getgid(), false)
	if err != nil || !m.Created {
		t.Fatalf("MakeOwned: %+v, %v", m, err)
	}
	fi, err := os.Stat(q)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("made %v, %v", fi.Mode(), err)
	}
	if m, err := MakeOwned(q, 0o700, os.Getuid(), os.Getgid(), false); err != nil || m.Created {
		t.Fatalf("second MakeOwned: %+v, %v", m, err)
	}
}

// TestMakeOwnedRefusesLink: a link where the queue should be is refused and
// its target keeps its owner and mode.
func TestMakeOwnedRefusesLink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "etc")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, "queue")
	if err := os.Symlink(target, q); err != nil {
		t.Fatal(err)
	}
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = 65534, 65534
	}
	_, err := MakeOwned(q, 0o700, uid, gid, false)
	if err == nil || !strings.Contains(err.Error(), "link") {
		t.Fatalf("MakeOwned through a link: %v", err)
	}
	fi, _ := os.Stat(target)
	if fi.Mode().Perm() != 0o755 || owner(t, target) != os.Getuid() {
		t.Fatalf("the link's target was changed: %v, uid %d", fi.Mode(), owner(t, target))
	}
}

// TestCheckParentsRefusesWritable: a parent that others may write (and that
// is not sticky) is refused, a sticky one (like /tmp) is not.
func TestCheckParentsRefusesWritable(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := CheckParents(filepath.Join(open, "queue"), os.Getuid()); err == nil || !strings.Contains(err.Error(), "writable by other users") {
		t.Fatalf("world-writable parent: %v", err)
	}
	if _, err := MakeOwned(filepath.Join(open, "queue"), 0o700, os.Getuid(), os.Getgid(), false); err == nil {
		t.Fatal("MakeOwned under a world-writable parent")
	}
	if err := os.Chmod(open, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	if err := CheckParents(filepath.Join(open, "queue"), os.Getuid()); err != nil {
		t.Fatalf("sticky parent: %v", err)
	}
}

func TestCheckParentsRefusesForeignOwner(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to make a directory another user owns") // CI runs as root
	}
	dir := t.TempDir()
	theirs := filepath.Join(dir, "theirs")
	if err := os.Mkdir(theirs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(theirs, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	if err := CheckParents(filepath.Join(theirs, "queue"), 65534); err == nil || !strings.Contains(err.Error(), "owned by uid 12345") {
		t.Fatalf("parent owned by a third user: %v", err)
	}
	if err := CheckParents(filepath.Join(theirs, "queue"), 12345); err != nil {
		t.Fatalf("parent owned by the mail user: %v", err)
	}
}

// TestMakeOwnedOnlyNew: an existing directory keeps its owner when onlyNew.
func TestMakeOwnedOnlyNew(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give a directory away") // CI runs as root
	}
	dir := t.TempDir()
	old := filepath.Join(dir, "mail")
	if err := os.Mkdir(old, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := MakeOwned(old, 0o700, 65534, 65534, true); err != nil {
		t.Fatal(err)
	}
	if owner(t, old) != 0 {
		t.Fatal("an existing directory was given away with onlyNew")
	}
	fresh := filepath.Join(dir, "new")
	if _, err := MakeOwned(fresh, 0o700, 65534, 65534, true); err != nil {
		t.Fatal(err)
	}
	if owner(t, fresh) != 65534 {
		t.Fatal("a new directory was not given to the mail user")
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "new" {
		t.Fatalf("%q, %v", b, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left %v", ents)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "f"), nil); err == nil {
		t.Error("wrote into a missing directory")
	}
}
