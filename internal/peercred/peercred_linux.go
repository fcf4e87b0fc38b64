package peercred

import "golang.org/x/sys/unix"

// get uses SO_PEERCRED (socket(7)): the peer's credentials at connect(2).
func get(fd int) (Cred, error) {
	u, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return Cred{}, err
	}
	return Cred{UID: u.Uid, GID: u.Gid, PID: int(u.Pid)}, nil
}
