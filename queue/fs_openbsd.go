package queue

import (
	"os"

	"golang.org/x/sys/unix"
)

// OpenBSD: golang.org/x/sys/unix has no fdatasync for OpenBSD, which allows
// system calls only through libc, so Datasync is fsync(2): it writes the
// timestamps as well, never less. There is no posix_fallocate: segments
// grow with their appends. A directory's fsync makes its names durable on
// FFS.

const (
	datasyncName = "fsync"
	allocateName = "preallocate"
)

func wrapFile(f *os.File) file { return osFile{f} }

func datasync(f *os.File) error { return unix.Fsync(int(f.Fd())) }

func allocate(*os.File, int64) error { return unix.EOPNOTSUPP }

func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.F_bavail * int64(st.F_bsize), nil
}
