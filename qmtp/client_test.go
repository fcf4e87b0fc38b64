package qmtp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/netstring"
)

func msg(body string, crlf bool, sender string, rcpts ...string) *Message {
	return &Message{
		Envelope: mail.Envelope{Sender: sender, Recipients: rcpts},
		Body:     strings.NewReader(body),
		Size:     int64(len(body)),
		CRLF:     crlf,
	}
}

// wantClass checks the classes of a message's statuses: one letter per
// recipient.
func wantClass(t *testing.T, what string, got []mail.Status, classes string) {
	t.Helper()
	var b strings.Builder
	for _, st := range got {
		b.WriteByte(st.Class.Letter())
	}
	if b.String() != classes {
		t.Errorf("%s: classes %s, want %s (%v)", what, b.String(), classes, got)
	}
}

// TestClientPipelineDepth sends hundreds of packages on one connection in one
// Send, with mixed per-recipient outcomes, then reuses the connection.
func TestClientPipelineDepth(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srv := newTestServer(nil)
	var mu sync.Mutex
	bodies := map[string]string{} // sender -> stored body
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		b, err := io.ReadAll(req.Body)
		env, eerr := req.Envelope()
		if err != nil || eerr != nil {
			return nil
		}
		mu.Lock()
		bodies[env.Sender] = string(b[strings.Index(string(b), "-0000\n")+6:])
		mu.Unlock()
		return answer(env.Recipients)
	})
	addr := startServer(t, srv, false)
	cn, err := (&Client{}).Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()

	for round := range 2 {
		const depth = 150
		var msgs []*Message
		var want []string
		for i := range depth {
			var rcpts []string
			var classes string
			for j := 0; j <= i%4; j++ {
				r := fmt.Sprintf("%c%d.%d@x", "kzd"[(i+j)%3], i, j)
				rcpts = append(rcpts, r)
				classes += string("KZD"[(i+j)%3])
			}
			body := fmt.Sprintf("Subject: %d\n\n%s\n", i, strings.Repeat("y", i*37))
			m := msg(body, false, fmt.Sprintf("s%d.%d@x", round, i), rcpts...)
			if i%5 == 0 {
				m = msg(strings.ReplaceAll(body, "\n", "\r\n"), true, m.Envelope.Sender, rcpts...)
			}
			msgs = append(msgs, m)
			want = append(want, classes)
		}
		res, err := cn.Send(context.Background(), msgs...)
		if err != nil {
			t.Fatalf("round %d: Send: %v", round, err)
		}
		for i := range msgs {
			wantClass(t, fmt.Sprintf("round %d message %d", round, i), res[i], want[i])
			for j, st := range res[i] {
				if st.IsAccept() && st.Text != fmt.Sprintf("ok %d", j) {
					t.Errorf("message %d rcpt %d: text %q", i, j, st.Text)
				}
				if st.IsPermanent() && st.Code != "5.1.1" || st.IsTemporary() && st.Code != "4.2.0" {
					t.Errorf("message %d rcpt %d: %+v", i, j, st)
				}
			}
			mu.Lock()
			b := bodies[msgs[i].Envelope.Sender]
			mu.Unlock()
			if wantBody := fmt.Sprintf("Subject: %d\n\n%s\n", i, strings.Repeat("y", i*37)); b != wantBody {
				t.Errorf("message %d stored as %q", i, b)
			}
		}
		if cn.Err() != nil {
			t.Fatalf("connection unusable after round %d: %v", round, cn.Err())
		}
	}
}

