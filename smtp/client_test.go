package smtp

import (
	"context"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// plainClient is a Client for tests against servers without TLS.
func plainClient(t testing.TB) *Client {
	return &Client{TLS: TLSNone, LocalName: "client.test", ErrorLog: quietLog(t)}
}

func dialT(t testing.TB, c *Client, addr string) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cn, err := c.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("Dial %s: %v", addr, err)
	}
	t.Cleanup(func() { cn.Close() })
	return cn
}

func send(t testing.TB, cn *Conn, env mail.Envelope, body io.Reader) ([]mail.Status, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	sts, err := cn.Send(ctx, env, body)
	if len(sts) != len(env.Recipients) {
		t.Fatalf("%d statuses for %d recipients", len(sts), len(env.Recipients))
	}
	return sts, err
}

func wantClasses(t testing.TB, sts []mail.Status, want ...mail.Class) {
	t.Helper()
	for i, st := range sts {
		if st.Class != want[i] {
			t.Errorf("recipient %d: %v, want %v", i, st, want[i])
		}
	}
}

func TestClientWire(t *testing.T) {
	testpeer.CheckGoroutines(t, testTimeout)
	f := newFake(t, func(f *fakeServer) { f.ext = []string{"8BITMIME", "SIZE 100000", "PIPELINING"} })
	cn := dialT(t, plainClient(t), f.addr)
	stored := "Subject: wire\n" +
		"\n" +
		".leading dot\n" +
		"..two dots\n" +
		".\n" +
		"crlf line\r\n" +
		"cr cr lf\r\r\n" +
		"bare\rCR\n" +
		"\n" +
		"last line without LF"
	sts, err := send(t, cn, mail.Envelope{Sender: "Hate.The Quoting@example.com", Recipients: []string{"a@example.net"}}, strings.NewReader(stored))
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, sts, mail.Accept)
	if !strings.Contains(sts[0].Text, "250 2.0.0 queued as 12345") || sts[0].Code != "2.0.0" {
		t.Errorf("status %+v", sts[0])
	}
	want := "Subject: wire\r\n" +
		"\r\n" +
		"..leading dot\r\n" +
		"...two dots\r\n" +
		"..\r\n" +
		"crlf line\r\n" +
		"cr cr lf\r\n" +
		"bare\r\nCR\r\n" +
		"\r\n" +
		"last line without LF\r\n" +
		".\r\n"
	if got := string(f.data()[0]); got != want {
		t.Errorf("on the wire:\n%q\nwant\n%q", got, want)
	}
	cmds := f.commands()
	wantMail := `#1 MAIL FROM:<"Hate.The Quoting"@example.com> BODY=8BITMIME SIZE=` + itoa(len(stored))
	if !contains(cmds, wantMail) {
		t.Errorf("commands %q lack %q", cmds, wantMail)
	}
	if !contains(cmds, "#1 EHLO client.test") {
		t.Errorf("commands %q lack EHLO client.test", cmds)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

func TestClientBodyEdges(t *testing.T) {
	f := newFake(t, nil)
	cn := dialT(t, plainClient(t), f.addr)
	env := mail.Envelope{Sender: "a@b.example", Recipients: []string{"c@d.example"}}
	for _, tc := range []struct{ stored, wire string }{
		{"", "\r\n.\r\n"}, // go-smtp's writer ends an empty message with an empty line
		{"x", "x\r\n.\r\n"},
		{"x\n", "x\r\n.\r\n"},
		{"x\r", "x\r\n.\r\n"},
		{"x\r\r", "x\r\n\r\n.\r\n"},
		{".", "..\r\n.\r\n"},
		{"\n.\n", "\r\n..\r\n.\r\n"},
		{"a\n.\r\nb", "a\r\n..\r\nb\r\n.\r\n"},
	} {
		before := len(f.data())
		if sts, err := send(t, cn, env, strings.NewReader(tc.stored)); err != nil || !sts[0].IsAccept() {
			t.Fatalf("%q: %v %v", tc.stored, sts, err)
		}
		if got := string(f.data()[before]); got != tc.wire {
			t.Errorf("%q went out as %q, want %q", tc.stored, got, tc.wire)
		}
	}
}

// Line ends split across reads of the body are converted the same way.
func TestClientBodySplitReads(t *testing.T) {
	stored := "a\r\nb\r\r\nc\rd\n.e\r"
	want := "a\r\nb\r\nc\r\nd\r\n.e\r\n"
	var out strings.Builder
	if err := writeBody(&out, oneByte{strings.NewReader(stored)}); err != nil {
		t.Fatal(err)
	}
	if out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
}

type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

func TestClientPerRecipient(t *testing.T) {
	f := newFake(t, func(f *fakeServer) {
		f.rcptReply = func(arg string) string {
			switch {
			case strings.Contains(arg, "nouser"):
				return "550 5.1.1 no such user"
			case strings.Contains(arg, "later"):
				return "451 4.2.0 mailbox busy"
			case strings.Contains(arg, "garbage"):
				return "600 what"
			case strings.Contains(arg, "oddcode"):
				return "599 what"
			}
			return "250 2.1.5 ok"
		}
	})
	cn := dialT(t, plainClient(t), f.addr)
	env := mail.Envelope{Sender: "a@b.example", Recipients: []string{"one@d.example", "nouser@d.example", "later@d.example", "two@d.example"}}
	sts, err := send(t, cn, env, strings.NewReader("hi\n"))
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, sts, mail.Accept, mail.Permanent, mail.Temporary, mail.Accept)
	if st := sts[1]; st.Code != "5.1.1" || st.SMTP != 550 || st.Text != "remote host said: 550 5.1.1 no such user" {
		t.Errorf("refused recipient: %+v", st)
	}
	if st := sts[2]; st.Code != "4.2.0" || !strings.Contains(st.Text, "mailbox busy") {
		t.Errorf("deferred recipient: %+v", st)
	}
	if n := len(f.data()); n != 1 {
		t.Errorf("%d messages sent", n)
	}

	// No recipient accepted: no DATA, and RSET before the next transaction.
	env = mail.Envelope{Sender: "a@b.example", Recipients: []string{"nouser@d.example", "later@d.example"}}
	sts, err = send(t, cn, env, strings.NewReader("hi\n"))
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, sts, mail.Permanent, mail.Temporary)
	if n := len(f.data()); n != 1 {
		t.Errorf("DATA sent without recipients")
	}
	sts, _ = send(t, cn, mail.Envelope{Sender: "a@b.example", Recipients: []string{"x@d.example"}}, strings.NewReader("hi\n"))
	wantClasses(t, sts, mail.Accept)
	cmds := f.commands()
	if !contains(cmds, "#1 RSET") {
		t.Errorf("no RSET after the abandoned transaction: %q", cmds)
	}
	// A reply code outside 2xx-5xx is temporary, never permanent.
	sts, _ = send(t, cn, mail.Envelope{Sender: "a@b.example", Recipients: []string{"garbage@d.example", "oddcode@d.example"}}, strings.NewReader("hi\n"))
	wantClasses(t, sts, mail.Temporary, mail.Temporary)
}

