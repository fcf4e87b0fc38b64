package qmqp

import (
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/qmgate/qmgate/internal/serve"
)

// Linger bounds for closing a connection: after the reply the server
// half-closes and reads what the client may still send, so that unread input
// does not make the kernel answer with a reset that could destroy the reply
// in flight. A well-behaved client closes at once; a misbehaving one gets at
// most this much time and input.
const (
	lingerTimeout = 2 * time.Second
)

// lingerClose half-closes rw, drains a bounded amount of input, and closes
// it, as far as rw supports each step.
func lingerClose(rw io.ReadWriter) {
	if dl, ok := rw.(interface{ SetReadDeadline(time.Time) error }); ok {
		_ = dl.SetReadDeadline(time.Now().Add(lingerTimeout))
	}
	serve.LingerClose(rw)
}

// closeRW closes rw if it can be closed.
func closeRW(rw io.ReadWriter) {
	if c, ok := rw.(io.Closer); ok {
		_ = c.Close()
	}
}

// isReset reports whether err is the peer resetting or vanishing, which is
// routine for QMQP: Postfix's qmqp-source closes with SO_LINGER 0 right after
// reading the reply.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// isTimeout reports whether err is a deadline expiring.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