// TestClientNoDeadlock: replies far larger than any socket buffer while the
// packages are still being written. A client that wrote everything before
// reading would hang here.
func TestClientNoDeadlock(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srv := newTestServer(func(s *Server) { s.MaxRecipients = 5000 })
	long := mail.OK(strings.Repeat("long reply text ", 30))
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		env, _ := req.Envelope()
		st := make([]mail.Status, len(env.Recipients))
		for i := range st {
			st[i] = long
		}
		return st
	})
	addr := startServer(t, srv, false)
	rcpts := make([]string, 5000)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf("r%d@x", i)
	}
	var msgs []*Message
	for range 10 {
		msgs = append(msgs, msg(strings.Repeat("z", 1<<20), false, "", rcpts...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Send(ctx, addr, msgs...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range res {
		for _, st := range res[i] {
			if !st.IsAccept() {
				t.Fatalf("message %d: %v", i, st)
			}
		}
	}
}

// fakeServer accepts one connection and runs script on it.
func fakeServer(t *testing.T, script func(c net.Conn, r *netstring.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		l.Close()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(long))
		script(c, netstring.NewReader(c))
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return l.Addr().String()
}

// readPackage reads one package and returns its recipient count.
func readPackage(r *netstring.Reader) (int, error) {
	if _, err := r.ReadBytes(16 << 20); err != nil {
		return 0, err
	}
	if _, err := r.ReadBytes(1 << 10); err != nil {
		return 0, err
	}
	list, err := r.ReadBytes(1 << 20)
	if err != nil {
		return 0, err
	}
	lr := netstring.NewReader(bytes.NewReader(list))
	n := 0
	for {
		if _, err := lr.ReadBytes(1 << 10); err == io.EOF {
			return n, nil
		} else if err != nil {
			return n, err
		}
		n++
	}
}

// waitClose blocks until the client closes its side.
func waitClose(c net.Conn) { io.Copy(io.Discard, c) }

func TestClientAgainstBadServers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		script  func(c net.Conn, r *netstring.Reader)
		msgs    []*Message
		want    []string // classes per message
		errIs   error
		broken  bool
		timeout time.Duration
	}{
		{
			name: "closes mid-reply",
			script: func(c net.Conn, r *netstring.Reader) {
				readPackage(r)
				io.WriteString(c, "5:Kok 0,5:Kok")
			},
			msgs: []*Message{msg("x", false, "", "a@x", "b@x"), msg("y", false, "", "c@x")},
			want: []string{"KZ", "Z"}, broken: true,
		},
		{
			name:   "garbage",
			script: answerAndWait("hello there\r\n"),
			msgs:   []*Message{msg("x", false, "", "a@x", "b@x")},
			want:   []string{"ZZ"}, errIs: ErrBadReply, broken: true,
		},
		{
			name:   "reply with a bad letter",
			script: answerAndWait("3:Xok,3:Kok,"),
			msgs:   []*Message{msg("x", false, "", "a@x", "b@x")},
			want:   []string{"ZZ"}, errIs: ErrBadReply, broken: true,
		},
		{
			name:   "empty reply",
			script: answerAndWait("3:Dno,0:,"),
			msgs:   []*Message{msg("x", false, "", "a@x", "b@x")},
			want:   []string{"DZ"}, errIs: ErrBadReply, broken: true,
		},
		{
			name: "reply too long",
			script: func(c net.Conn, r *netstring.Reader) {
				readPackage(r)
				netstring.Write(c, append([]byte("K"), bytes.Repeat([]byte("x"), MaxReplyBytes)...))
				waitClose(c)
			},
			msgs: []*Message{msg("x", false, "", "a@x")},
			want: []string{"Z"}, errIs: ErrBadReply, broken: true,
		},
		{
			name: "fewer replies than recipients, then stall",
			script: func(c net.Conn, r *netstring.Reader) {
				readPackage(r)
				io.WriteString(c, "5:Kok 0,") // mailfront answers once per package
				waitClose(c)
			},
			msgs: []*Message{msg("x", false, "", "a@x", "b@x", "c@x"), msg("y", false, "", "d@x")},
			want: []string{"KZZ", "Z"}, errIs: errDeadline, broken: true,
			timeout: 300 * time.Millisecond,
		},
		{
			name: "stall before any reply",
			script: func(c net.Conn, r *netstring.Reader) {
				waitClose(c)
			},
			msgs: []*Message{msg("x", false, "", "a@x")},
			want: []string{"Z"}, errIs: errDeadline, broken: true,
			timeout: 300 * time.Millisecond,
		},
		{
			name: "closes without a word",
			script: func(c net.Conn, r *netstring.Reader) {
				readPackage(r)
			},
			msgs: []*Message{msg("x", false, "", "a@x", "b@x")},
			want: []string{"ZZ"}, broken: true,
		},
		{
			name:   "more replies than recipients",
			script: answerAndWait("3:Kok,3:Kok,"),
			msgs:   []*Message{msg("x", false, "", "a@x")},
			want:   []string{"K"}, broken: true,
		},
		{
			name:   "D is permanent, Z temporary, whatever the text",
			script: answerAndWait("17:Dgone (#4.1.1) \x00\xff,3:Zok,2:K\x01,"),
			msgs:   []*Message{msg("x", false, "", "a@x", "b@x", "c@x")},
			want:   []string{"DZK"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testpeer.CheckGoroutines(t, long)
			addr := fakeServer(t, tc.script)
			cl := &Client{IOTimeout: tc.timeout}
			if cl.IOTimeout == 0 {
				cl.IOTimeout = long
			}
			cn, err := cl.Dial(context.Background(), addr)
			if err != nil {
				t.Fatal(err)
			}
			defer cn.Close()
			res, err := cn.Send(context.Background(), tc.msgs...)
			for i := range tc.msgs {
				wantClass(t, fmt.Sprintf("message %d", i), res[i], tc.want[i])
			}
			if tc.errIs != nil && !errors.Is(err, tc.errIs) {
				t.Errorf("error %v, want %v", err, tc.errIs)
			}
			if cn.Broken() != tc.broken {
				t.Errorf("Broken() = %v (%v), want %v", cn.Broken(), cn.Err(), tc.broken)
			}
		})
	}
}

// answerAndWait is a server script: it reads a package, answers raw and
// waits for the client to hang up.
func answerAndWait(raw string) func(net.Conn, *netstring.Reader) {
	return func(c net.Conn, r *netstring.Reader) {
		readPackage(r)
		io.WriteString(c, raw)
		waitClose(c)
	}
}

func TestClientStaleConnection(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	addr := fakeServer(t, func(c net.Conn, r *netstring.Reader) {
		readPackage(r)
		io.WriteString(c, "3:Kok,")
		// and hang up while the client is idle
	})
	cn, err := (&Client{}).Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	res, err := cn.Send(context.Background(), msg("x", false, "", "a@x"))
	if err != nil || !res[0][0].IsAccept() {
		t.Fatalf("first Send: %v %v", res, err)
	}
	// Wait until the server's close has arrived: the next Send must notice
	// it before sending.
	deadline := time.Now().Add(long)
	for {
		res, err = cn.Send(context.Background(), msg("y", false, "", "b@x", "c@x"))
		wantClass(t, "after hang-up", res[0], "ZZ")
		if errors.Is(err, ErrConnBroken) {
			break
		}
		if err == nil || time.Now().After(deadline) {
			t.Fatalf("second Send: %v", err)
		}
	}
	if !cn.Broken() {
		t.Error("connection not marked broken")
	}
}

func TestClientBodyMismatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		bad  *Message
	}{
		{"short", &Message{Envelope: mail.Envelope{Recipients: []string{"b@x"}}, Body: strings.NewReader("12345"), Size: 10}},
		{"long", &Message{Envelope: mail.Envelope{Recipients: []string{"b@x"}}, Body: strings.NewReader("12345"), Size: 3}},
		{"failing", &Message{Envelope: mail.Envelope{Recipients: []string{"b@x"}}, Body: io.MultiReader(strings.NewReader("12"), errReader{}), Size: 10}},
		{"empty with data", &Message{Envelope: mail.Envelope{Recipients: []string{"b@x"}}, Body: strings.NewReader("1"), Size: 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testpeer.CheckGoroutines(t, long)
			srv := newTestServer(nil)
			var mu sync.Mutex
			var accepted []string
			srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
				env, err := req.Envelope()
				if err != nil {
					return nil
				}
				mu.Lock()
				accepted = append(accepted, env.Recipients...)
				mu.Unlock()
				return answer(env.Recipients)
			})
			addr := startServer(t, srv, false)
			cn, err := (&Client{IOTimeout: long}).Dial(context.Background(), addr)
			if err != nil {
				t.Fatal(err)
			}
			defer cn.Close()
			res, err := cn.Send(context.Background(), msg("ok", false, "", "a@x"), tc.bad, msg("later", false, "", "c@x"))
			if !errors.Is(err, ErrBody) {
				t.Errorf("error %v, want ErrBody", err)
			}
			wantClass(t, "before", res[0], "K")
			wantClass(t, "bad", res[1], "Z")
			wantClass(t, "after", res[2], "Z")
			if !cn.Broken() {
				t.Error("connection still usable")
			}
			mu.Lock()
			defer mu.Unlock()
			if strings.Join(accepted, ",") != "a@x" {
				t.Errorf("server accepted %v", accepted)
			}
		})
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestClientUsageErrors(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srv := newTestServer(nil)
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		env, _ := req.Envelope()
		return answer(env.Recipients)
	})
	addr := startServer(t, srv, false)
	res, err := Send(context.Background(), addr,
		msg("a", false, "", "a@x"),
		msg("b", false, ""),
		&Message{Envelope: mail.Envelope{Recipients: []string{"q@x"}}, Size: -1},
		&Message{Envelope: mail.Envelope{Recipients: []string{"q@x"}}, Size: 4},
		&Message{Envelope: mail.Envelope{Recipients: []string{"e@x"}}}, // nil body, size 0: empty message
		msg("c", false, "", "c@x"))
	if !errors.Is(err, ErrNoRecipients) || !errors.Is(err, ErrBadMessage) {
		t.Errorf("error %v", err)
	}
	wantClass(t, "0", res[0], "K")
	if len(res[1]) != 0 {
		t.Errorf("zero-recipient message: %v", res[1])
	}
	wantClass(t, "2", res[2], "Z")
	wantClass(t, "3", res[3], "Z")
	wantClass(t, "4", res[4], "K")
	wantClass(t, "5", res[5], "K")
}