func TestClientDataRejected(t *testing.T) {
	f := newFake(t, func(f *fakeServer) {
		f.endReply = func(raw []byte) string {
			if strings.Contains(string(raw), "virus") {
				return "554 5.7.1 message content rejected"
			}
			return "451 4.3.0 try again"
		}
	})
	cn := dialT(t, plainClient(t), f.addr)
	env := mail.Envelope{Sender: "a@b.example", Recipients: []string{"c@d.example", "e@f.example"}}
	sts, err := send(t, cn, env, strings.NewReader("virus\n"))
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, sts, mail.Permanent, mail.Permanent)
	if sts[0].Code != "5.7.1" || !strings.Contains(sts[0].Text, "content rejected") {
		t.Errorf("status %+v", sts[0])
	}
	sts, _ = send(t, cn, env, strings.NewReader("fine\n"))
	wantClasses(t, sts, mail.Temporary, mail.Temporary)

	// A 2xx where 354 belongs is a server out of step, not an acceptance.
	f3 := newFake(t, func(f *fakeServer) { f.dataReply = "250 2.0.0 sure, whatever" })
	cn3 := dialT(t, plainClient(t), f3.addr)
	sts, _ = send(t, cn3, env, strings.NewReader("x\n"))
	wantClasses(t, sts, mail.Temporary, mail.Temporary)
	if !cn3.Broken() {
		t.Error("connection still in use after a reply out of step")
	}

	// DATA itself refused.
	f2 := newFake(t, func(f *fakeServer) { f.dataReply = "554 5.5.1 no valid recipients" })
	cn2 := dialT(t, plainClient(t), f2.addr)
	sts, _ = send(t, cn2, env, strings.NewReader("x\n"))
	wantClasses(t, sts, mail.Permanent, mail.Permanent)
	if cn2.Broken() {
		t.Error("connection broken by a refused DATA")
	}
}

