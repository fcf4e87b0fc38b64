package relay

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerCredentials reads the credentials of the process that opened c
// (SO_PEERCRED, unix(7)). One small function on purpose: a portable one
// shared with the queue's control socket can replace it.
func peerCredentials(c *net.UnixConn) (*Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, cerr
	}
	return &Peer{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid)}, nil
}
