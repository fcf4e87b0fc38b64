//go:build freebsd || darwin

package peercred

import (
	"errors"

	"golang.org/x/sys/unix"
)

// xucredVersion is XUCRED_VERSION of <sys/ucred.h>, the only layout of
// struct xucred that FreeBSD and macOS have had.
const xucredVersion = 0

// get uses LOCAL_PEERCRED (FreeBSD unix(4), macOS <sys/un.h>): the peer's
// credentials at connect(2), as a struct xucred whose first group is the
// effective gid.
func get(fd int) (Cred, error) {
	x, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return Cred{}, err
	}
	if x.Version != xucredVersion {
		return Cred{}, errors.New("LOCAL_PEERCRED returned an unknown xucred version")
	}
	if x.Ngroups < 1 {
		return Cred{}, errors.New("LOCAL_PEERCRED returned no group")
	}
	return Cred{UID: x.Uid, GID: x.Groups[0], PID: peerPID(fd)}, nil
}
