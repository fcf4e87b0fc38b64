package fuzz

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/netstring"
	"github.com/qmgate/qmgate/qmtp"
)

// Limits of the fuzzed server, small so the fuzzer reaches them.
const (
	qmtpFuzzMaxBytes = 64
	qmtpFuzzMaxRcpts = 3
	qmtpFuzzMaxHops  = 3
	// A message of this declared size makes the handler return without
	// calling Envelope.
	qmtpFuzzNoEnvelope = 13
)

// FuzzQMTPSession feeds arbitrary bytes to a QMTP server session as the whole
// client side, delivered chunk bytes per read (0: all at once), and checks
// that the session ends quickly without a panic, that every reply is a
// netstring starting with K, Z or D, and that the replies are exactly what
// an independent reading of the input predicts: one per recipient of each
// complete package, in order, with every limit and malformation answered
// by the server whatever the handler says.
func FuzzQMTPSession(f *testing.F) {
	f.Add([]byte("4:\nhi\n,3:a@b,6:3:c@d,,"), uint8(0))
	f.Add([]byte("5:\rhi\r\n,0:,12:3:c@d,3:zed,,"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		srv := &qmtp.Server{
			Hostname:        "fuzz.test",
			MaxMessageBytes: qmtpFuzzMaxBytes,
			MaxRecipients:   qmtpFuzzMaxRcpts,
			MaxHops:         qmtpFuzzMaxHops,
			ErrorLog:        slog.New(slog.DiscardHandler),
			Handler:         qmtp.HandlerFunc(qmtpFuzzHandler),
		}
		var r io.Reader = bytes.NewReader(in)
		if chunk > 0 {
			r = &qmtpChunked{r: r, n: int(chunk)}
		}
		var out bytes.Buffer
		done := make(chan error, 1)
		go func() {
			done <- srv.ServeConn(context.Background(), qmtpRW{r, &out}, nil)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end")
		}

		var got []byte
		rr := netstring.NewReader(bytes.NewReader(out.Bytes()))
		rr.Strict = true // we send strictly
		for {
			b, err := rr.ReadBytes(mail.MaxStatusText + 64)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("reply stream %q: %v", out.Bytes(), err)
			}
			if len(b) == 0 || b[0] != 'K' && b[0] != 'Z' && b[0] != 'D' {
				t.Fatalf("reply %q", b)
			}
			got = append(got, b[0])
		}
		want := qmtpExpect(in)
		if len(got) > len(want) {
			t.Fatalf("%d replies for %d recipients of complete packages", len(got), len(want))
		}
		if string(got) != string(want) {
			t.Fatalf("replies %s, want %s\ninput %q\nout %q", got, want, in, out.Bytes())
		}
	})
}

// qmtpFuzzHandler reads the message and answers by the recipient's first
// byte ('z' temporary, 'd' permanent, else accept); some senders make it
// misbehave in the ways the server must absorb.
func qmtpFuzzHandler(ctx context.Context, req *qmtp.Request) []mail.Status {
	if req.Size == qmtpFuzzNoEnvelope {
		return []mail.Status{mail.OK("")} // never looks at the envelope
	}
	if req.Size%2 == 0 {
		io.Copy(io.Discard, req.Body) // else Envelope drains it
	}
	env, _ := req.Envelope() // errors ignored on purpose: the server must cope
	sender := env.Sender
	if sender == "panic" {
		panic("fuzz handler panic")
	}
	st := make([]mail.Status, len(env.Recipients))
	for i, r := range env.Recipients {
		switch {
		case strings.HasPrefix(r, "z"):
			st[i] = mail.Temp("4.0.0", "later")
		case strings.HasPrefix(r, "d"):
			st[i] = mail.Perm("5.0.0", "no")
		default:
			st[i] = mail.OK("")
		}
	}
	if sender == "short" && len(st) > 0 {
		return st[:1]
	}
	return append(st, mail.OK("extra, ignored"))
}

type qmtpRW struct {
	io.Reader
	io.Writer
}

type qmtpChunked struct {
	r io.Reader
	n int
}

func (c *qmtpChunked) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

