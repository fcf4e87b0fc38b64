package fuzz

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/netstring"
	"github.com/qmgate/qmgate/qmqp"
)

// Limits of the fuzzed QMQP server, small so the fuzzer reaches them.
const (
	qmqpFuzzMaxBytes = 64
	qmqpFuzzMaxRcpts = 3
	qmqpFuzzMaxHops  = 3
)

// The fuzz handler's behaviour is chosen by the message's first bytes, so
// the oracle can predict it:
//
//	PANIC   panics before reading anything
//	NOENV   replies K without reading the body or calling Envelope
//	ENV1    calls Envelope before reading the body
//	Z / D   reads everything, then refuses with Z or D
//	else    reads the body, then the envelope, and commits (K)
func qmqpFuzzHandler(committed *int, careless *bool) qmqp.HandlerFunc {
	return func(ctx context.Context, req *qmqp.Request) mail.Status {
		// Skip the server's two-line Received line, then peek at the
		// message's first bytes.
		for lines := 0; lines < 2; {
			var b [1]byte
			if _, err := req.Body.Read(b[:]); err != nil {
				break
			}
			if b[0] == '\n' {
				lines++
			}
		}
		var head [5]byte
		k, _ := io.ReadFull(req.Body, head[:])
		h := string(head[:k])
		switch {
		case strings.HasPrefix(h, "PANIC"):
			panic("fuzz handler panic")
		case strings.HasPrefix(h, "NOENV"):
			*careless = true // it commits nothing: the server still checks
			return mail.OK("")
		case strings.HasPrefix(h, "ENV1"):
			if _, err := req.Envelope(); err != nil {
				return mail.StatusOf(err)
			}
			io.Copy(io.Discard, req.Body)
		default:
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				req.Envelope()
				return mail.StatusOf(err)
			}
			if _, err := req.Envelope(); err != nil {
				return mail.StatusOf(err)
			}
		}
		switch {
		case strings.HasPrefix(h, "Z"):
			return mail.Temp("4.3.0", "fuzz says later")
		case strings.HasPrefix(h, "D"):
			return mail.Perm("5.7.1", "fuzz says no")
		}
		*committed++
		return mail.OK("fuzz queued")
	}
}

// qmqpChunked hands out at most n bytes per Read, to vary the read sizes.
type qmqpChunked struct {
	r io.Reader
	n int
}

func (c *qmqpChunked) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

// qmqpRW is a session on memory, like stdin/stdout: no deadlines, no Close.
type qmqpRW struct {
	io.Reader
	io.Writer
}

// FuzzQMQPSession feeds arbitrary bytes to a QMQP server session as the whole
// client side (chunk bytes per read; 0: all at once) with an allowing policy,
// and checks that the session ends quickly without a panic, that at most one
// reply comes back, a netstring starting with K, Z or D and nothing after
// it, and that its letter is what an independent reading of the input
// predicts: nothing for a malformed or truncated request, the server's
// refusals for limits and bad envelopes whatever the handler says, and the
// handler's word otherwise. A K must mean the handler committed (unless it
// is the careless NOENV handler), and a commit must mean K.
func FuzzQMQPSession(f *testing.F) {
	f.Add([]byte("42:5:test\n,13:a@example.com,13:b@example.com,,"), uint8(0))
	f.Add([]byte("25:5:test\n,13:a@example.com,,"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		committed, careless := 0, false
		srv := &qmqp.Server{
			Hostname:        "fuzz.test",
			AllowFunc:       func(*mail.ConnInfo) bool { return true },
			MaxMessageBytes: qmqpFuzzMaxBytes,
			MaxRecipients:   qmqpFuzzMaxRcpts,
			MaxHops:         qmqpFuzzMaxHops,
			ErrorLog:        slog.New(slog.DiscardHandler),
			Handler:         qmqpFuzzHandler(&committed, &careless),
		}
		var r io.Reader = bytes.NewReader(in)
		if chunk > 0 {
			r = &qmqpChunked{r: r, n: int(chunk)}
		}
		var out bytes.Buffer
		info := &mail.ConnInfo{RemoteAddr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 628}}
		done := make(chan error, 1)
		go func() {
			done <- srv.ServeConn(context.Background(), qmqpRW{r, &out}, info)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end")
		}

		var got byte // 0: no reply
		if out.Len() > 0 {
			rr := netstring.NewReader(bytes.NewReader(out.Bytes()))
			rr.Strict = true // we send strictly
			b, err := rr.ReadBytes(mail.MaxStatusText + 64)
			if err != nil {
				t.Fatalf("reply %q: %v", out.Bytes(), err)
			}
			if len(b) == 0 || b[0] != 'K' && b[0] != 'Z' && b[0] != 'D' {
				t.Fatalf("reply %q", b)
			}
			if _, err := rr.ReadLength(-1); err != io.EOF {
				t.Fatalf("more than one reply: %q", out.Bytes())
			}
			got = b[0]
		}
		want := qmqpExpect(in)
		if got != want {
			t.Fatalf("reply %q (%q), want %q", got, out.Bytes(), want)
		}
		if committed > 1 || committed == 1 && got != 'K' || got == 'K' && committed == 0 && !careless {
			t.Fatalf("reply %q with %d commits", got, committed)
		}
	})
}

