package queue

import (
	"os"

	"golang.org/x/sys/unix"
)

// Linux: fdatasync(2) writes the data and the size, and flushes the disk's
// cache; fallocate(2) reserves a segment's blocks so that the appends'
// fdatasync needs no commit of the file system's journal for the inode
// (see preallocate); a directory's fsync makes the names in it durable
// after create, rename and unlink.

const (
	datasyncName = "fdatasync"
	allocateName = "fallocate"
)

func wrapFile(f *os.File) file { return preallocFile{osFile{f}} }

func datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

func allocate(f *os.File, size int64) error {
	return unix.Fallocate(int(f.Fd()), 0, 0, size)
}

func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
