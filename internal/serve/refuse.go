package serve

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"time"
)

// reject answers a connection over a limit with h.Refusal and closes it
// gracefully, so the reply is not lost to a reset; at most MaxRejecting at
// once, the others are closed without a word.
func (c *Core) reject(nc net.Conn, h Listener) {
	if c.rejecting.Add(1) > MaxRejecting {
		c.rejecting.Add(-1)
		nc.Close()
		return
	}
	t, ok := c.Track(context.Background(), nc)
	if !ok {
		c.rejecting.Add(-1)
		nc.Close()
		return
	}
	go func() {
		defer c.rejecting.Add(-1)
		defer c.Done(t)
		nc.SetDeadline(time.Now().Add(RejectTimeout))
		var w net.Conn = nc
		if h.ImplicitTLS {
			tc := tls.Server(nc, h.TLS)
			if tc.Handshake() != nil {
				nc.Close()
				return
			}
			w = tc
		}
		if _, err := w.Write(h.Refusal); err != nil {
			nc.Close()
			return
		}
		LingerClose(nc)
	}()
}

// LingerClose half-closes rw, reads and discards what the client may still
// send (bounded by the deadline already set and 1 MiB), and closes it, as
// far as rw supports each step: closing with unread input would make the
// kernel answer with a reset that can destroy the reply in flight.
func LingerClose(rw io.ReadWriter) {
	if cw, ok := rw.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		io.CopyN(io.Discard, rw, lingerBytes)
	}
	if cl, ok := rw.(io.Closer); ok {
		cl.Close()
	}
}