func TestClientContextCancel(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	addr := fakeServer(t, func(c net.Conn, r *netstring.Reader) { waitClose(c) })
	cn, err := (&Client{IOTimeout: time.Hour}).Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res, err := cn.Send(ctx, msg("x", false, "", "a@x", "b@x"))
	wantClass(t, "cancelled", res[0], "ZZ")
	if !errors.Is(err, context.DeadlineExceeded) || !cn.Broken() {
		t.Errorf("error %v, broken %v", err, cn.Broken())
	}
}

func TestClientDialFailure(t *testing.T) {
	addr := testpeer.FreePort(t) // nothing listens there
	res, err := Send(context.Background(), addr, msg("x", false, "", "a@x", "b@x"))
	var de *DialError
	if !errors.As(err, &de) {
		t.Fatalf("error %v, want *DialError", err)
	}
	want := mail.StatusConnectFailed.WithCause("connection refused")
	if res[0][0] != want || res[0][1] != want {
		t.Errorf("statuses %v", res)
	}
}

func TestClientSessionTimeout(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	addr := fakeServer(t, func(c net.Conn, r *netstring.Reader) { waitClose(c) })
	cn, err := (&Client{SessionTimeout: 50 * time.Millisecond}).Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	deadline := time.Now().Add(long)
	for cn.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("session never expired")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(cn.Err(), ErrSessionExpired) {
		t.Fatalf("Err = %v", cn.Err())
	}
	res, err := cn.Send(context.Background(), msg("x", false, "", "a@x"))
	wantClass(t, "expired", res[0], "Z")
	if !errors.Is(err, ErrSessionExpired) {
		t.Errorf("error %v", err)
	}
}

