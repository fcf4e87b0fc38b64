package smtp

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer is a scriptable SMTP server that records the exact bytes it
// receives, for checking what the client puts on the wire and for
// misbehaving on purpose.
type fakeServer struct {
	t    testing.TB
	addr string

	// Script; the zero value accepts everything.
	ext       []string    // EHLO extensions
	tlsConfig *tls.Config // STARTTLS; offered when "STARTTLS" is in ext
	breakTLS  bool        // answer STARTTLS with 220, then garbage for a ClientHello
	injectTLS bool        // answer STARTTLS with 220 and more plaintext
	greeting  string      // default "220 fake.test ESMTP"
	mailReply func(arg string) string
	rcptReply func(arg string) string
	dataReply string                  // reply to DATA, default 354
	endReply  func(raw []byte) string // reply to the data, default 250
	// closeInData closes the connection after this many bytes of data
	// (when > 0); closeAfterData closes it after the final "." without a
	// reply; stallAfterData never replies.
	closeInData    int
	closeAfterData bool
	stallAfterData bool
	users          map[string]string

	mu    sync.Mutex
	cmds  []string // every command line, per connection prefixed "#n "
	datas [][]byte // raw data, terminator included
	conns int
	tlsOn []bool
	stall chan struct{}
}

func newFake(t testing.TB, configure func(*fakeServer)) *fakeServer {
	f := &fakeServer{t: t, stall: make(chan struct{})}
	if configure != nil {
		configure(f)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = l.Addr().String()
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		close(f.stall)
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns++
			n := f.conns
			f.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				f.serve(c, n)
			}()
		}
	}()
	return f
}

func (f *fakeServer) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

func (f *fakeServer) data() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.datas...)
}

func (f *fakeServer) serve(c net.Conn, n int) {
	c.SetDeadline(time.Now().Add(testTimeout))
	r := bufio.NewReader(c)
	w := io.Writer(c)
	say := func(s string) { fmt.Fprintf(w, "%s\r\n", s) }
	greeting := f.greeting
	if greeting == "" {
		greeting = "220 fake.test ESMTP"
	}
	say(greeting)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		f.mu.Lock()
		f.cmds = append(f.cmds, fmt.Sprintf("#%d %s", n, line))
		f.mu.Unlock()
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			say("250-fake.test hello")
			for _, e := range f.ext {
				say("250-" + e)
			}
			say("250 HELP")
		case "HELO", "NOOP", "RSET":
			say("250 ok")
		case "STARTTLS":
			if f.breakTLS || f.injectTLS {
				say("220 go ahead")
				if f.breakTLS {
					r.ReadByte() // the ClientHello has begun
				}
				io.WriteString(c, "250 this is not TLS at all\r\n")
				return
			}
			if f.tlsConfig == nil {
				say("454 4.7.0 TLS not available")
				continue
			}
			say("220 go ahead")
			tc := tls.Server(c, f.tlsConfig)
			if err := tc.Handshake(); err != nil {
				return
			}
			f.mu.Lock()
			f.tlsOn = append(f.tlsOn, true)
			f.mu.Unlock()
			c, r, w = tc, bufio.NewReader(tc), tc
		case "AUTH":
			mech, ir, _ := strings.Cut(arg, " ")
			if mech != "PLAIN" {
				say("504 5.5.4 unknown mechanism")
				continue
			}
			b, _ := base64.StdEncoding.DecodeString(ir)
			parts := bytes.Split(b, []byte{0})
			if len(parts) == 3 && f.users[string(parts[1])] == string(parts[2]) {
				say("235 2.7.0 ok")
			} else {
				say("535 5.7.8 bad credentials")
			}
		case "MAIL":
			if f.mailReply != nil {
				say(f.mailReply(arg))
			} else {
				say("250 2.1.0 ok")
			}
		case "RCPT":
			if f.rcptReply != nil {
				say(f.rcptReply(arg))
			} else {
				say("250 2.1.5 ok")
			}
		case "DATA":
			if f.dataReply != "" {
				say(f.dataReply)
				if !strings.HasPrefix(f.dataReply, "354") {
					continue
				}
			} else {
				say("354 go ahead")
			}
			raw, ok := readData(r, f.closeInData)
			f.mu.Lock()
			f.datas = append(f.datas, raw)
			f.mu.Unlock()
			if !ok || f.closeAfterData {
				return
			}
			if f.stallAfterData {
				<-f.stall
				return
			}
			if f.endReply != nil {
				say(f.endReply(raw))
			} else {
				say("250 2.0.0 queued as 12345")
			}
		case "QUIT":
			say("221 bye")
			return
		default:
			say("500 5.5.2 what")
		}
	}
}

// readData reads up to and including CR LF "." CR LF (a "." CR LF first
// thing counts too). With limit > 0 it gives up after that many bytes.
func readData(r *bufio.Reader, limit int) ([]byte, bool) {
	var b []byte
	for {
		line, err := r.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return append(b, line...), false
		}
		atLineStart := len(b) == 0 || bytes.HasSuffix(b, []byte("\r\n"))
		b = append(b, line...)
		if limit > 0 && len(b) >= limit {
			return b[:limit], false
		}
		if atLineStart && string(line) == ".\r\n" {
			return b, true
		}
	}
}
