package peercred

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// NetBSD's LOCAL_PEEREID (unix(4), <sys/un.h>), an option of level 0
// (SOL_LOCAL), and the structure it returns; golang.org/x/sys/unix names
// neither.
const (
	solLocal     = 0
	localPeereid = 3
)

type unpcbid struct {
	PID  int32
	EUID uint32
	EGID uint32
}

// get uses LOCAL_PEEREID: the peer's credentials at connect(2). NetBSD
// allows direct system calls, so this is getsockopt(2) itself, and the
// length the kernel copied out is checked.
func get(fd int) (Cred, error) {
	var id unpcbid
	n := uint32(unsafe.Sizeof(id))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), solLocal, localPeereid,
		uintptr(unsafe.Pointer(&id)), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return Cred{}, e
	}
	if n != uint32(unsafe.Sizeof(id)) {
		return Cred{}, errors.New("LOCAL_PEEREID returned a short answer")
	}
	return Cred{UID: id.EUID, GID: id.EGID, PID: int(id.PID)}, nil
}
