package qmqp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

func TestParseServer(t *testing.T) {
	for _, tc := range []struct{ in, network, addr string }{
		{"hub.example", "tcp", "hub.example:628"},
		{"hub.example:2628", "tcp", "hub.example:2628"},
		{"192.0.2.1", "tcp", "192.0.2.1:628"},
		{"192.0.2.1:29", "tcp", "192.0.2.1:29"},
		{"[2001:db8::1]:2628", "tcp", "[2001:db8::1]:2628"},
		{"[2001:db8::1]", "tcp", "[2001:db8::1]:628"},
		{"2001:db8::1", "tcp", "[2001:db8::1]:628"},
		{"fe80::1%eth0", "tcp", "[fe80::1%eth0]:628"},
		{"unix:/run/qmgate/qmqp.sock", "unix", "/run/qmgate/qmqp.sock"},
	} {
		network, addr, err := ParseServer(tc.in)
		if err != nil || network != tc.network || addr != tc.addr {
			t.Errorf("ParseServer(%q) = %q, %q, %v; want %q, %q", tc.in, network, addr, err, tc.network, tc.addr)
		}
	}
	for _, bad := range []string{"", "unix:", ":628", "hub:0", "hub:99999", "hub:port", "a:b:c", "hub example", "[hub]x", "http://hub/"} {
		if n, a, err := ParseServer(bad); err == nil {
			t.Errorf("ParseServer(%q) = %q, %q; want an error", bad, n, a)
		}
	}
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// closedAddr returns a loopback address where nothing listens, reserved
// until the test ends: a server started later on port 0 cannot be given it.
func closedAddr(t *testing.T) string { return testpeer.FreePort(t) }

func send(t *testing.T, c *Client, env mail.Envelope, body string) (Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return c.Send(ctx, env, strings.NewReader(body), int64(len(body)))
}

var testEnv = mail.Envelope{Sender: "a@example.com", Recipients: []string{"b@example.org"}}

func TestClientRoundTrip(t *testing.T) {
	h := &recorder{}
	s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
	addr := startServer(t, s)
	rnd := rand.New(rand.NewSource(1))
	binary := make([]byte, 3<<20)
	rnd.Read(binary)
	for i, b := range binary {
		if b == 0 {
			binary[i] = 1 // NUL bytes are refused at the door
		}
	}
	cases := []struct {
		env  mail.Envelope
		body string
	}{
		{testEnv, "Subject: hi\n\nhello\n"},
		{mail.Envelope{Sender: "", Recipients: []string{"b@example.org", "b@example.org", "c@example.net"}}, "bounce\n"},
		{mail.Envelope{Sender: `\Backslashes!@x`, Recipients: []string{"Hate.The Quoting@y", "owner-@list.example-@[]"}}, ""},
		{testEnv, "no final newline"},
		{testEnv, string(binary)},
	}
	for i, tc := range cases {
		res, err := send(t, &Client{Servers: []string{addr}}, tc.env, tc.body)
		if err != nil || !res.Status.IsAccept() || res.Server != addr {
			t.Fatalf("case %d: %+v, %v", i, res, err)
		}
		if res.Status.Text != "ok queued" {
			t.Errorf("case %d: reply text %q", i, res.Status.Text)
		}
		d := h.deliveries()[i]
		_, msg := stripReceived(t, d.Body)
		if !bytes.Equal(msg, []byte(tc.body)) {
			t.Errorf("case %d: body differs (%d bytes, want %d)", i, len(msg), len(tc.body))
		}
		if d.Env.Sender != tc.env.Sender || strings.Join(d.Env.Recipients, "|") != strings.Join(tc.env.Recipients, "|") {
			t.Errorf("case %d: envelope %+v", i, d.Env)
		}
	}
}

func TestClientStatuses(t *testing.T) {
	for _, st := range []mail.Status{mail.Temp("4.3.0", "disk full"), mail.Perm("5.7.1", "go away")} {
		h := &recorder{status: st}
		s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
		addr := startServer(t, s)
		res, err := send(t, &Client{Servers: []string{addr}}, testEnv, "x\n")
		if err != nil || res.Status.Class != st.Class || res.Status.Code != st.Code || res.Status.Text != st.Text {
			t.Errorf("%v: got %+v, %v", st, res, err)
		}
	}
}

func TestClientFailover(t *testing.T) {
	h := &recorder{}
	s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
	good := startServer(t, s)
	dead := closedAddr(t)
	res, err := send(t, &Client{Servers: []string{"not a server", dead, good}}, testEnv, "x\n")
	if err != nil || !res.Status.IsAccept() || res.Server != good {
		t.Fatalf("%+v, %v", res, err)
	}
}

// TestClientNoFailoverAfterConnect: a server that accepts and then fails
// makes the message temporary; the next server is not tried.
func TestClientNoFailoverAfterConnect(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(net.Conn)
	}{
		{"closes at once", func(c net.Conn) { c.Close() }},
		{"reads, then closes", func(c net.Conn) { readRequest(c); c.Close() }},
		{"reads, then garbage", func(c net.Conn) { readRequest(c); io.WriteString(c, "HTTP/1.0 400 Bad Request\r\n\r\n"); c.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := fakeServer(t, tc.serve)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			cl := &countingListener{Listener: l}
			second := serveOn(t, &Server{Handler: &recorder{}, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}, cl)
			res, err := send(t, &Client{Servers: []string{first, second}}, testEnv, "x\n")
			var te *TransferError
			if !errors.As(err, &te) || te.Server != first || res.Server != first || !res.Status.IsTemporary() {
				t.Fatalf("%+v, %v", res, err)
			}
			if n := cl.n.Load(); n != 0 {
				t.Fatalf("second server was tried (%d connections)", n)
			}
		})
	}
}

