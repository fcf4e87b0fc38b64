package mail

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestAppendDate822(t *testing.T) {
	tests := []struct {
		t    time.Time
		want string
	}{
		// qmail's own example (qmail's date822fmt.c).
		{time.Date(1995, 9, 26, 4, 46, 54, 0, time.UTC), "26 Sep 1995 04:46:54 -0000"},
		// One-digit day, no padding; midnight.
		{time.Date(2024, 1, 5, 0, 0, 0, 0, time.UTC), "5 Jan 2024 00:00:00 -0000"},
		{time.Date(2024, 12, 31, 23, 59, 59, 999_999_999, time.UTC), "31 Dec 2024 23:59:59 -0000"},
		// Always GMT, written as -0000 whatever the zone.
		{time.Date(2024, 3, 1, 1, 30, 0, 0, time.FixedZone("CET", 3600)), "1 Mar 2024 00:30:00 -0000"},
		{time.Date(2024, 2, 29, 22, 0, 0, 0, time.FixedZone("X", -5*3600)), "1 Mar 2024 03:00:00 -0000"},
	}
	for _, tt := range tests {
		if got := string(AppendDate822([]byte("x"), tt.t)); got != "x"+tt.want {
			t.Errorf("AppendDate822(%v) = %q, want %q", tt.t, got, tt.want)
		}
	}
	for m := time.January; m <= time.December; m++ {
		got := string(AppendDate822(nil, time.Date(2000, m, 10, 0, 0, 0, 0, time.UTC)))
		if want := "10 " + m.String()[:3] + " 2000 00:00:00 -0000"; got != want {
			t.Errorf("month %d: %q", m, got)
		}
	}
}

