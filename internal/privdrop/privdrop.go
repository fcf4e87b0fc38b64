// Package privdrop turns a process started as root into an ordinary user:
// supplementary groups, group id and user id, for every thread of the
// process, then checks that root is gone.
//
// That "every thread" holds is a property of the platform and of Go's
// runtime, not of the calls alone. On Linux credentials belong to each
// thread, and Go (1.16 and later) applies Setgroups, Setgid and Setuid to
// all of its threads at once (through libc when cgo is linked in, whose
// setuid does the same). On FreeBSD, OpenBSD, NetBSD and macOS credentials
// belong to the process, so one call changes them for every thread. On
// any other platform this package refuses (ErrUnsupported): a daemon there
// must be started as its user, not as root.
package privdrop

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"syscall"
)

// ErrUnsupported is returned where privileges cannot be dropped for every
// thread of the process.
var ErrUnsupported = errors.New("cannot drop root privileges for every thread on " + runtime.GOOS +
	": start qmgate as an unprivileged user there, not as root")

// To makes the calling process user uid in group gid, with gid as its only
// supplementary group, for all of its threads. It must be called as root
// (or with the matching capabilities) and with uid other than 0. Afterwards
// the real, effective and saved ids are uid and gid, and root cannot be
// regained; if any of that does not hold, To returns an error and the
// caller must exit.
func To(uid, gid int) error {
	if uid <= 0 || gid < 0 {
		return fmt.Errorf("dropping privileges: refusing to become uid %d, gid %d", uid, gid)
	}
	if !allThreads {
		return ErrUnsupported
	}
	// Groups first, then the group id, then the user id: once the user id
	// is no longer root, the others can no longer be changed.
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("dropping privileges: setting the groups to %d: %w", gid, err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("dropping privileges: setting the group to %d: %w", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("dropping privileges: setting the user to %d: %w", uid, err)
	}
	return check(uid, gid)
}

// check verifies the result of To from the calling thread: every id is the
// new one, and setuid(0) fails.
func check(uid, gid int) error {
	if os.Getuid() != uid || os.Geteuid() != uid || os.Getgid() != gid || os.Getegid() != gid {
		return fmt.Errorf("dropping privileges: still uid %d/%d, gid %d/%d after becoming uid %d, gid %d",
			os.Getuid(), os.Geteuid(), os.Getgid(), os.Getegid(), uid, gid)
	}
	groups, err := os.Getgroups()
	if err != nil {
		return fmt.Errorf("dropping privileges: reading the groups: %w", err)
	}
	if slices.ContainsFunc(groups, func(g int) bool { return g != gid }) {
		return fmt.Errorf("dropping privileges: still in groups %v after becoming gid %d", groups, gid)
	}
	if err := syscall.Setuid(0); err == nil {
		return errors.New("dropping privileges: root could be regained after setuid")
	}
	return nil
}