func TestClientConnectionDies(t *testing.T) {
	testpeer.CheckGoroutines(t, testTimeout)
	env := mail.Envelope{Sender: "a@b.example", Recipients: []string{"c@d.example"}}
	// Larger than the socket buffers, so that the writes themselves fail
	// when the server closes in the middle.
	body := strings.Repeat("a fairly long line of message text\n", 100000)
	for _, tc := range []struct {
		name      string
		configure func(*fakeServer)
		text      string
	}{
		{"mid-data", func(f *fakeServer) { f.closeInData = 100 }, "died"},
		{"after-data", func(f *fakeServer) { f.closeAfterData = true }, "possible duplicate"},
		{"rcpt-421", func(f *fakeServer) { f.rcptReply = func(string) string { return "421 4.3.2 shutting down" } }, "shutting down"},
		{"rcpt-garbage", func(f *fakeServer) { f.rcptReply = func(string) string { return "hello there" } }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.configure)
			cn := dialT(t, plainClient(t), f.addr)
			sts, err := send(t, cn, env, strings.NewReader(body))
			if err == nil || !cn.Broken() {
				t.Errorf("err %v, broken %v", err, cn.Broken())
			}
			wantClasses(t, sts, mail.Temporary)
			if !strings.Contains(sts[0].Text, tc.text) {
				t.Errorf("status %+v, want %q", sts[0], tc.text)
			}
			// A broken connection refuses further messages politely.
			sts, err = send(t, cn, env, strings.NewReader("x\n"))
			if err == nil {
				t.Error("Send on a broken connection succeeded")
			}
			wantClasses(t, sts, mail.Temporary)
		})
	}
}

func TestClientTimeoutAndCancel(t *testing.T) {
	testpeer.CheckGoroutines(t, testTimeout)
	env := mail.Envelope{Sender: "a@b.example", Recipients: []string{"c@d.example"}}
	f := newFake(t, func(f *fakeServer) { f.stallAfterData = true })
	c := plainClient(t)
	c.DataTimeout = 200 * time.Millisecond
	cn := dialT(t, c, f.addr)
	sts, err := send(t, cn, env, strings.NewReader("x\n"))
	if err == nil {
		t.Error("no error after a timeout")
	}
	wantClasses(t, sts, mail.Temporary)

	// Cancelling the context ends a stalled delivery.
	cn = dialT(t, plainClient(t), f.addr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []mail.Status, 1)
	go func() {
		sts, _ := cn.Send(ctx, env, strings.NewReader("x\n"))
		done <- sts
	}()
	// Wait until the server has the message, then cancel.
	deadline := time.Now().Add(testTimeout)
	for len(f.data()) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("message never arrived")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case sts := <-done:
		wantClasses(t, sts, mail.Temporary)
	case <-time.After(testTimeout):
		t.Fatal("Send did not return after cancel")
	}
	if !cn.Broken() {
		t.Error("cancelled connection not broken")
	}
}