// qmtpExpect reads in as the QMTP client side independently of the server
// code and returns the reply letter the server owes each recipient of every
// complete package before the first malformed one.
func qmtpExpect(in []byte) []byte {
	var want []byte
	p := qmtpParser{b: in}
	for p.pos < len(p.b) {
		msg, ok := p.netstring(qmtp.MaxMessageNetstring)
		if !ok || len(msg) == 0 || msg[0] != '\n' && msg[0] != '\r' {
			return want
		}
		sender, ok := p.netstring(qmtp.MaxSenderNetstring)
		if !ok {
			return want
		}
		list, ok := p.netstring(qmtpFuzzMaxRcpts * (mail.MaxAddressLen + 5))
		if !ok || len(list) == 0 {
			return want
		}
		rcpts, ok := qmtpInner(list)
		if !ok {
			return want
		}

		stored := msg[1:]
		if msg[0] == '\r' {
			stored = qmtpCRLF(stored)
		}
		refuse := len(stored) > qmtpFuzzMaxBytes || qmtpHops(stored) >= qmtpFuzzMaxHops ||
			bytes.IndexByte(stored, 0) >= 0 || !mail.ValidAddress(string(sender))
		// The handler's quirks, keyed on the declared size and the
		// sender.
		noEnv := len(msg)-1 == qmtpFuzzNoEnvelope
		panics := string(sender) == "panic" && !noEnv
		short := string(sender) == "short"

		good := 0
		for _, r := range rcpts {
			switch {
			case refuse:
				want = append(want, 'D')
			case !mail.ValidAddress(r):
				want = append(want, 'D')
			case good >= qmtpFuzzMaxRcpts:
				want = append(want, 'Z')
			default:
				switch {
				case noEnv, panics, short && good > 0:
					want = append(want, 'Z')
				case strings.HasPrefix(r, "z"):
					want = append(want, 'Z')
				case strings.HasPrefix(r, "d"):
					want = append(want, 'D')
				default:
					want = append(want, 'K')
				}
				good++
			}
		}
	}
	return want
}

type qmtpParser struct {
	b   []byte
	pos int
}

// netstring parses one netstring the way a lenient qmail-compatible reader
// does: leading zeros and an empty length allowed, at most 20 digits, no
// non-digits, a value over limit refused.
func (p *qmtpParser) netstring(limit int64) ([]byte, bool) {
	var v int64
	digits := 0
	for {
		if p.pos >= len(p.b) {
			return nil, false
		}
		c := p.b[p.pos]
		p.pos++
		if c == ':' {
			break
		}
		if c < '0' || c > '9' {
			return nil, false
		}
		digits++
		if digits > netstring.MaxDigits || v > (1<<63-1-int64(c-'0'))/10 {
			return nil, false
		}
		v = v*10 + int64(c-'0')
	}
	if v > limit || v > int64(len(p.b)-p.pos-1) {
		return nil, false
	}
	data := p.b[p.pos : p.pos+int(v)]
	p.pos += int(v)
	if p.b[p.pos] != ',' {
		return nil, false
	}
	p.pos++
	return data, true
}

// qmtpInner splits a recipient list into its recipients. Inside the list a
// length may not exceed what is left of the list, and must leave room for
// its comma.
func qmtpInner(list []byte) ([]string, bool) {
	var rcpts []string
	for pos := 0; pos < len(list); {
		var v int
		for {
			if pos >= len(list) {
				return nil, false
			}
			c := list[pos]
			pos++
			if c == ':' {
				break
			}
			if c < '0' || c > '9' {
				return nil, false
			}
			v = v*10 + int(c-'0')
			if v > len(list)-pos {
				return nil, false
			}
		}
		if v >= len(list)-pos || list[pos+v] != ',' {
			return nil, false
		}
		rcpts = append(rcpts, string(list[pos:pos+v]))
		pos += v + 1
	}
	return rcpts, true
}

// qmtpCRLF is encoding #1's conversion written the plain way.
func qmtpCRLF(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); i++ {
		if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
			continue
		}
		out = append(out, b[i])
	}
	return out
}

// qmtpHops counts the header lines that start with Received: or
// Delivered-To:, up to the first empty line (or one holding only CR).
func qmtpHops(stored []byte) int {
	n := 0
	for _, line := range strings.Split(string(stored), "\n") {
		if line == "" || line == "\r" {
			break
		}
		l := strings.ToLower(line)
		if strings.HasPrefix(l, "received:") || strings.HasPrefix(l, "delivered-to:") {
			n++
		}
	}
	return n
}
