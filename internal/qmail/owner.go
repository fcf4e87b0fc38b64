package qmail

import (
	"os"
	"syscall"

	"github.com/qmgate/qmgate/internal/privdrop"
)

// BecomeQueueOwner makes root take the uid and gid of the owner of the queue
// directory dir, so that what it writes there stays the daemon's; other
// users stay who they are. It changes the identity of the whole process: for
// short-lived commands (sendmail, qmgate queue) only.
func BecomeQueueOwner(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	return becomeOwner(st)
}

// becomeOwner makes root take the uid and gid of the queue directory's
// owner. Other users stay who they are: the file permissions decide.
func becomeOwner(st os.FileInfo) error {
	if os.Geteuid() != 0 {
		return nil
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || sys.Uid == 0 {
		return nil
	}
	return privdrop.To(int(sys.Uid), int(sys.Gid))
}
