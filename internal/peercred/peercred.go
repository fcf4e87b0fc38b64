// Package peercred reads the credentials of the process at the other end of
// a connected unix socket, through each platform's own call: SO_PEERCRED on
// Linux and OpenBSD (each with its own structure), LOCAL_PEERCRED (struct
// xucred) on FreeBSD and macOS, LOCAL_PEEREID on NetBSD.
//
// It only reads; deciding whom to admit is the caller's job. Where the
// credentials cannot be read, Get returns an error and never a guess, so a
// caller that refuses on error refuses rather than allows.
package peercred

import (
	"errors"
	"fmt"
	"net"
	"runtime"
)

// Cred is who the peer was when it connected (or, for a socketpair, when
// the pair was made): effective user and group ids, and its process id.
type Cred struct {
	UID uint32
	GID uint32
	// PID is the peer's process id, or 0 where the platform does not
	// report it (FreeBSD's xucred carries none we read).
	PID int
}

// ErrUnsupported is returned on platforms where this package has no way
// to read a peer's credentials.
var ErrUnsupported = errors.New("reading a unix socket peer's credentials is not supported on " + runtime.GOOS)

// Get returns the credentials of c's peer. c must be a connected unix
// stream socket (accepted from a listener, dialled, or one end of a
// socketpair).
func Get(c *net.UnixConn) (Cred, error) {
	if c == nil {
		return Cred{}, errors.New("peer credentials: no connection")
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return Cred{}, fmt.Errorf("peer credentials: %w", err)
	}
	var cred Cred
	var gerr error
	if err := raw.Control(func(fd uintptr) { cred, gerr = get(int(fd)) }); err != nil {
		return Cred{}, fmt.Errorf("peer credentials: %w", err)
	}
	if gerr != nil {
		return Cred{}, fmt.Errorf("peer credentials: %w", gerr)
	}
	return cred, nil
}
