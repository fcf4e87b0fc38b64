//go:build linux

package reliability

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// streamResult is what one endless stream got.
type streamResult struct {
	written int64 // bytes the server took before closing or the end
	out     []byte
	took    time.Duration
}

// stream writes head, then n bytes of fill (repeated), then tail, while
// reading the server's replies; it stops writing when the server closes.
func stream(addr string, head []byte, fill []byte, n int64, tail []byte, timeout time.Duration) streamResult {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return streamResult{out: []byte(err.Error())}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	start := time.Now()
	var written atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		w := func(b []byte) bool {
			k, err := c.Write(b)
			written.Add(int64(k))
			return err == nil
		}
		if !w(head) {
			return
		}
		buf := bytes.Repeat(fill, max(1, (256<<10)/len(fill)))
		for left := n; left > 0; {
			b := buf[:min(int64(len(buf)), left)]
			if !w(b) {
				return
			}
			left -= int64(len(b))
		}
		if w(tail) {
			c.(*net.TCPConn).CloseWrite()
		}
	}()
	var out bytes.Buffer
	io.Copy(&out, c)
	c.Close()
	<-done
	return streamResult{written: written.Load(), out: out.Bytes(), took: time.Since(start)}
}

// TestHostileHugeStreams: streams of up to 2 GB (64 MB in the short mode)
// with no delimiter, on every listener, while memory is watched: a QMTP
// message declared at 2^31-1 bytes (drained, QMTP cannot abort, then the
// missing comma closes it), a QMQP request declared at 2 GB (refused at
// once: over the request bound), SMTP DATA without its final dot, an SMTP command
// line without LF, and netstring lengths made of endless digits.
func TestHostileHugeStreams(t *testing.T) {
	h := newNetHost(t)
	d, qmtpA, qmqpA, smtpA := hostileDaemon(t, h, "10m")
	n := int64(scale(64<<20, 2<<30))
	timeout := time.Duration(scale(60, 600)) * time.Second
	var notes []string
	check := func(name string, ok bool, r streamResult, format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf("%s: server took %d MB in %s; %s", name, r.written>>20, r.took.Round(time.Millisecond), fmt.Sprintf(format, args...))
		notes = append(notes, msg)
		if !ok {
			t.Errorf("%s (reply %.100q)", msg, r.out)
		}
	}
	// QMTP: the declared message is drained to its end.
	decl := int64(1<<31 - 1)
	if n < decl {
		decl = n + 1
	}
	r := stream(qmtpA, []byte(fmt.Sprintf("%d:\n", decl)), []byte("0123456789abcdef\n"), decl-1, []byte("X"), timeout)
	rs, _ := replies(r.out)
	check("QMTP message netstring of 2^31-1 bytes", r.written >= decl && !anyAccept(rs), r, "drained, then closed for the missing comma with %d replies", len(rs))
	rssQMTP := d.procStatus("VmHWM")

	r = stream(qmqpA, []byte("2147483648:"), []byte("0123456789abcdef\n"), n, nil, timeout)
	rs, _ = replies(r.out)
	check("QMQP request of 2 GB", r.written < 16<<20 && !anyAccept(rs), r, "refused early (replies %q)", rs)

	r = stream(smtpA, []byte("EHLO stream.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<stream@example.com>\r\nDATA\r\n"),
		[]byte("0123456789abcdefghijklmnopqrstuvwxyz\r\n"), n, nil, timeout)
	check("SMTP DATA without the final dot", smtpAccepted(r.out) == 0, r, "nothing accepted (%s)", smtpSummary(exchangeResult{Out: r.out, Closed: true}))

	r = stream(smtpA, []byte("EHLO stream.test\r\nMAIL FROM:<"), []byte("a"), n, nil, timeout)
	check("SMTP command line without LF", r.written < 16<<20 && bytes.Contains(r.out, []byte("500")), r, "closed early")

	for _, l := range []struct{ proto, addr string }{{"QMTP", qmtpA}, {"QMQP", qmqpA}} {
		r = stream(l.addr, nil, []byte("1"), n, nil, timeout)
		rs, _ := replies(r.out)
		check(l.proto+" netstring length of endless digits", r.written < 16<<20 && !anyAccept(rs), r, "closed early")
	}
	peak := d.procStatus("VmHWM")
	const maxRSS = 200 << 20
	if peak > maxRSS {
		t.Errorf("peak RSS %d MB over %d MB", peak>>20, maxRSS>>20)
	}
	if !d.alive() {
		t.Fatal("the daemon died")
	}
	st := probe(qmtpA, qmqpA, smtpA, "after@example.com", "stream-after", newLedger())
	for p, s := range st {
		if !s.IsAccept() {
			t.Errorf("%s refused after the streams: %s", p, s.Reply())
		}
	}
	d.stop()
	report(t, &row{
		Test:   "Endless streams",
		Load:   fmt.Sprintf("one connection at a time, %d MB each", n>>20),
		Inputs: "QMTP 2^31-1-byte message netstring with no comma; QMQP 2 GB request; SMTP DATA with no final dot; SMTP command line with no LF; endless netstring digits on QMTP and QMQP",
		Notes:  fmt.Sprintf("%s. Peak RSS %d MB (after the QMTP drain %d MB; limit %d MB); service normal afterwards.", strings.Join(notes, "; "), peak>>20, rssQMTP>>20, maxRSS>>20),
	})
}
