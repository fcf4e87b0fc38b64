package queue

import (
	"os"

	"golang.org/x/sys/unix"
)

// macOS: fsync(2) only hands the data to the drive, whose cache may lose it
// on power loss; F_FULLFSYNC also flushes that cache, and *os.File's Sync
// issues it (falling back to fsync on file systems that refuse it, such as
// SMB). Every Datasync and directory sync is therefore a full flush: slower
// than Linux's fdatasync, and the only call that keeps the guarantee.
// Segments are not preallocated: what preallocation buys on Linux (an
// fdatasync that need not commit the inode) is not to be had where every
// sync is an F_FULLFSYNC, which flushes all the file system has pending.

const (
	datasyncName = "fcntl F_FULLFSYNC"
	allocateName = "preallocate"
)

func wrapFile(f *os.File) file { return osFile{f} }

func datasync(f *os.File) error { return f.Sync() }

func allocate(*os.File, int64) error { return unix.EOPNOTSUPP }

func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
