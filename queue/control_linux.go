package queue

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// socketAddr returns the address of dir's control socket. A path too long
// for sun_path is reached through /proc/self/fd of the directory, opened
// with O_PATH: that needs no read permission on it, so users other than
// the owner, for whom the directory is searchable only, can use it too.
func socketAddr(dir string) (string, func(), error) {
	p := filepath.Join(dir, controlName)
	if len(p) <= maxUnixSocketPath {
		return p, func() {}, nil
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", fd, controlName), func() { unix.Close(fd) }, nil
}