func TestClientConnectErrors(t *testing.T) {
	res, err := send(t, &Client{Servers: []string{closedAddr(t), closedAddr(t)}}, testEnv, "x\n")
	var ce *ConnectError
	if !errors.As(err, &ce) || len(ce.Attempts) != 2 || ce.Timeout() || res.Server != "" || !res.Status.IsTemporary() {
		t.Fatalf("refused: %+v, %v", res, err)
	}
	// A connect timeout: qmail-qmqpc's exit 72 rather than 73.
	res, err = send(t, &Client{Servers: []string{closedAddr(t)}, ConnectTimeout: time.Nanosecond}, testEnv, "x\n")
	if !errors.As(err, &ce) || !ce.Timeout() {
		t.Fatalf("timeout: %+v, %v", res, err)
	}
	if _, err := send(t, &Client{}, testEnv, "x\n"); err != ErrNoServers {
		t.Fatalf("no servers: %v", err)
	}
}

func TestClientInvalidEnvelope(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	cl := &countingListener{Listener: l}
	go func() {
		for {
			c, err := cl.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for _, env := range []mail.Envelope{
		{Sender: "a@x"},
		{Sender: "a\x00@x", Recipients: []string{"b@y"}},
		{Sender: "a@x", Recipients: []string{"b@y", strings.Repeat("c", 1000)}},
	} {
		res, err := send(t, &Client{Servers: []string{l.Addr().String()}}, env, "x\n")
		if !errors.Is(err, ErrInvalidEnvelope) || !res.Status.IsPermanent() {
			t.Errorf("%q: %+v, %v", env, res, err)
		}
	}
	if n := cl.n.Load(); n != 0 {
		t.Fatalf("%d connections for invalid envelopes", n)
	}
}

func TestClientUnixSocket(t *testing.T) {
	h := &recorder{}
	path := filepath.Join(t.TempDir(), "qmqp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, &Server{Handler: h, ErrorLog: (&logBuffer{}).logger()}, l)
	res, err := send(t, &Client{Servers: []string{"unix:" + path}}, testEnv, "Subject: x\n\nvia unix\n")
	if err != nil || !res.Status.IsAccept() || res.Server != "unix:"+path {
		t.Fatalf("%+v, %v", res, err)
	}
	if _, msg := stripReceived(t, h.deliveries()[0].Body); string(msg) != "Subject: x\n\nvia unix\n" {
		t.Fatalf("body %q", msg)
	}
}

// readRequest reads one complete QMQP request without parsing its inside:
// the outer length, that many bytes and the comma.
func readRequest(c net.Conn) ([]byte, error) {
	br := bufio.NewReader(c)
	digits, err := br.ReadString(':')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSuffix(digits, ":"))
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n+1)
	_, err = io.ReadFull(br, buf)
	return buf, err
}

// fakeServer runs serve on every connection to a new loopback listener.
func fakeServer(t *testing.T, serve func(net.Conn)) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(time.Minute))
			serve(c)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

