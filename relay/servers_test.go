package relay

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/config"
)

// TestServerLimitsWired: the connection keys of [limits] and of each
// listener's section reach the three servers.
func TestServerLimitsWired(t *testing.T) {
	doc := `
[limits]
first_timeout = "7s"
min_data_rate = 100
max_unix_conns = 9
client_ipv6_prefix = 56
exempt = ["10.1.0.0/16"]
[qmqp]
max_unix_conns = 3
[smtp]
first_timeout = "5s"
min_data_rate = 200
`
	cfg, err := config.Parse("test.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	exempt := netip.MustParseAddr("10.1.2.3")
	other := netip.MustParseAddr("10.2.2.3")

	qt := newQMTPServer(cfg, nil, nil)
	if qt.FirstTimeout != 7*time.Second || qt.MinDataRate != 100 || qt.MaxUnixConns != 9 || qt.IPv6PrefixLen != 56 {
		t.Errorf("qmtp: first %v, rate %d, unix %d, v6 /%d", qt.FirstTimeout, qt.MinDataRate, qt.MaxUnixConns, qt.IPv6PrefixLen)
	}
	if qt.Exempt == nil || !qt.Exempt(exempt) || qt.Exempt(other) {
		t.Error("qmtp: limits.exempt not applied to max_conns_per_ip")
	}
	qq := newQMQPServer(cfg, nil, nil)
	if qq.FirstTimeout != 7*time.Second || qq.MinDataRate != 100 || qq.MaxUnixConns != 3 || qq.IPv6PrefixLen != 56 {
		t.Errorf("qmqp: first %v, rate %d, unix %d, v6 /%d", qq.FirstTimeout, qq.MinDataRate, qq.MaxUnixConns, qq.IPv6PrefixLen)
	}
	h := startHub(t, doc).hub
	for _, s := range []struct {
		name  string
		first time.Duration
		rate  int64
		unix  int
		v6    int
	}{
		{"smtp", h.smtpSrv.FirstTimeout, h.smtpSrv.MinDataRate, h.smtpSrv.MaxUnixConns, h.smtpSrv.IPv6PrefixLen},
		{"submission", h.subSrv.FirstTimeout, h.subSrv.MinDataRate, h.subSrv.MaxUnixConns, h.subSrv.IPv6PrefixLen},
	} {
		if s.first != 5*time.Second || s.rate != 200 || s.unix != 9 || s.v6 != 56 {
			t.Errorf("%s: first %v, rate %d, unix %d, v6 /%d", s.name, s.first, s.rate, s.unix, s.v6)
		}
	}
	if h.smtpSrv.Exempt == nil || !h.smtpSrv.Exempt(exempt) {
		t.Error("smtp: limits.exempt not applied to max_conns_per_ip")
	}
}

// TestFirstTimeoutConfigured: a short [smtp] first_timeout closes a client
// that says nothing after the greeting with the 421 timeout reply, and a
// short [qmtp] one closes a QMTP client that sends no package, long before
// the 30 s default would (the clients' own deadline is shorter than that).
func TestFirstTimeoutConfigured(t *testing.T) {
	h := startHub(t, `
rcpthosts = ["example.net"]
[smtp]
listen = ["127.0.0.1:0"]
first_timeout = "1s"
[qmtp]
listen = ["127.0.0.1:0"]
first_timeout = "1s"
[[route]]
domains = ["*"]
via = "discard:"
`)
	c, err := net.Dial("tcp", h.addr("smtp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "220 ") {
		t.Fatalf("greeting %q, %v", l, err)
	}
	l, err := br.ReadString('\n')
	if err != nil || l != "421 4.4.2 timeout, closing connection\r\n" {
		t.Fatalf("after a silent first second: %q, %v; want the 421 timeout reply", l, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("connection not closed after the 421: %v", err)
	}

	q, err := net.Dial("tcp", h.addr("qmtp"))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	q.SetDeadline(time.Now().Add(20 * time.Second))
	if n, err := q.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("QMTP client without a package: read %d bytes, %v; want the connection closed", n, err)
	}
}
