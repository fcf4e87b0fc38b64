package peercred

import "golang.org/x/sys/unix"

// peerPID reads LOCAL_PEERPID, macOS's separate option for the peer's
// process id; 0 if it cannot be read (the uid and gid still stand).
func peerPID(fd int) int {
	pid, err := unix.GetsockoptInt(fd, unix.SOL_LOCAL, unix.LOCAL_PEERPID)
	if err != nil {
		return 0
	}
	return pid
}