func TestClientReplyParsing(t *testing.T) {
	for _, tc := range []struct {
		reply   string
		class   mail.Class
		text    string
		wantErr error // nil: a reply; ErrBadReply; io.EOF stands for "no reply"
	}{
		{"3:Kok,", mail.Accept, "ok", nil},
		{ns("Kok 1700000000 qp 4242 xyz"), mail.Accept, "ok 1700000000 qp 4242 xyz", nil},
		{"3:Kok,trailing bytes", mail.Accept, "ok", nil},
		{"10:Zbusy now.,", mail.Temporary, "busy now.", nil},
		{ns("Dno such (#5.1.1)"), mail.Permanent, "no such", nil},
		{"2:D\x00,", mail.Permanent, "\x00", nil},
		{"", mail.Temporary, "", io.EOF},
		{"3:Ko", mail.Temporary, "", io.EOF},
		{"5:Kok,", mail.Temporary, "", io.EOF},
		{"3:Kok;", mail.Temporary, "", ErrBadReply},
		{"3:Kok", mail.Temporary, "", io.EOF},
		{"garbage", mail.Temporary, "", ErrBadReply},
		{"03:Kok,", mail.Temporary, "", ErrBadReply},
		{":,", mail.Temporary, "", ErrBadReply},
		{"0:,", mail.Temporary, "", ErrBadReply},
		{"1:X,", mail.Temporary, "", ErrBadReply},
		{"2:ok,", mail.Temporary, "", ErrBadReply},
		{"10241:K", mail.Temporary, "", ErrBadReply},
		{"999999999999999999999999:K", mail.Temporary, "", ErrBadReply},
	} {
		addr := fakeServer(t, func(c net.Conn) {
			readRequest(c)
			io.WriteString(c, tc.reply)
		})
		res, err := send(t, &Client{Servers: []string{addr}}, testEnv, "x\n")
		if res.Status.Class != tc.class {
			t.Errorf("reply %q: class %v, want %v", tc.reply, res.Status.Class, tc.class)
		}
		switch tc.wantErr {
		case nil:
			if err != nil || res.Status.Text != tc.text {
				t.Errorf("reply %q: %+v, %v", tc.reply, res, err)
			}
		case ErrBadReply:
			if !errors.Is(err, ErrBadReply) || res.Status != mail.StatusBadReply {
				t.Errorf("reply %q: %+v, %v; want ErrBadReply", tc.reply, res, err)
			}
		default:
			var te *TransferError
			if !errors.As(err, &te) || res.Status != mail.StatusNoReply {
				t.Errorf("reply %q: %+v, %v; want no reply", tc.reply, res, err)
			}
		}
	}
}

// TestClientEarlyReply: Postfix answers D before it has read the request
// and closes; the client's write then fails, but the reply is still read
// and trusted, unless it is K.
func TestClientEarlyReply(t *testing.T) {
	big := strings.Repeat("x", 8<<20)
	for _, tc := range []struct {
		reply string
		class mail.Class
		err   error
	}{
		{ns("DError: message too large (#5.3.4)"), mail.Permanent, nil},
		{ns("ZError: try later"), mail.Temporary, nil},
		{"3:Kok,", mail.Temporary, ErrEarlyAccept},
	} {
		addr := fakeServer(t, func(c net.Conn) {
			br := bufio.NewReader(c)
			br.ReadString(':')
			io.WriteString(c, tc.reply)
			// Close with most of the request unread: the kernel resets.
		})
		res, err := send(t, &Client{Servers: []string{addr}}, testEnv, big)
		if res.Status.Class != tc.class || !errors.Is(err, tc.err) {
			t.Errorf("early %q: %+v, %v", tc.reply, res, err)
		}
	}
}

func TestClientTimeoutsAndCancel(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	addr := fakeServer(t, func(c net.Conn) {
		readRequest(c)
		select {
		case <-hold:
		case <-time.After(time.Minute):
		}
	})
	res, err := send(t, &Client{Servers: []string{addr}, IOTimeout: 50 * time.Millisecond}, testEnv, "x\n")
	var te *TransferError
	if !errors.As(err, &te) || !isTimeout(err) || res.Status != mail.StatusNoReply {
		t.Fatalf("IO timeout: %+v, %v", res, err)
	}

	hold2 := make(chan struct{})
	defer close(hold2)
	addr2 := fakeServer(t, func(c net.Conn) {
		readRequest(c)
		<-hold2
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	res, err = (&Client{Servers: []string{addr2}}).Send(ctx, testEnv, strings.NewReader("x\n"), 2)
	if !errors.As(err, &te) || res.Status.IsAccept() {
		t.Fatalf("cancel: %+v, %v", res, err)
	}
}

// TestClientBodyLengthMismatch: a body that is shorter or longer than the
// declared size aborts the transfer; the server sees a truncated or
// malformed request and commits nothing.
func TestClientBodyLengthMismatch(t *testing.T) {
	h := &recorder{}
	s := &Server{Handler: h, Allow: loopback, ErrorLog: (&logBuffer{}).logger()}
	addr := startServer(t, s)
	c := &Client{Servers: []string{addr}}
	ctx := context.Background()
	for _, size := range []int64{5, 20} {
		res, err := c.Send(ctx, testEnv, strings.NewReader("ten bytes\n"), size)
		if err == nil || res.Status.IsAccept() {
			t.Errorf("size %d: %+v, %v", size, res, err)
		}
	}
	res, err := c.Send(ctx, testEnv, iotestErrReader{}, 10)
	if err == nil || !strings.Contains(err.Error(), "reading message") || res.Status.IsAccept() {
		t.Errorf("failing body: %+v, %v", res, err)
	}
	// Everything the server saw was cut short; nothing was committed.
	s.Shutdown(context.Background())
	if n := h.committed(); n != 0 {
		t.Fatalf("%d commits", n)
	}
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }
