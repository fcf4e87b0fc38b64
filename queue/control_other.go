//go:build !linux

package queue

import (
	"fmt"
	"path/filepath"
)

// socketAddr returns the address of dir's control socket. Without Linux's
// /proc/self/fd there is no way around sun_path's 104 bytes, so a queue
// directory must have a path short enough for its socket.
func socketAddr(dir string) (string, func(), error) {
	p := filepath.Join(dir, controlName)
	if len(p) > maxUnixSocketPath {
		return "", nil, fmt.Errorf("queue directory %s: the path is too long for its control socket (at most %d bytes with %q)", dir, maxUnixSocketPath, "/"+controlName)
	}
	return p, func() {}, nil
}
