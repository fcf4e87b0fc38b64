package queue

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FreeBSD: fdatasync(2) since 11.1 (fsync before it, which also writes the
// timestamps); posix_fallocate(2) reserves a segment's blocks on UFS, and
// fails on ZFS, whose copy-on-write cannot reserve: the segment then grows
// with its appends (preallocate). A directory's fsync makes its names
// durable on UFS (soft updates or not) and on ZFS.

const (
	datasyncName = "fdatasync"
	allocateName = "posix_fallocate"
)

func wrapFile(f *os.File) file { return preallocFile{osFile{f}} }

func datasync(f *os.File) error {
	_, _, e := unix.Syscall(unix.SYS_FDATASYNC, f.Fd(), 0, 0)
	if e == unix.ENOSYS {
		return unix.Fsync(int(f.Fd()))
	}
	if e != 0 {
		return e
	}
	return nil
}

func allocate(f *os.File, size int64) error {
	// off_t takes two argument words on 32-bit platforms; qmgate does not
	// preallocate there.
	if unsafe.Sizeof(uintptr(0)) < 8 {
		return unix.EOPNOTSUPP
	}
	r, _, e := unix.Syscall(unix.SYS_POSIX_FALLOCATE, f.Fd(), 0, uintptr(size))
	if e != 0 {
		return e
	}
	// Since FreeBSD 11 the error is the call's return value, not errno.
	if r != 0 {
		return unix.Errno(r)
	}
	return nil
}

func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * int64(st.Bsize), nil
}
