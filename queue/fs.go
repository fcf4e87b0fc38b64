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
// of the writes (fallocate(2)); the fault-injection and power-loss test
// file systems do without.
type allocator interface {
	// Allocate reserves the blocks of [0, size) and sets the file's size
	// to size.
	Allocate(size int64) error
}

// osFS is the real file system.
type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	f, err := os.OpenFile(name, flag|unix.O_CLOEXEC, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Remove(name string) error                   { return os.Remove(name) }
func (osFS) Mkdir(name string, perm os.FileMode) error  { return os.Mkdir(name, perm) }
func (osFS) ReadDir(name string) ([]os.DirEntry, error) { return os.ReadDir(name) }
func (osFS) Stat(name string) (os.FileInfo, error)      { return os.Stat(name) }

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

type osFile struct{ *os.File }

func (f osFile) Datasync() error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

func (f osFile) Allocate(size int64) error {
	for {
		err := unix.Fallocate(int(f.Fd()), 0, 0, size)
		if err != unix.EINTR {
			if err != nil {
				return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}
