package relay

import (
	"net"

	"github.com/qmgate/qmgate/internal/peercred"
)

// peerCredentials reads the credentials of the process that opened c
// through each platform's own call (internal/peercred); where they cannot
// be read it fails, and a unix policy then refuses the client.
func peerCredentials(c *net.UnixConn) (*Peer, error) {
	cred, err := peercred.Get(c)
	if err != nil {
		return nil, err
	}
	return &Peer{UID: int(cred.UID), GID: int(cred.GID), PID: cred.PID}, nil
}
