// Package safedir makes the directories a daemon started as root hands to
// its mail user, without following symbolic links: a local user who can
// write a parent directory must not be able to point the queue (or a
// Maildir root) at /etc and have root give it away. Directories are created
// and then opened with O_NOFOLLOW|O_DIRECTORY and changed through that
// descriptor (fchown, fchmod), and a path whose parents anyone but root and
// the mail user may rename things in is refused before anything is made.
//
// WriteFile replaces small state files (tokens, cached policies) atomically
// and durably. It knows nothing of mail or configuration.
package safedir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// CheckParents refuses path when one of the directories above it (after
// resolving links, which only root or the mail user may have set there)
// is owned by anyone but root and uid, or is writable by group or others
// without the sticky bit: whoever can rename entries there can swap the
// directory for a link between our checks and our use.
func CheckParents(path string, uid int) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Dir(abs), err)
	}
	for dir := parent; ; dir = filepath.Dir(dir) {
		var st unix.Stat_t
		if err := unix.Lstat(dir, &st); err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		owner := int(st.Uid)
		if owner != 0 && owner != uid {
			return fmt.Errorf("%s is owned by uid %d, neither root nor the mail user: it could swap %s for a link", dir, owner, path)
		}
		if st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
			return fmt.Errorf("%s is writable by other users (mode %04o, not sticky): they could swap %s for a link", dir, st.Mode&0o7777, path)
		}
		if dir == "/" || dir == filepath.Dir(dir) {
			return nil
		}
	}
}

// Made reports what MakeOwned did.
type Made struct {
	Created bool // the directory did not exist
}

// MakeOwned creates path as a directory of mode perm if it does not exist
// (its parents with 0755), checks its parents with CheckParents, and gives
// it to uid:gid through a descriptor opened without following links. With
// onlyNew, an existing directory is left as the administrator made it (a
// Maildir root such as /var/mail). A link in path's last component is
// refused, never followed.
func MakeOwned(path string, perm os.FileMode, uid, gid int, onlyNew bool) (Made, error) {
	var m Made
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return m, err
	}
	if err := CheckParents(path, uid); err != nil {
		return m, err
	}
	err := unix.Mkdir(path, uint32(perm.Perm()))
	switch {
	case err == nil:
		m.Created = true
	case errors.Is(err, unix.EEXIST):
	default:
		return m, &os.PathError{Op: "mkdir", Path: path, Err: err}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return m, fmt.Errorf("%s is a link or not a directory: refusing to give it away", path)
		}
		return m, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if onlyNew && !m.Created {
		return m, nil
	}
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return m, &os.PathError{Op: "chown", Path: path, Err: err}
	}
	if m.Created {
		// The umask may have taken bits the caller asked for.
		if err := unix.Fchmod(fd, uint32(perm.Perm())); err != nil {
			return m, &os.PathError{Op: "chmod", Path: path, Err: err}
		}
	}
	return m, nil
}

// WriteFile replaces the file at path with data, mode 0600, so that a
// reader sees the old content or the new and a crash leaves one of them: a
// temporary file in the same directory (rename is atomic only within a
// file system) is written, fsynced and renamed over path, and the directory
// is fsynced so that the rename itself is durable.
func WriteFile(path string, data []byte) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