func TestReceived(t *testing.T) {
	now := time.Date(1995, 9, 26, 4, 46, 54, 0, time.UTC)
	const date = "26 Sep 1995 04:46:54 -0000"
	tcp := func(s string) net.Addr {
		a, err := net.ResolveTCPAddr("tcp", s)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	tests := []struct {
		name string
		c    ConnInfo
		want string
	}{
		{"QMTP IPv4", ConnInfo{Proto: "QMTP", RemoteAddr: tcp("192.0.2.7:40000"), LocalAddr: tcp("192.0.2.1:209"), RemoteHost: "client.example", LocalHost: "hub.example"},
			"Received: from client.example (192.0.2.7)\n  by hub.example with QMTP; " + date + "\n"},
		{"unknown host, local IP", ConnInfo{Proto: "QMQP", RemoteAddr: tcp("192.0.2.7:40000"), LocalAddr: tcp("192.0.2.1:628")},
			"Received: from unknown (192.0.2.7)\n  by 192.0.2.1 with QMQP; " + date + "\n"},
		{"IPv6", ConnInfo{Proto: "QMTP", RemoteAddr: tcp("[2001:db8::7]:40000"), LocalHost: "hub.example"},
			"Received: from unknown (2001:db8::7)\n  by hub.example with QMTP; " + date + "\n"},
		{"IPv4-mapped IPv6", ConnInfo{Proto: "QMTP", RemoteAddr: &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, LocalHost: "hub.example"},
			"Received: from unknown (192.0.2.7)\n  by hub.example with QMTP; " + date + "\n"},
		{"unix socket", ConnInfo{Proto: "QMQP", RemoteAddr: &net.UnixAddr{Name: "@", Net: "unix"}, LocalAddr: &net.UnixAddr{Name: "/run/qmgate/qmqp.sock", Net: "unix"}, LocalHost: "hub.example"},
			"Received: from unknown (unknown)\n  by hub.example with QMQP; " + date + "\n"},
		{"nothing known", ConnInfo{},
			"Received: from unknown (unknown)\n  by unknown with unknown; " + date + "\n"},
		{"ident info", ConnInfo{Proto: "QMTP", RemoteAddr: tcp("192.0.2.7:1"), RemoteHost: "client.example", RemoteInfo: "joe", LocalHost: "hub.example"},
			"Received: from client.example (joe@192.0.2.7)\n  by hub.example with QMTP; " + date + "\n"},
		{"HELO differs", ConnInfo{Proto: "SMTP", RemoteAddr: tcp("192.0.2.7:1"), RemoteHost: "client.example", Helo: "liar.example", LocalHost: "hub.example"},
			"Received: from client.example (HELO liar.example) (192.0.2.7)\n  by hub.example with SMTP; " + date + "\n"},
		{"HELO equal", ConnInfo{Proto: "SMTP", RemoteAddr: tcp("192.0.2.7:1"), RemoteHost: "client.example", Helo: "client.example", LocalHost: "hub.example"},
			"Received: from client.example (192.0.2.7)\n  by hub.example with SMTP; " + date + "\n"},
		{"HELO equal but for case", ConnInfo{Proto: "SMTP", RemoteAddr: tcp("192.0.2.7:1"), RemoteHost: "client.example", Helo: "Client.EXAMPLE", LocalHost: "hub.example"},
			"Received: from client.example (192.0.2.7)\n  by hub.example with SMTP; " + date + "\n"},
		{"HELO, unknown host", ConnInfo{Proto: "ESMTPS", RemoteAddr: tcp("192.0.2.7:1"), Helo: "[192.0.2.7]", LocalHost: "hub.example"},
			"Received: from unknown (HELO [192.0.2.7]) (192.0.2.7)\n  by hub.example with ESMTPS; " + date + "\n"},
		{"HELO and info", ConnInfo{Proto: "SMTP", RemoteAddr: tcp("192.0.2.7:1"), RemoteHost: "h.example", RemoteInfo: "joe", Helo: "x.example", LocalHost: "hub.example"},
			"Received: from h.example (HELO x.example) (joe@192.0.2.7)\n  by hub.example with SMTP; " + date + "\n"},
		{"unsafe bytes", ConnInfo{Proto: "SMTP", RemoteAddr: tcp("192.0.2.7:1"), RemoteHost: "a b", RemoteInfo: "j\x00e", Helo: "evil\r\nX-Injected: yes (x)", LocalHost: "hub_1.example"},
			"Received: from a?b (HELO evil??X-Injected:?yes??x?) (j?e@192.0.2.7)\n  by hub?1.example with SMTP; " + date + "\n"},
		{"safe punctuation kept", ConnInfo{Proto: "QMTP", RemoteAddr: tcp("192.0.2.7:1"), RemoteHost: "a.b-c+d/e=f:g%h@i[j]", LocalHost: "hub.example"},
			"Received: from a.b-c+d/e=f:g%h@i[j] (192.0.2.7)\n  by hub.example with QMTP; " + date + "\n"},
		{"UTF-8 replaced per byte", ConnInfo{Proto: "QMTP", RemoteAddr: tcp("192.0.2.7:1"), RemoteHost: "bü.example", LocalHost: "hub.example"},
			"Received: from b??.example (192.0.2.7)\n  by hub.example with QMTP; " + date + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.Received(now); got != tt.want {
				t.Errorf("Received =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestReceivedBounded(t *testing.T) {
	c := ConnInfo{Proto: "SMTP", Helo: strings.Repeat("h", 1<<20), RemoteHost: strings.Repeat("r", 1<<20), RemoteInfo: strings.Repeat("i", 1<<20)}
	got := c.Received(time.Unix(0, 0))
	if len(got) > 4*MaxReceivedField+200 {
		t.Fatalf("Received is %d bytes", len(got))
	}
	if strings.Count(got, "\n") != 2 || !strings.HasSuffix(got, "\n") {
		t.Fatalf("not two lines: %q", got)
	}
}

func TestConnInfoIPs(t *testing.T) {
	c := ConnInfo{RemoteAddr: &net.UDPAddr{IP: net.ParseIP("192.0.2.9"), Port: 1}, LocalAddr: strAddr("[2001:db8::1]:25")}
	if c.RemoteIP().String() != "192.0.2.9" || c.LocalIP().String() != "2001:db8::1" {
		t.Fatalf("IPs = %v %v", c.RemoteIP(), c.LocalIP())
	}
	c = ConnInfo{RemoteAddr: strAddr("not an address")}
	if c.RemoteIP().IsValid() || c.LocalIP().IsValid() {
		t.Fatal("invalid address parsed")
	}
}

type strAddr string

func (a strAddr) Network() string { return "test" }
func (a strAddr) String() string  { return string(a) }

func TestConnInfoClient(t *testing.T) {
	for _, tc := range []struct {
		c    *ConnInfo
		want string
	}{
		{&ConnInfo{RemoteAddr: &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}}, "192.0.2.7"},
		{&ConnInfo{RemoteAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1}}, "2001:db8::1"},
		{&ConnInfo{RemoteAddr: &net.UnixAddr{Name: "@", Net: "unix"}}, "local user (unknown uid)"},
		{&ConnInfo{LocalAddr: &net.UnixAddr{Name: "/run/q.sock", Net: "unix"}}, "local user (unknown uid)"},
		{&ConnInfo{}, "unknown"},
		{nil, "unknown"},
	} {
		if got := tc.c.Client(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.c, got, tc.want)
		}
	}
}
