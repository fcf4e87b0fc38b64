package serve

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// proxyServer serves a listener wrapped for PROXY: each connection gets
// one line back naming the client address it was served under, then the
// first line it sent.
func proxyServer(t *testing.T, p ProxyPolicy) string {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	l := NewProxyListener(inner, p)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, AddrIP(c.RemoteAddr()).String()+"\n")
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					io.WriteString(c, "error: "+err.Error()+"\n")
					return
				}
				io.WriteString(c, line)
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return inner.Addr().String()
}

func header(t *testing.T, version byte, src string) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(version,
		&net.TCPAddr{IP: net.ParseIP(src), Port: 40000}, &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 25})
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// talk connects, sends pre and "hello\n", and returns both reply lines.
func talk(t *testing.T, addr string, pre []byte) (string, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(append(pre, "hello\n"...)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	a, _ := r.ReadString('\n')
	b, _ := r.ReadString('\n')
	return strings.TrimSpace(a), strings.TrimSpace(b)
}

func TestProxyTrusted(t *testing.T) {
	addr := proxyServer(t, ProxyPolicy{From: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Required: true})
	for _, v := range []byte{1, 2} {
		ip, line := talk(t, addr, header(t, v, "192.0.2.7"))
		if ip != "192.0.2.7" || line != "hello" {
			t.Errorf("v%d: served as %q, read %q", v, ip, line)
		}
	}
	// Required: a trusted address without a header is refused.
	if ip, _ := talk(t, addr, nil); ip != "" {
		t.Errorf("no header from a balancer that must send one: served as %q", ip)
	}
}

func TestProxyOptional(t *testing.T) {
	addr := proxyServer(t, ProxyPolicy{From: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	if ip, line := talk(t, addr, nil); ip != "127.0.0.1" || line != "hello" {
		t.Errorf("no header, not required: served as %q, read %q", ip, line)
	}
	if ip, _ := talk(t, addr, header(t, 2, "2001:db8::5")); ip != "2001:db8::5" {
		t.Errorf("v2 IPv6: served as %q", ip)
	}
	// A malformed header is refused.
	if ip, _ := talk(t, addr, []byte("PROXY TCP4 nonsense\r\n")); ip != "" {
		t.Errorf("bad header: served as %q", ip)
	}
}

func TestProxyUntrusted(t *testing.T) {
	addr := proxyServer(t, ProxyPolicy{From: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	for _, v := range []byte{1, 2} {
		ip, line := talk(t, addr, header(t, v, "192.0.2.7"))
		if ip != "127.0.0.1" || !strings.Contains(line, ErrProxyUntrusted.Error()) {
			t.Errorf("v%d from an untrusted address: served as %q, read %q", v, ip, line)
		}
	}
	// Without a header the untrusted client is served as itself, and
	// bytes that only start like a header are passed on.
	for _, pre := range []string{"", "PROX", "PROXZ "} {
		ip, line := talk(t, addr, []byte(pre))
		if ip != "127.0.0.1" || line != strings.TrimSpace(pre+"hello") {
			t.Errorf("%q: served as %q, read %q", pre, ip, line)
		}
	}
}

func TestMaybeHeader(t *testing.T) {
	for _, c := range []struct {
		in          string
		maybe, sure bool
	}{
		{"", true, false}, {"P", true, false}, {"PROXY", true, true}, {"PROXZ", false, false},
		{"\r\n\r\n\x00", true, false}, {"\r\n\r\n\x00\r\nQUIT\n", true, true}, {"\r\nX", false, false},
		{"EHLO", false, false},
	} {
		m, s := maybeHeader([]byte(c.in))
		if m != c.maybe || s != c.sure {
			t.Errorf("%q: maybe %v sure %v", c.in, m, s)
		}
	}
}
