package mtasts

import (
	"context"
	"net"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// startDNS runs a small authoritative DNS server on loopback UDP that answers
// TXT questions from txt (NXDOMAIN for other names) and returns a
// net.Resolver that asks only it.
func startDNS(t *testing.T, txt map[string][]string) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var req dnsmessage.Message
			if err := req.Unpack(buf[:n]); err != nil || len(req.Questions) != 1 {
				continue
			}
			q := req.Questions[0]
			resp := dnsmessage.Message{
				Header:    dnsmessage.Header{ID: req.ID, Response: true, Authoritative: true, RecursionDesired: req.RecursionDesired},
				Questions: req.Questions,
			}
			name := strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")
			recs, ok := txt[name]
			switch {
			case !ok:
				resp.RCode = dnsmessage.RCodeNameError
			case q.Type == dnsmessage.TypeTXT:
				for _, r := range recs {
					resp.Answers = append(resp.Answers, dnsmessage.Resource{
						Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeTXT, Class: dnsmessage.ClassINET, TTL: 60},
						Body:   &dnsmessage.TXTResource{TXT: []string{r}},
					})
				}
			}
			out, err := resp.Pack()
			if err != nil {
				continue
			}
			pc.WriteTo(out, from)
		}
	}()
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

// TestRealDNSServer runs the lookup through Go's own resolver against a DNS
// server on loopback, not through the fake: the record is found, a missing
// name is no policy.
func TestRealDNSServer(t *testing.T) {
	ps, _, clk, _ := setup(t)
	res := startDNS(t, map[string][]string{"_mta-sts.example.net": {"v=spf1 -all", "v=STSv1; id=20261202"}})
	c := newCache(t, ps, res, clk, t.TempDir())
	ps.set("mta-sts.example.net", site{body: enforce})
	p, err := c.Policy(context.Background(), "example.net")
	if err != nil || p.Mode != ModeEnforce || p.ID != "20261202" || !p.Allows("mx1.example.net") || p.Allows("evil.example") {
		t.Fatalf("%+v %v", p, err)
	}
	if p, err := c.Policy(context.Background(), "example.org"); err != nil || p.Active() {
		t.Errorf("NXDOMAIN: %+v %v", p, err)
	}
}