func TestClientCloseDuringSend(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	got := make(chan struct{})
	addr := fakeServer(t, func(c net.Conn, r *netstring.Reader) {
		readPackage(r)
		close(got)
		waitClose(c)
	})
	cn, err := (&Client{}).Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		<-got
		cn.Close()
	}()
	res, err := cn.Send(context.Background(), msg("x", false, "", "a@x"))
	wantClass(t, "closed", res[0], "Z")
	if err == nil || !cn.Broken() {
		t.Errorf("error %v, broken %v", err, cn.Broken())
	}
}

func TestClientCancelledBeforeSend(t *testing.T) {
	testpeer.CheckGoroutines(t, long)
	srv := newTestServer(nil)
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		env, _ := req.Envelope()
		return answer(env.Recipients)
	})
	addr := startServer(t, srv, false)
	cn, err := (&Client{}).Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := cn.Send(ctx, msg("x", false, "", "a@x"), nil)
	wantClass(t, "cancelled", res[0], "Z")
	if res[1] != nil || !errors.Is(err, context.Canceled) || !errors.Is(err, ErrBadMessage) {
		t.Errorf("res %v, error %v", res, err)
	}
	// Nothing was sent, so the connection is as good as before.
	if cn.Broken() {
		t.Fatalf("connection broken: %v", cn.Err())
	}
	res, err = cn.Send(context.Background(), msg("x", false, "", "a@x"))
	if err != nil {
		t.Fatal(err)
	}
	wantClass(t, "after", res[0], "K")
}

