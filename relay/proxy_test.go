package relay

import (
	"bufio"
	"context"
	"fmt"
	"net"
	netsmtp "net/smtp"
	"path/filepath"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmtp"
)

// dialProxied connects to addr and sends a PROXY header of the given
// version naming src as the client.
func dialProxied(t *testing.T, addr string, version byte, src string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	h := proxyproto.HeaderProxyFromAddrs(version, &net.TCPAddr{IP: net.ParseIP(src), Port: 40000}, c.RemoteAddr())
	if _, err := h.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	return c
}

func netstr(s string) string { return fmt.Sprintf("%d:%s,", len(s), s) }

// smallMessage is a message from s@x.test to rcpt.
func smallMessage(rcpt, body string) *qmtp.Message {
	return &qmtp.Message{Envelope: mail.Envelope{Sender: "s@x.test", Recipients: []string{rcpt}}, Body: strings.NewReader(body), Size: int64(len(body))}
}

// TestHubProxyProtocol: behind a trusted balancer, QMTP, QMQP and SMTP
// clients are known by the address the PROXY header (v1 and v2) names:
// that address alone may relay, and it is the one in the Received line.
// The same header from an address not trusted to send one is refused.
func TestHubProxyProtocol(t *testing.T) {
	const real = "192.0.2.7"
	h := startHub(t, `
hostname = "hub.test"
rcpthosts = ["example.net"]
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["192.0.2.7"]
proxy_from = ["127.0.0.0/8"]
proxy_required = true
[qmqp]
listen = ["127.0.0.1:0"]
allow = ["192.0.2.7"]
proxy_from = ["127.0.0.0/8"]
proxy_required = true
[smtp]
listen = ["127.0.0.1:0"]
relay_clients = ["192.0.2.7"]
proxy_from = ["127.0.0.0/8"]
[[route]]
domains = ["*"]
via = "maildir:DIR/md"
`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, v := range []byte{1, 2} {
		// QMTP.
		rcpt := fmt.Sprintf("qmtpv%d", v)
		cn := (&qmtp.Client{}).NewConn(dialProxied(t, h.addr("qmtp"), v, real))
		res, err := cn.Send(ctx, smallMessage(rcpt+"@other.org", "Subject: qmtp\n\nx\n"))
		cn.Close()
		if err != nil || !res[0][0].IsAccept() {
			t.Fatalf("QMTP v%d: %v %v", v, res, err)
		}
		// QMQP.
		rcpt = fmt.Sprintf("qmqpv%d", v)
		c := dialProxied(t, h.addr("qmqp"), v, real)
		fmt.Fprint(c, netstr(netstr("Subject: qmqp\n\nx\n")+netstr("s@x.test")+netstr(rcpt+"@other.org")))
		reply, _ := bufio.NewReader(c).ReadString(',')
		c.Close()
		if !strings.Contains(reply, ":K") {
			t.Fatalf("QMQP v%d: %q", v, reply)
		}
		// SMTP.
		rcpt = fmt.Sprintf("smtpv%d", v)
		sc, err := netsmtp.NewClient(dialProxied(t, h.addr("smtp"), v, real), "hub.test")
		if err != nil {
			t.Fatalf("SMTP v%d: %v", v, err)
		}
		if err := sc.Hello("client.test"); err != nil {
			t.Fatal(err)
		}
		if err := sc.Mail("s@x.test"); err != nil {
			t.Fatal(err)
		}
		if err := sc.Rcpt(rcpt + "@other.org"); err != nil {
			t.Fatalf("SMTP v%d relay: %v", v, err)
		}
		w, err := sc.Data()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(w, "Subject: smtp\r\n\r\nx\r\n")
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		sc.Quit()
	}
	for _, proto := range []string{"qmtp", "qmqp", "smtp"} {
		for _, v := range []int{1, 2} {
			user := fmt.Sprintf("%sv%d", proto, v)
			var got []string
			testpeer.Poll(30*time.Second, 20*time.Millisecond, func() bool {
				got = maildirFiles(t, filepath.Join(h.dir, "md"), "other.org", user)
				return len(got) > 0
			})
			if len(got) != 1 {
				t.Fatalf("%s: %d messages", user, len(got))
			}
			if !strings.Contains(got[0], "("+real+")") || strings.Contains(got[0], "127.0.0.1") {
				t.Errorf("%s: Received line does not name the real client:\n%s", user, got[0])
			}
		}
	}

	// Without a header, on a listener that requires one, the balancer's
	// own connection is refused.
	res, err := qmtp.Send(ctx, h.addr("qmtp"), smallMessage("a@other.org", "x\n"))
	if err == nil && res[0][0].IsAccept() {
		t.Error("a connection without a header was served on a listener that requires one")
	}
}

// TestHubProxyUntrusted: a PROXY header from an address outside
// proxy_from is refused, and that client is not served under the address
// it claimed.
func TestHubProxyUntrusted(t *testing.T) {
	h := startHub(t, `
hostname = "hub.test"
rcpthosts = ["example.net"]
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["192.0.2.7"]
proxy_from = ["10.0.0.0/8"]
[[route]]
domains = ["*"]
via = "discard:"
`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cn := (&qmtp.Client{}).NewConn(dialProxied(t, h.addr("qmtp"), 2, "192.0.2.7"))
	defer cn.Close()
	res, err := cn.Send(ctx, smallMessage("a@other.org", "x\n"))
	if err == nil && res[0][0].IsAccept() {
		t.Fatal("a PROXY header from an untrusted address was believed")
	}
	if !strings.Contains(h.logText(), "not trusted") {
		t.Errorf("refusal not logged:\n%s", h.logText())
	}
}
