package smtp

import (
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestDataFilterLineEnds(t *testing.T) {
	cases := []struct {
		in, want string
		bareCR   bool
	}{
		{"a\r\nb\r\n", "a\nb\n", false},
		{"a\nb\n", "a\nb\n", false}, // bare LF: a line end
		{"a\r\n\r\n", "a\n\n", false},
		{"", "", false},
		{"a\rb\r\n", "", true},
		{"a\r\r\n", "", true},
	}
	for _, tc := range cases {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tc.in)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			f := newDataFilter(r, false)
			var got []byte
			var err error
			if oneByte {
				got, err = io.ReadAll(iotest.OneByteReader(f))
			} else {
				got, err = io.ReadAll(f)
			}
			if tc.bareCR {
				if err != statusBareCR {
					t.Errorf("%q: err %v, want bare CR", tc.in, err)
				}
				continue
			}
			if err != nil || string(got) != tc.want {
				t.Errorf("%q (one byte %v): got %q, %v; want %q", tc.in, oneByte, got, err, tc.want)
			}
		}
	}
}

func TestDataFilterBDATTrailingCR(t *testing.T) {
	f := newDataFilter(strings.NewReader("a\r\nb\r"), true)
	if _, err := io.ReadAll(f); err != statusBareCR {
		t.Errorf("err %v, want bare CR", err)
	}
}

// sendData runs one transaction and returns the reply to the data.
func sendData(c *rawClient, data string) []string {
	c.t.Helper()
	c.cmd("MAIL FROM:<a@b.example>", "250")
	c.cmd("RCPT TO:<c@d.example>", "250")
	c.cmd("DATA", "354")
	c.send(data)
	_, lines := c.reply()
	return lines
}

// No sequence but CR LF "." CR LF ends the data: a lone LF before or after
// the dot (the 2023 "SMTP smuggling" forms) leaves the rest inside the
// message, so the smuggled commands are message text, never a second
// transaction.
func TestSmuggling(t *testing.T) {
	const smuggled = "MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<victim@d.example>\r\nDATA\r\nsmuggled body\r\n"
	cases := []struct {
		name, sep string
		want      string // the stored body, or "" when the message is refused
		reply     string
	}{
		{"LF.LF", "\n.\n", "before\n.\n" + strings.ReplaceAll(smuggled, "\r\n", "\n"), "250"},
		{"LF.CRLF", "\n.\r\n", "before\n.\n" + strings.ReplaceAll(smuggled, "\r\n", "\n"), "250"},
		// After CR LF the dot starts a line, so go-smtp removes it as
		// stuffing; what follows it stays in the message.
		{"CRLF.LF", "\r\n.\n", "before\n\n" + strings.ReplaceAll(smuggled, "\r\n", "\n"), "250"},
		{"CR.CR", "\r.\r", "", "554 5.6.0"},
		{"CR.CRLF", "\r.\r\n", "", "554 5.6.0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &recHandler{}
			addr := startServer(t, &Server{Handler: h})
			c := dialRaw(t, addr)
			c.expect("220")
			c.cmd("EHLO x", "250")
			lines := sendData(c, "Subject: s\r\n\r\nbefore"+tc.sep+smuggled+".\r\n")
			if !strings.HasPrefix(lines[len(lines)-1], tc.reply) {
				t.Fatalf("reply %q, want %s", lines, tc.reply)
			}
			// Exactly one transaction happened, and the session is in step.
			c.cmd("NOOP", "250")
			h.mu.Lock()
			senders := h.senders
			h.mu.Unlock()
			if len(senders) != 1 || senders[0] != "a@b.example" {
				t.Errorf("senders %q: a smuggled transaction ran", senders)
			}
			msgs := h.messages()
			if tc.want == "" {
				if len(msgs) != 0 {
					t.Errorf("refused message committed: %+v", msgs)
				}
				return
			}
			if len(msgs) != 1 {
				t.Fatalf("%d messages", len(msgs))
			}
			if got := stripReceived(t, msgs[0].body); got != "Subject: s\n\n"+tc.want {
				t.Errorf("body %q, want %q", got, "Subject: s\n\n"+tc.want)
			}
		})
	}
}