// TestClientRepliedPerMessage: Replied reports each message once, as soon as
// its replies are in, in order, with the statuses Send returns; a message
// without recipients is reported too.
func TestClientRepliedPerMessage(t *testing.T) {
	srv := newTestServer(nil)
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		env, _ := req.Envelope()
		return answer(env.Recipients)
	})
	addr := startServer(t, srv, false)
	var c Client
	cn, err := c.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	var got [][]mail.Status
	var order []int
	var msgs []*Message
	for i := 0; i < 20; i++ {
		m := &Message{Envelope: mail.Envelope{Sender: "s@x", Recipients: []string{fmt.Sprintf("r%d@x", i), "d@x"}},
			Body: strings.NewReader("x\n"), Size: 2}
		if i == 7 {
			m.Envelope.Recipients = nil
			m.Body, m.Size = nil, 0
		}
		m.Replied = func(st []mail.Status) { order = append(order, i); got = append(got, st) }
		msgs = append(msgs, m)
	}
	res, _ := cn.Send(context.Background(), msgs...)
	if len(order) != 20 {
		t.Fatalf("Replied called %d times for 20 messages: %v", len(order), order)
	}
	seen := map[int]bool{}
	for k, i := range order {
		if seen[i] {
			t.Fatalf("message %d reported twice", i)
		}
		seen[i] = true
		if fmt.Sprint(got[k]) != fmt.Sprint(res[i]) {
			t.Fatalf("message %d: Replied %v, Send returned %v", i, got[k], res[i])
		}
	}
	// The answered ones in the order their replies came: pipelined order.
	var answered []int
	for _, i := range order {
		if i != 7 {
			answered = append(answered, i)
		}
	}
	if !slices.IsSorted(answered) {
		t.Fatalf("answered messages reported out of order: %v", answered)
	}
}

// TestClientRepliedAfterFailure: when the connection dies, the unanswered
// messages are still reported, with temporary failures.
func TestClientRepliedAfterFailure(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		// Answer the first package's one recipient, then hang up.
		netstring.NewReader(c).ReadBytes(1 << 20)
		io.WriteString(c, "2:Kx,")
		c.Close()
	}()
	var c Client
	cn, err := c.Dial(context.Background(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	reports := map[int][]mail.Status{}
	var msgs []*Message
	for i := 0; i < 3; i++ {
		m := &Message{Envelope: mail.Envelope{Sender: "s@x", Recipients: []string{"r@x"}}, Body: strings.NewReader("x\n"), Size: 2}
		m.Replied = func(st []mail.Status) { reports[i] = st }
		msgs = append(msgs, m)
	}
	cn.Send(context.Background(), msgs...)
	if len(reports) != 3 {
		t.Fatalf("%d of 3 messages reported", len(reports))
	}
	if !reports[0][0].IsAccept() {
		t.Fatalf("first message: %v", reports[0])
	}
	for i := 1; i < 3; i++ {
		if reports[i][0].Class != mail.Temporary {
			t.Fatalf("message %d after the hang-up: %v, want temporary", i, reports[i])
		}
	}
}
