package peercred

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockpeercred is OpenBSD's struct sockpeercred (<sys/socket.h>).
type sockpeercred struct {
	UID uint32
	GID uint32
	PID int32
}

// get uses SO_PEERCRED (OpenBSD getsockopt(2)): the peer's credentials at
// connect(2).
//
// golang.org/x/sys/unix has no wrapper for OpenBSD's structure, and OpenBSD
// allows system calls only through libc, so the call goes through an
// existing wrapper whose buffer is larger than struct sockpeercred
// (IPv6Mreq, 20 bytes against 12); the kernel copies out the 12 bytes it
// has. The wrapper does not return the length copied, so a short answer
// would leave zeros, which read as uid 0: the pid, the last field, is
// never 0 for a connected peer, and a zero pid is refused.
func get(fd int) (Cred, error) {
	m, err := unix.GetsockoptIPv6Mreq(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return Cred{}, err
	}
	p := (*sockpeercred)(unsafe.Pointer(m))
	if p.PID <= 0 {
		return Cred{}, errors.New("SO_PEERCRED returned no credentials")
	}
	return Cred{UID: p.UID, GID: p.GID, PID: int(p.PID)}, nil
}

// The wrapper's buffer must hold the whole structure.
var _ [unsafe.Sizeof(unix.IPv6Mreq{}) - unsafe.Sizeof(sockpeercred{})]struct{}
