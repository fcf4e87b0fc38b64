package qmqp

import (
	"bytes"
	"context"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// memConn is a session on memory: Read yields the input, then EOF; writes
// are collected. It has no deadlines and no Close, like stdin/stdout.
type memConn struct {
	in  io.Reader
	out bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *memConn) Write(p []byte) (int, error) { return c.out.Write(p) }

var tcpInfo = func() *mail.ConnInfo {
	return &mail.ConnInfo{RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4321}}
}

// zeros yields n zero bytes without holding them.
// spaces reads n space bytes (not NULs, which the server refuses).
type spaces struct{ n int64 }

func (z *spaces) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > z.n {
		p = p[:z.n]
	}
	for i := range p {
		p[i] = ' '
	}
	z.n -= int64(len(p))
	return len(p), nil
}

// TestHugeDeclaredLengthsAllocateNothing: declared lengths of a gigabyte, at
// every level of the request, cost no memory beyond the buffers; a stream
// that really is large is drained through them.
func TestHugeDeclaredLengthsAllocateNothing(t *testing.T) {
	const gib = "1073741824"
	// 64 MiB of message, really sent: 9+64Mi+1 bytes of message netstring
	// and two 6-byte recipient netstrings.
	big := func() io.Reader {
		return io.MultiReader(strings.NewReader(itoa(9+64<<20+1+6+6)+":67108864:"), &spaces{64 << 20}, strings.NewReader(",3:a@b,3:c@d,,"))
	}
	cases := []struct {
		name     string
		in       func() io.Reader
		maxBytes int64
		reply    string
	}{
		{"outer", func() io.Reader { return strings.NewReader(gib + ":") }, 0, ""},
		{"message, over the limit", func() io.Reader { return strings.NewReader("2147483648:" + gib + ":abc") }, 0, ""},
		{"message, no limit", func() io.Reader { return strings.NewReader("2147483648:" + gib + ":abc") }, -1, ""},
		{"sender", func() io.Reader { return strings.NewReader("2147483648:2:x\n," + gib + ":abc") }, 0, ""},
		{"recipient", func() io.Reader { return strings.NewReader("2147483648:2:x\n,3:a@b," + gib + ":abc") }, 0, ""},
		{"64 MiB streamed over the limit", big, 1 << 20, ns(string(mail.StatusTooBig.Reply()))},
		{"64 MiB streamed into the handler", big, -1, "3:Kok,"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := HandlerFunc(func(ctx context.Context, req *Request) mail.Status {
				io.Copy(io.Discard, req.Body)
				if _, err := req.Envelope(); err != nil {
					return mail.StatusOf(err)
				}
				return mail.OK("")
			})
			s := &Server{Handler: h, Allow: loopback, MaxMessageBytes: tc.maxBytes, ErrorLog: (&logBuffer{}).logger()}
			c := &memConn{in: tc.in()}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			s.ServeConn(context.Background(), c, tcpInfo())
			runtime.ReadMemStats(&after)
			if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
				t.Errorf("allocated %d bytes", d)
			}
			if c.out.String() != tc.reply {
				t.Errorf("reply %q, want %q", c.out.Bytes(), tc.reply)
			}
		})
	}
}

// TestNoGoroutineLeaks runs every kind of session, then shuts down and
// checks that the goroutine count returns to where it was.
func TestNoGoroutineLeaks(t *testing.T) {
	runtime.GC()
	base := runtime.NumGoroutine()
	func() {
		h := &recorder{}
		s := &Server{Handler: h, Allow: loopback, ReadTimeout: 200 * time.Millisecond, MaxConnsPerIP: 100, ErrorLog: (&logBuffer{}).logger()}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- s.Serve(l) }()
		addr := l.Addr().String()
		for _, in := range []string{mailfrontRequest, "", "x", mailfrontRequest[:20], "20:5:test\n,13:a@example.com,13:b@example.com,,",
			string(request("x\n", "a@x", "b\x00@y"))} {
			exchange(t, "tcp", addr, []byte(in))
		}
		// A client that resets mid-request, one that stalls (the read
		// timeout ends it), and one still connected at Shutdown.
		c, _ := net.Dial("tcp", addr)
		c.Write([]byte(mailfrontRequest[:30]))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		stalled, _ := net.Dial("tcp", addr)
		stalled.Write([]byte("42:"))
		defer stalled.Close()
		s.SetAllow(nil)
		exchange(t, "tcp", addr, []byte(mailfrontRequest))

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if err := testpeer.Recv(t, "Serve to return", 30*time.Second, served); err != ErrServerClosed {
			t.Fatal(err)
		}
	}()
	settleGoroutines(t, base)
}

// TestRefusalFlood: many refused clients at once each get their D, and
// nothing is left behind.
func TestRefusalFlood(t *testing.T) {
	runtime.GC()
	base := runtime.NumGoroutine()
	func() {
		s := &Server{Handler: &recorder{}, ErrorLog: (&logBuffer{}).logger()}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- s.Serve(l) }()
		const n = 300
		errs := make(chan string, n)
		for i := 0; i < n; i++ {
			go func() {
				c, err := net.Dial("tcp", l.Addr().String())
				if err != nil {
					errs <- err.Error()
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute))
				out, _ := io.ReadAll(c)
				errs <- string(out)
			}()
		}
		want := ns("Dclient 127.0.0.1 is not authorized to use this service (#5.7.1)")
		for i := 0; i < n; i++ {
			if got := testpeer.Recv(t, "a client's reply", 30*time.Second, errs); got != want {
				t.Errorf("client got %q", got)
			}
		}
		s.Shutdown(context.Background())
		testpeer.Recv(t, "Serve to return", 30*time.Second, served)
	}()
	settleGoroutines(t, base)
}
