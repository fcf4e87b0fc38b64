package queue

import (
	"os"

	"golang.org/x/sys/unix"
)

// NetBSD: fdatasync(2) (golang.org/x/sys/unix names the call but does not
// wrap it; NetBSD allows direct system calls). posix_fallocate is not
// implemented by FFS, so segments grow with their appends. A directory's
// fsync makes its names durable.

const (
	datasyncName = "fdatasync"
	allocateName = "preallocate"
)

func wrapFile(f *os.File) file { return osFile{f} }

func datasync(f *os.File) error {
	_, _, e := unix.Syscall(unix.SYS_FDATASYNC, f.Fd(), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func allocate(*os.File, int64) error { return unix.EOPNOTSUPP }

func freeBytes(dir string) (int64, error) {
	var st unix.Statvfs_t
	if err := unix.Statvfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Frsize), nil
}
