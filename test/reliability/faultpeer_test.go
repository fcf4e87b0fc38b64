//go:build linux

package reliability

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// faultPeer is a misbehaving next hop: a raw QMTP, QMQP or SMTP server
// whose connections follow a fault schedule (each fault in turn, twice
// round, then "ok" for good). It records what it accepted in ok connections (and
// in the packages a "partial" QMTP connection answers before it hangs up).
type faultPeer struct {
	t      *testing.T
	proto  string
	l      net.Listener
	faults []string

	mu      sync.Mutex
	conns   int
	tried   map[string]int
	got     []sinkCopy
	senders []string
	corrupt int
}

// Fault names per protocol; "ok" behaves.
var (
	qmtpFaults = []string{"refuse-z", "close-mid-package", "stall-mid-reply", "garbage-reply", "bad-netstring", "drop-after-package", "partial-then-close"}
	qmqpFaults = []string{"refuse-z", "close-mid-request", "stall-before-reply", "garbage-reply", "bad-netstring", "drop-after-request"}
	smtpFaults = []string{"greet-421", "greet-stall", "greet-garbage", "mail-451", "rcpt-450", "close-mid-data", "stall-after-data", "cut-multiline", "data-452"}
)

func newFaultPeer(t *testing.T, proto, addr string, faults []string) *faultPeer {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultPeer{t: t, proto: proto, l: l, faults: faults, tried: map[string]int{}}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			f := "ok"
			if p.conns < 2*len(p.faults) {
				f = p.faults[p.conns%len(p.faults)]
			}
			p.conns++
			p.tried[f]++
			p.mu.Unlock()
			go p.serve(c, f)
		}
	}()
	return p
}

func (p *faultPeer) addr() string { return p.l.Addr().String() }

func (p *faultPeer) record(sender string, rcpts []string, body []byte) {
	marker, ok := parseDelivered(body)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.senders = append(p.senders, sender)
	if !ok {
		p.corrupt++
		return
	}
	for _, r := range rcpts {
		p.got = append(p.got, sinkCopy{Key: rcptKey{marker, r}, Sender: sender, At: time.Now()})
	}
}

func (p *faultPeer) copies() []sinkCopy {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]sinkCopy(nil), p.got...)
}

func (p *faultPeer) triedAll() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var missing []string
	for _, f := range p.faults {
		if p.tried[f] == 0 {
			missing = append(missing, f)
		}
	}
	return missing
}

func (p *faultPeer) serve(c net.Conn, fault string) {
	defer c.Close()
	// Stalls last until the daemon gives up (its timeouts are a few
	// seconds), bounded here so nothing lingers.
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReaderSize(c, 64<<10)
	switch p.proto {
	case "qmtp":
		p.serveQMTP(c, br, fault)
	case "qmqp":
		p.serveQMQP(c, br, fault)
	case "smtp":
		p.serveSMTP(c, br, fault)
	}
}

// stall waits until the client hangs up, or 5 s pass (QMQP routes keep
// qmail-qmqpc's 60 s timeout whatever [delivery] says; the stall still ends
// in a reply that never came).
func stall(c net.Conn, br *bufio.Reader) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, br)
}