// qmqpExpect predicts the reply letter for a session, or 0 for none, by its
// own reading of the grammar (qmqp.txt) and of the server's limits.
func qmqpExpect(in []byte) byte {
	outer, rest, ok := qmqpNS(in)
	if !ok || len(rest) == 0 || rest[0] != ',' {
		return 0
	}
	msg, outer, ok := qmqpNS(outer)
	if !ok || len(outer) == 0 || outer[0] != ',' {
		return 0
	}
	outer = outer[1:]
	sender, outer, ok := qmqpNS(outer)
	if !ok || len(outer) == 0 || outer[0] != ',' {
		return 0
	}
	outer = outer[1:]
	bad := !qmqpGoodAddr(sender, true)
	rcpts := 0
	for len(outer) > 0 {
		var r []byte
		r, outer, ok = qmqpNS(outer)
		if !ok || len(outer) == 0 || outer[0] != ',' {
			return 0
		}
		outer = outer[1:]
		rcpts++
		bad = bad || !qmqpGoodAddr(r, false)
	}
	switch {
	case len(msg) > qmqpFuzzMaxBytes:
		return 'D'
	case qmqpHops(msg) >= qmqpFuzzMaxHops:
		return 'D'
	case bytes.IndexByte(msg, 0) >= 0:
		return 'D'
	case bad, rcpts > qmqpFuzzMaxRcpts, rcpts == 0:
		return 'D'
	}
	switch {
	case bytes.HasPrefix(msg, []byte("PANIC")):
		return 'Z'
	case bytes.HasPrefix(msg, []byte("NOENV")):
		return 'K'
	case bytes.HasPrefix(msg, []byte("ENV1")):
		return 'K'
	case bytes.HasPrefix(msg, []byte("Z")):
		return 'Z'
	case bytes.HasPrefix(msg, []byte("D")):
		return 'D'
	}
	return 'K'
}

// qmqpNS splits one netstring off b, leniently as qmail and Postfix read
// them (leading zeros, an empty length), without its comma: data, then the
// rest starting at the byte after the data.
func qmqpNS(b []byte) (data, rest []byte, ok bool) {
	i := bytes.IndexByte(b, ':')
	if i < 0 || i > netstring.MaxDigits {
		return nil, nil, false
	}
	n := 0
	for _, c := range b[:i] {
		if c < '0' || c > '9' {
			return nil, nil, false
		}
		n = n*10 + int(c-'0')
		if n > len(b) {
			return nil, nil, false
		}
	}
	if len(b)-i-1 < n {
		return nil, nil, false
	}
	return b[i+1 : i+1+n], b[i+1+n:], true
}

func qmqpGoodAddr(a []byte, sender bool) bool {
	return len(a) < mail.MaxAddressLen && bytes.IndexByte(a, 0) < 0 && (sender || len(a) > 0)
}

// qmqpHops counts header lines starting with Received: or Delivered-To:
// (ASCII case ignored) before the first empty line.
func qmqpHops(msg []byte) int {
	n := 0
	for _, line := range bytes.Split(msg, []byte("\n")) {
		if len(line) == 0 || string(line) == "\r" {
			break
		}
		l := strings.ToLower(string(line[:min(len(line), 13)]))
		if strings.HasPrefix(l, "received:") || strings.HasPrefix(l, "delivered-to:") {
			n++
		}
	}
	return n
}
