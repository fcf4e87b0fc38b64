package queue

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// fileSystem is the seam between the queue and the disk: every file
// operation the queue performs goes through it, so tests can inject full
// disks, I/O errors, failed fsyncs and missing directories at any step.
type fileSystem interface {
	OpenFile(name string, flag int, perm os.FileMode) (file, error)
	Remove(name string) error
	Mkdir(name string, perm os.FileMode) error
	ReadDir(name string) ([]os.DirEntry, error)
	Stat(name string) (os.FileInfo, error)
	// SyncDir makes the names in directory dir durable (fsync of the
	// directory itself), which Linux needs after create, rename and unlink.
	SyncDir(dir string) error
}

// file is the subset of *os.File the queue uses.
type file interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.WriterAt
	io.Closer
	Sync() error
	// Datasync is fdatasync(2): the data and the metadata needed to read it
	// back (the file size), without timestamps.
	Datasync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
	Name() string
}

// allocator is implemented by files that can reserve their blocks ahead
// of the writes: on Linux (fallocate(2)) and FreeBSD (posix_fallocate(2)).
// Elsewhere, and in the fault-injection and power-loss test file systems,
// segments grow with their appends.
type allocator interface {
	// Allocate reserves the blocks of [0, size) and sets the file's size
	// to size.
	Allocate(size int64) error
}

// osFS is the real file system. The primitives that differ between
// platforms (fs_linux.go, fs_freebsd.go, fs_darwin.go, fs_openbsd.go,
// fs_netbsd.go) give the reason for each choice:
//
//	           Datasync                  Allocate           SyncDir
//	Linux      fdatasync                 fallocate          fsync
//	FreeBSD    fdatasync (fsync before   posix_fallocate    fsync
//	           11.1)                     (not on ZFS)
//	macOS      F_FULLFSYNC               none               F_FULLFSYNC
//	OpenBSD    fsync                     none               fsync
//	NetBSD     fdatasync                 none               fsync
type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	f, err := os.OpenFile(name, flag|unix.O_CLOEXEC, perm)
	if err != nil {
		return nil, err
	}
	return wrapFile(f), nil
}

func (osFS) Remove(name string) error                   { return os.Remove(name) }
func (osFS) Mkdir(name string, perm os.FileMode) error  { return os.Mkdir(name, perm) }
func (osFS) ReadDir(name string) ([]os.DirEntry, error) { return os.ReadDir(name) }
func (osFS) Stat(name string) (os.FileInfo, error)      { return os.Stat(name) }

// SyncDir fsyncs the directory. *os.File's Sync is fsync(2), except on
// macOS, where Go issues F_FULLFSYNC (falling back to fsync where the file
// system refuses it), so the directory entry reaches the medium there too.
func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// osFile is a file of the real file system; Datasync is the platform's
// (fs_GOOS.go).
type osFile struct{ *os.File }

func (f osFile) Datasync() error {
	return retryEINTR(datasyncName, f.Name(), func() error { return datasync(f.File) })
}

// preallocFile is an osFile on a platform that can reserve blocks
// (wrapFile decides).
type preallocFile struct{ osFile }

func (f preallocFile) Allocate(size int64) error {
	return retryEINTR(allocateName, f.Name(), func() error { return allocate(f.File, size) })
}

// retryEINTR calls sys until it is not interrupted, and names op and path
// in its error.
func retryEINTR(op, path string, sys func() error) error {
	for {
		err := sys()
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: op, Path: path, Err: err}
		}
		return nil
	}
}