// readNetstring reads one netstring of at most max bytes.
func readNetstring(br *bufio.Reader, max int) ([]byte, error) {
	var n int
	for {
		b, err := br.ReadByte()
		if err != nil {
			return nil, err
		}
		if b == ':' {
			break
		}
		if b < '0' || b > '9' || n > max {
			return nil, errors.New("bad netstring length")
		}
		n = n*10 + int(b-'0')
	}
	if n > max {
		return nil, errors.New("netstring too long")
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(br, buf); err != nil {
		return nil, err
	}
	if b, err := br.ReadByte(); err != nil || b != ',' {
		return nil, errors.New("missing comma")
	}
	return buf, nil
}

func netstr(s string) string { return strconv.Itoa(len(s)) + ":" + s + "," }

// splitNetstrings splits a concatenation of netstrings.
func splitNetstrings(b []byte) []string {
	var out []string
	br := bufio.NewReader(bytes.NewReader(b))
	for {
		s, err := readNetstring(br, len(b))
		if err != nil {
			return out
		}
		out = append(out, string(s))
	}
}

func (p *faultPeer) serveQMTP(c net.Conn, br *bufio.Reader, fault string) {
	if fault == "close-mid-package" {
		io.CopyN(io.Discard, br, 100)
		return
	}
	for pkg := 0; ; pkg++ {
		msg, err := readNetstring(br, 64<<20)
		if err != nil {
			return
		}
		sender, err := readNetstring(br, 2000)
		if err != nil {
			return
		}
		rl, err := readNetstring(br, 1<<20)
		if err != nil {
			return
		}
		rcpts := splitNetstrings(rl)
		var reply string
		switch fault {
		case "refuse-z":
			for range rcpts {
				reply += netstr("Zsorry, try again later (#4.3.0)")
			}
			c.Write([]byte(reply))
			return
		case "stall-mid-reply":
			c.Write([]byte("40:Kthis reply never ends"))
			stall(c, br)
			return
		case "garbage-reply":
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			return
		case "bad-netstring":
			c.Write([]byte("3:Kok;"))
			stall(c, br)
			return
		case "drop-after-package":
			return
		case "partial-then-close":
			if pkg > 0 {
				return
			}
		}
		body := msg
		if len(body) > 0 {
			body = body[1:] // the mode byte
		}
		p.record(string(sender), rcpts, body)
		for range rcpts {
			reply += netstr("Kok")
		}
		c.Write([]byte(reply))
		if fault == "partial-then-close" {
			return
		}
	}
}

func (p *faultPeer) serveQMQP(c net.Conn, br *bufio.Reader, fault string) {
	if fault == "close-mid-request" {
		io.CopyN(io.Discard, br, 100)
		return
	}
	req, err := readNetstring(br, 64<<20)
	if err != nil {
		return
	}
	parts := splitNetstrings(req)
	if len(parts) < 3 {
		return
	}
	switch fault {
	case "refuse-z":
		c.Write([]byte(netstr("Zsorry, try again later (#4.3.0)")))
		return
	case "stall-before-reply":
		stall(c, br)
		return
	case "garbage-reply":
		c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
		return
	case "bad-netstring":
		c.Write([]byte("3:Kok;"))
		return
	case "drop-after-request":
		return
	}
	p.record(parts[1], parts[2:], []byte(parts[0]))
	c.Write([]byte(netstr("Kok")))
}

func (p *faultPeer) serveSMTP(c net.Conn, br *bufio.Reader, fault string) {
	w := func(s string) { c.Write([]byte(s)) }
	switch fault {
	case "greet-421":
		w("421 4.3.2 too busy, come back later\r\n")
		return
	case "greet-stall":
		stall(c, br)
		return
	case "greet-garbage":
		w("SSH-2.0-OpenSSH_9.6\r\n")
		stall(c, br)
		return
	}
	w("220 faulty.test ESMTP\r\n")
	var from string
	var rcpts []string
	refused := false // a refusing connection refuses once, then hangs up
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if refused {
			w("421 4.3.2 closing\r\n")
			return
		}
		cmd := strings.ToUpper(strings.TrimRight(line, "\r\n"))
		arg := strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			if fault == "cut-multiline" {
				w("250-faulty.test\r\n250-PIPELI")
				return
			}
			w("250-faulty.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
		case strings.HasPrefix(cmd, "MAIL FROM:"):
			if fault == "mail-451" {
				w("451 4.3.0 temporary trouble\r\n")
				refused = true
				continue
			}
			from, rcpts = strings.Trim(strings.Fields(arg[len("MAIL FROM:"):] + " ")[0], "<>"), nil
			w("250 ok\r\n")
		case strings.HasPrefix(cmd, "RCPT TO:"):
			if fault == "rcpt-450" {
				w("450 4.2.0 mailbox busy\r\n")
				refused = true
				continue
			}
			rcpts = append(rcpts, strings.Trim(strings.Fields(arg[len("RCPT TO:"):] + " ")[0], "<>"))
			w("250 ok\r\n")
		case cmd == "DATA":
			if len(rcpts) == 0 {
				w("503 5.5.1 no valid recipients\r\n")
				continue
			}
			w("354 go ahead\r\n")
			if fault == "close-mid-data" {
				io.CopyN(io.Discard, br, 50)
				return
			}
			var b bytes.Buffer
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				l = strings.TrimPrefix(l, ".")
				b.WriteString(strings.TrimSuffix(l, "\r\n") + "\n")
			}
			switch fault {
			case "stall-after-data":
				stall(c, br)
				return
			case "data-452":
				w("452 4.3.1 insufficient system storage\r\n")
				refused = true
				continue
			}
			p.record(from, rcpts, b.Bytes())
			w("250 2.0.0 ok\r\n")
		case cmd == "RSET", cmd == "NOOP":
			w("250 ok\r\n")
		case cmd == "QUIT":
			w("221 bye\r\n")
			return
		default:
			w("502 5.5.2 unimplemented\r\n")
		}
	}
}

func (p *faultPeer) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	for _, f := range append(append([]string(nil), p.faults...), "ok") {
		parts = append(parts, fmt.Sprintf("%s×%d", f, p.tried[f]))
	}
	return p.proto + ": " + strings.Join(parts, ", ")
}