func TestClientVERP(t *testing.T) {
	f := newFake(t, func(f *fakeServer) { f.ext = []string{"SIZE"} })
	cn := dialT(t, plainClient(t), f.addr)
	env := mail.Envelope{Sender: "list-@lists.example-@[]", Recipients: []string{"u1@a.example", "u2@b.example"}}
	// Seekable body.
	sts, err := send(t, cn, env, strings.NewReader("verp body\n"))
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, sts, mail.Accept, mail.Accept)
	// A body that can be read only once goes through a temporary file.
	sts, err = send(t, cn, env, io.MultiReader(strings.NewReader("verp "), strings.NewReader("body\n")))
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, sts, mail.Accept, mail.Accept)
	var mails []string
	for _, c := range f.commands() {
		if strings.HasPrefix(c, "#1 MAIL") {
			mails = append(mails, c)
		}
	}
	want := []string{
		"#1 MAIL FROM:<list-u1=a.example@lists.example> SIZE=10",
		"#1 MAIL FROM:<list-u2=b.example@lists.example> SIZE=10",
		"#1 MAIL FROM:<list-u1=a.example@lists.example> SIZE=10",
		"#1 MAIL FROM:<list-u2=b.example@lists.example> SIZE=10",
	}
	if strings.Join(mails, "\n") != strings.Join(want, "\n") {
		t.Errorf("MAIL commands:\n%s\nwant\n%s", strings.Join(mails, "\n"), strings.Join(want, "\n"))
	}
	for i, d := range f.data() {
		if string(d) != "verp body\r\n.\r\n" {
			t.Errorf("message %d: %q", i, d)
		}
	}
}

func TestClientAddresses(t *testing.T) {
	f := newFake(t, func(f *fakeServer) { f.ext = []string{"SMTPUTF8"} })
	cn := dialT(t, plainClient(t), f.addr)
	env := mail.Envelope{Sender: "", Recipients: []string{"jörg@example.org", "bad\nline@x.example", "plain@x.example"}}
	sts, _ := send(t, cn, env, strings.NewReader("x\n"))
	wantClasses(t, sts, mail.Accept, mail.Permanent, mail.Accept)
	cmds := f.commands()
	if !contains(cmds, "#1 MAIL FROM:<> SMTPUTF8") || !contains(cmds, "#1 RCPT TO:<jörg@example.org>") {
		t.Errorf("commands %q", cmds)
	}

	// Without SMTPUTF8 on the server, only that recipient fails, for good.
	f2 := newFake(t, nil)
	cn2 := dialT(t, plainClient(t), f2.addr)
	env.Recipients = []string{"jörg@example.org", "plain@x.example"}
	sts, _ = send(t, cn2, env, strings.NewReader("x\n"))
	wantClasses(t, sts, mail.Permanent, mail.Accept)
	if sts[0].Code != "5.6.7" {
		t.Errorf("status %+v", sts[0])
	}
	env.Sender = "jörg@example.org"
	sts, _ = send(t, cn2, env, strings.NewReader("x\n"))
	wantClasses(t, sts, mail.Permanent, mail.Permanent)
}

func TestClientTLSRequired(t *testing.T) {
	testpeer.CheckGoroutines(t, testTimeout)
	c := &Client{LocalName: "client.test", TLSConfig: clientTLSConfig(t), ErrorLog: quietLog(t)}
	ctx := context.Background()

	// Not offered: no delivery in plaintext.
	f := newFake(t, nil)
	_, err := c.Dial(ctx, f.addr)
	if st := mail.StatusOf(err); !st.IsTemporary() || st.Code != "4.7.4" {
		t.Errorf("STARTTLS missing: %v", err)
	}
	for _, cmd := range f.commands() {
		if strings.Contains(cmd, "MAIL") {
			t.Errorf("plaintext MAIL sent: %q", cmd)
		}
	}
	// Offered, but the certificate is not trusted.
	f2 := newFake(t, func(f *fakeServer) { f.ext = []string{"STARTTLS"}; f.tlsConfig = serverTLSConfig(t) })
	untrusting := *c
	untrusting.TLSConfig = nil
	_, err = untrusting.Dial(ctx, f2.addr)
	if st := mail.StatusOf(err); !st.IsTemporary() || st.Code != "4.7.5" {
		t.Errorf("untrusted certificate: %v", err)
	}
	// Trusted: delivered over TLS, with the EHLO name before and after.
	cn := dialT(t, c, f2.addr)
	if cn.TLS() == nil {
		t.Fatal("no TLS")
	}
	sts, _ := send(t, cn, mail.Envelope{Sender: "a@b.example", Recipients: []string{"c@d.example"}}, strings.NewReader("x\n"))
	wantClasses(t, sts, mail.Accept)
	var ehlos int
	for _, cmd := range f2.commands() {
		if strings.HasPrefix(cmd, "#2 EHLO client.test") {
			ehlos++
		}
	}
	if ehlos != 2 {
		t.Errorf("want EHLO client.test before and after STARTTLS: %q", f2.commands())
	}
	// STARTTLS refused: no plaintext fallback either.
	f3 := newFake(t, func(f *fakeServer) { f.ext = []string{"STARTTLS"} })
	if _, err := c.Dial(ctx, f3.addr); !mail.StatusOf(err).IsTemporary() {
		t.Errorf("refused STARTTLS: %v", err)
	}
}

