package relay

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
)

func TestParseDropInReceived(t *testing.T) {
	at := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	tcp := &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4000}
	for _, tc := range []struct {
		name        string
		head        string
		proto, host string
	}{
		{"qmtpd", (&mail.ConnInfo{Proto: "QMTP", RemoteAddr: tcp, LocalHost: "hub.test"}).Received(at), "QMTP", "192.0.2.7"},
		{"ident", (&mail.ConnInfo{Proto: "QMTP", RemoteAddr: tcp, RemoteInfo: "joe", RemoteHost: "c.test"}).Received(at), "QMTP", "192.0.2.7"},
		{"qmqpd", (&mail.ConnInfo{Proto: "QMQP", RemoteAddr: tcp}).Received(at), "QMQP", "192.0.2.7"},
		{"smtp", (&mail.ConnInfo{Proto: "ESMTPSA", RemoteAddr: tcp, Helo: "x"}).Received(at), "SMTP", "192.0.2.7"},
		{"ipv6", (&mail.ConnInfo{Proto: "QMTPS", RemoteAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8::7")}}).Received(at), "QMTP", "2001:db8::7"},
		{"unknown address", (&mail.ConnInfo{Proto: "QMTP"}).Received(at), "", ""},
		{"unknown protocol", (&mail.ConnInfo{Proto: "HTTP", RemoteAddr: tcp}).Received(at), "", ""},
		{"sendmail's line", "Received: (qmgate sendmail 4242 invoked by uid 33); 5 Mar 2024 14:07:09 -0000\n", "", ""},
		{"not first", "Subject: x\n" + (&mail.ConnInfo{Proto: "QMTP", RemoteAddr: tcp}).Received(at), "", ""},
		{"cut short", "Received: from unknown (192.0.2.7)\n  by hub with QMTP", "", ""},
	} {
		proto, host, ok := parseDropInReceived([]byte(tc.head + "Subject: x\n\nbody\n"))
		if ok != (tc.proto != "") || proto != tc.proto || host != tc.host {
			t.Errorf("%s: got %q %q %v, want %q %q", tc.name, proto, host, ok, tc.proto, tc.host)
		}
	}
}

// dropInOrigin believes the Received line only from root, the daemon's own
// user and dropin_users; the body reads the same either way.
func TestDropInOriginTrust(t *testing.T) {
	head := (&mail.ConnInfo{Proto: "QMTP", RemoteAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7")}}).Received(time.Now())
	own := (&mail.ConnInfo{Proto: "QMQP", RemoteAddr: &Peer{UID: 1}, LocalHost: "hub.test"}).Received(time.Now())
	msg := own + head + "Subject: x\n\nbody\n"
	stranger := os.Geteuid() + 1000
	for _, tc := range []struct {
		name  string
		peer  net.Addr
		users []string
		want  string
	}{
		{"daemon's user", &Peer{UID: os.Geteuid(), User: "me"}, nil, "QMTP 192.0.2.7"},
		{"root", &Peer{UID: 0, User: "root"}, nil, "QMTP 192.0.2.7"},
		{"named drop-in user", &Peer{UID: stranger, User: "qmaild"}, []string{"qmaild"}, "QMTP 192.0.2.7"},
		{"stranger", &Peer{UID: stranger, User: "mallory"}, []string{"qmaild"}, "QMQP uid"},
		{"tcp client", &net.TCPAddr{IP: net.ParseIP("198.51.100.1")}, nil, "QMQP 198.51.100.1"},
	} {
		c := &mail.ConnInfo{Proto: "QMQP", RemoteAddr: tc.peer}
		ctx, body := dropInOrigin(context.Background(), c, tc.users, strings.NewReader(msg))
		o := originOf(ctx, "QMQP", c)
		if got := o.proto + " " + o.client; !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: origin %q, want %q", tc.name, got, tc.want)
		}
		if b, _ := io.ReadAll(body); string(b) != msg {
			t.Errorf("%s: body changed: %q", tc.name, b)
		}
	}
}

func TestClientName(t *testing.T) {
	for _, tc := range []struct {
		c    *mail.ConnInfo
		want string
	}{
		{&mail.ConnInfo{RemoteAddr: &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}}, "192.0.2.7"},
		{&mail.ConnInfo{RemoteAddr: &Peer{UID: 1000, User: "alice"}}, "uid 1000 (alice)"},
		{&mail.ConnInfo{RemoteAddr: &net.UnixAddr{Name: "@", Net: "unix"}}, "local user (unknown uid)"},
		{&mail.ConnInfo{LocalAddr: &net.UnixAddr{Name: "/run/q.sock", Net: "unix"}}, "local user (unknown uid)"},
		{nil, "unknown"},
	} {
		if got := tc.c.Client(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.c, got, tc.want)
		}
	}
}

// Mail a qmtpd drop-in hands to the daemon's socket is logged with the
// protocol and client the drop-in saw, and who relayed it; a session
// without AUTH logs no auth key; every line spells the protocol one way.
func TestHubLogsDropInOrigin(t *testing.T) {
	u := me(t)
	h := startHub(t, `
hostname = "hub.test"
[qmqp]
listen = ["unix:DIR/qmqp.sock"]
[[route]]
domains = ["*"]
via = "discard:"
`)
	head := (&mail.ConnInfo{Proto: "QMTP", RemoteAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7")}, LocalHost: "edge.test"}).Received(time.Now())
	body := head + "Subject: relayed\n\nx\n"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := qmqp.Send(ctx, []string{"unix:" + filepath.Join(h.dir, "qmqp.sock")},
		mail.Envelope{Sender: "s@example.com", Recipients: []string{"r@example.org"}}, strings.NewReader(body), int64(len(body)))
	if err != nil || !res.Status.IsAccept() {
		t.Fatalf("%v %v", res.Status, err)
	}
	log := h.logText()
	var line string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "msg=accepted") {
			line = l
		}
	}
	want := `client=192.0.2.7 proto=QMTP relayed_by="uid ` + u.Uid + ` (` + u.Username + `)"`
	if !strings.Contains(line, want) || strings.Contains(line, "auth=") {
		t.Fatalf("acceptance line %q, want %s and no auth", line, want)
	}
	for _, bad := range []string{"proto=smtp", "proto=qmqp", "proto=qmtp", "proto=ESMTP", "proto=QMTPS"} {
		if strings.Contains(log, bad) {
			t.Errorf("log spells %s:\n%s", bad, log)
		}
	}
}
