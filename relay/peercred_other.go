//go:build !linux

package relay

import (
	"errors"
	"net"
)

// peerCredentials is not implemented here yet: the unix socket's clients
// stay unnamed, and are refused only where a UnixPolicy is set.
func peerCredentials(c *net.UnixConn) (*Peer, error) {
	return nil, errors.ErrUnsupported
}