func TestClientTLSOpportunistic(t *testing.T) {
	ctx := context.Background()
	c := &Client{TLS: TLSOpportunistic, LocalName: "client.test", ErrorLog: quietLog(t)}
	env := mail.Envelope{Sender: "a@b.example", Recipients: []string{"c@d.example"}}

	// A broken handshake: connect again and deliver in plaintext.
	f := newFake(t, func(f *fakeServer) { f.ext = []string{"STARTTLS"}; f.breakTLS = true })
	cn, err := c.Dial(ctx, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	if cn.TLS() != nil {
		t.Error("TLS after a broken handshake?")
	}
	sts, _ := send(t, cn, env, strings.NewReader("x\n"))
	wantClasses(t, sts, mail.Accept)
	f.mu.Lock()
	conns := f.conns
	f.mu.Unlock()
	if conns != 2 {
		t.Errorf("%d connections, want 2 (TLS attempt, plaintext)", conns)
	}
	// Plaintext injected after the STARTTLS reply: treated like a failed
	// handshake, never read as if it came through TLS.
	fi := newFake(t, func(f *fakeServer) { f.ext = []string{"STARTTLS"}; f.injectTLS = true })
	cni := dialT(t, c, fi.addr)
	if cni.TLS() != nil {
		t.Error("TLS after injection?")
	}
	sts, _ = send(t, cni, env, strings.NewReader("x\n"))
	wantClasses(t, sts, mail.Accept)
	// An untrusted certificate is fine for opportunistic TLS.
	f2 := newFake(t, func(f *fakeServer) { f.ext = []string{"STARTTLS"}; f.tlsConfig = serverTLSConfig(t) })
	cn2 := dialT(t, c, f2.addr)
	if cn2.TLS() == nil {
		t.Error("no TLS with opportunistic policy and a self-made certificate")
	}
	// STARTTLS refused: plaintext on the same connection.
	f3 := newFake(t, func(f *fakeServer) { f.ext = []string{"STARTTLS"} })
	cn3 := dialT(t, c, f3.addr)
	sts, _ = send(t, cn3, env, strings.NewReader("x\n"))
	wantClasses(t, sts, mail.Accept)
	// Not offered: plaintext.
	f4 := newFake(t, nil)
	cn4 := dialT(t, c, f4.addr)
	sts, _ = send(t, cn4, env, strings.NewReader("x\n"))
	wantClasses(t, sts, mail.Accept)
}

func TestClientGreetingRefused(t *testing.T) {
	f := newFake(t, func(f *fakeServer) { f.greeting = "554 5.7.1 go away" })
	_, err := plainClient(t).Dial(context.Background(), f.addr)
	if st := mail.StatusOf(err); !st.IsTemporary() || !strings.Contains(st.Text, "go away") {
		t.Errorf("refused greeting: %+v", st)
	}
	_, err = plainClient(t).Dial(context.Background(), "127.0.0.1:1")
	if st := mail.StatusOf(err); !st.IsTemporary() || st.Code != "4.4.1" {
		t.Errorf("connection refused: %+v", st)
	}
	_, err = plainClient(t).Dial(context.Background(), "ftp://x")
	if err == nil {
		t.Error("ftp:// accepted")
	}
}

// The client against qmgate's own server: STARTTLS with a test CA, AUTH
// PLAIN, SMTPUTF8, and several messages over one connection.
func TestClientToServer(t *testing.T) {
	testpeer.CheckGoroutines(t, testTimeout)
	h := &recHandler{}
	srv := &Server{
		Handler:          h,
		TLSConfig:        serverTLSConfig(t),
		Auth:             passwords{"relay": "pw"},
		RequireAuth:      true,
		AuthFailureDelay: time.Millisecond,
	}
	addr := startServer(t, srv)
	c := &Client{TLSConfig: clientTLSConfig(t), LocalName: "client.test", Username: "relay", Password: "pw", ErrorLog: quietLog(t)}
	cn := dialT(t, c, "smtp://"+addr)
	if cn.TLS() == nil {
		t.Fatal("no TLS")
	}
	for i := 0; i < 3; i++ {
		env := mail.Envelope{Sender: "Hate.The Quoting@example.com", Recipients: []string{"a@x.example", "ü@x.example"}}
		sts, err := send(t, cn, env, strings.NewReader("Subject: "+itoa(i)+"\n\n.dot\nbody"))
		if err != nil {
			t.Fatal(err)
		}
		wantClasses(t, sts, mail.Accept, mail.Accept)
	}
	msgs := h.messages()
	if len(msgs) != 3 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[2]
	if m.env.Sender != "Hate.The Quoting@example.com" || m.env.Recipients[1] != "ü@x.example" {
		t.Errorf("envelope %+v", m.env)
	}
	if got := stripReceived(t, m.body); got != "Subject: 2\n\n.dot\nbody\n" {
		t.Errorf("body %q", got)
	}
	if m.info.AuthUser != "relay" || m.info.Proto != "UTF8SMTPSA" {
		t.Errorf("ConnInfo %+v", m.info)
	}

	// A wrong password: temporary, the message stays queued.
	bad := *c
	bad.Password = "nope"
	_, err := bad.Dial(context.Background(), "smtp://"+addr)
	if st := mail.StatusOf(err); !st.IsTemporary() || !strings.Contains(st.Text, "535") {
		t.Errorf("bad password: %+v", st)
	}
	// Credentials are not sent without TLS.
	plain := *c
	plain.TLS = TLSNone
	_, err = plain.Dial(context.Background(), addr)
	if st := mail.StatusOf(err); !st.IsTemporary() || !strings.Contains(st.Text, "without TLS") {
		t.Errorf("AUTH without TLS: %+v", st)
	}
}

func TestClientImplicitTLS(t *testing.T) {
	h := &recHandler{}
	addr := startServerTLS(t, &Server{Handler: h, TLSConfig: serverTLSConfig(t)}, true)
	c := &Client{TLSConfig: clientTLSConfig(t), LocalName: "client.test", ErrorLog: quietLog(t)}
	cn := dialT(t, c, "smtps://"+addr)
	if cn.TLS() == nil {
		t.Fatal("no TLS")
	}
	sts, _ := send(t, cn, mail.Envelope{Sender: "a@b.example", Recipients: []string{"c@d.example"}}, strings.NewReader("x\n"))
	wantClasses(t, sts, mail.Accept)
	if p := h.messages()[0].info.Proto; p != "ESMTPS" {
		t.Errorf("Proto %q", p)
	}
}

func TestParseTarget(t *testing.T) {
	for in, want := range map[string]target{
		"mx.example":            {host: "mx.example", addr: "mx.example:25"},
		"mx.example:2525":       {host: "mx.example", addr: "mx.example:2525"},
		"smtp://mx.example":     {host: "mx.example", addr: "mx.example:25"},
		"smtps://mx.example":    {host: "mx.example", addr: "mx.example:465", implicit: true},
		"smtp://[::1]:587":      {host: "::1", addr: "[::1]:587"},
		"[::1]":                 {host: "::1", addr: "[::1]:25"},
		"smtps://10.0.0.1:4650": {host: "10.0.0.1", addr: "10.0.0.1:4650", implicit: true},
	} {
		got, err := parseTarget(in)
		if err != nil || got != want {
			t.Errorf("%q: %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "http://x", "smtp://", "x:0", "x:99999", "a b:25"} {
		if _, err := parseTarget(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