func TestEndOfData(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	// An empty message: the terminator right after DATA.
	if l := sendData(c, ".\r\n"); !strings.HasPrefix(l[0], "250") {
		t.Errorf("empty message: %q", l)
	}
	// A dot line inside CR LF lines, stuffed.
	if l := sendData(c, "a\r\n..\r\n...x\r\n.\r\n"); !strings.HasPrefix(l[0], "250") {
		t.Errorf("stuffed: %q", l)
	}
	msgs := h.messages()
	if got := stripReceived(t, msgs[0].body); got != "" {
		t.Errorf("empty message stored as %q", got)
	}
	if got := stripReceived(t, msgs[1].body); got != "a\n.\n..x\n" {
		t.Errorf("stuffed message stored as %q", got)
	}
}

// A bare CR is refused; where go-smtp stays in step with the client the
// session goes on, and where CR CR LF made go-smtp miss the client's
// terminator the server answers anyway and closes, instead of both sides
// waiting for each other until the timeout.
func TestBareCR(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	if l := sendData(c, "a\rb\r\nmore\r\n.\r\n"); !strings.HasPrefix(l[0], "554 5.6.0") {
		t.Errorf("bare CR: %q", l)
	}
	c.cmd("NOOP", "250")
	// CR CR LF in the middle: go-smtp finds its step again at the next CR LF.
	if l := sendData(c, "a\r\r\nb\r\n.\r\n"); !strings.HasPrefix(l[0], "554 5.6.0") {
		t.Errorf("CR CR LF: %q", l)
	}
	c.cmd("NOOP", "250")
	// CR CR LF line ends throughout, so that the last line before the
	// terminator ends in CR CR LF: go-smtp misses the terminator.
	big := strings.Repeat("some text line\r\r\n", 1000)
	if l := sendData(c, big+".\r\n"); !strings.HasPrefix(l[0], "554 5.6.0") {
		t.Errorf("CR CR LF at the end: %q", l)
	}
	c.eof()
	if n := len(h.messages()); n != 0 {
		t.Errorf("%d messages with bare CRs committed", n)
	}

	// A short such message sits in go-smtp's buffer unseen: the reply
	// comes when the read times out, still the permanent one.
	addr = startServer(t, &Server{Handler: h, ReadTimeout: 200 * time.Millisecond})
	c = dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	if l := sendData(c, "a\r\r\n.\r\n"); !strings.HasPrefix(l[0], "554 5.6.0") {
		t.Errorf("short CR CR LF message: %q", l)
	}
	c.eof()
}

// Lines longer than MaxLineLength in DATA refuse the message; go-smtp cannot
// read on after that, so the session ends.
func TestLongDataLine(t *testing.T) {
	h := &recHandler{}
	addr := startServer(t, &Server{Handler: h, MaxLineLength: 1000})
	c := dialRaw(t, addr)
	c.expect("220")
	c.cmd("EHLO x", "250")
	if l := sendData(c, strings.Repeat("x", 998)+"\r\n.\r\n"); !strings.HasPrefix(l[0], "250") {
		t.Errorf("998-byte line: %q", l)
	}
	if l := sendData(c, strings.Repeat("x", 5000)+"\r\n.\r\n"); !strings.HasPrefix(l[0], "554 5.6.0") {
		t.Errorf("5000-byte line: %q", l)
	}
	c.eof()
}

// The span-wise fast path and the byte loop agree on every input: output,
// error, and what the scanners concluded.
func TestDataFilterFastPath(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab.\r\n\r\n")
	for iter := 0; iter < 20000; iter++ {
		in := make([]byte, rng.IntN(40))
		for i := range in {
			in[i] = alphabet[rng.IntN(len(alphabet))]
		}
		chunk := 1 + rng.IntN(8)
		run := func(slow bool) (string, *dataFilter, error) {
			f := newDataFilter(oneByteOrChunk(bytes.NewReader(in), chunk), false)
			f.slowOnly = slow
			out, err := io.ReadAll(oneByteOrChunk(f, chunk))
			f.drain()
			return string(out), f, err
		}
		fo, ff, fe := run(false)
		so, sf, se := run(true)
		if fo != so || fe != se || ff.bareCR != sf.bareCR || ff.missedEnd != sf.missedEnd {
			t.Fatalf("%q (chunk %d): fast %q %v %v %v, slow %q %v %v %v", in, chunk,
				fo, fe, ff.bareCR, ff.missedEnd, so, se, sf.bareCR, sf.missedEnd)
		}
	}
}

type chunkReader struct {
	r io.Reader
	n int
}

func (c chunkReader) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

func oneByteOrChunk(r io.Reader, n int) io.Reader { return chunkReader{r, n} }
