package testpeer

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func TestDNS(t *testing.T) {
	CheckGoroutines(t, 10*time.Second) // and lets none outlive the test
	d := StartDNS(t, "127.0.0.1")
	d.SetMX("mail.test", &net.MX{Host: "mx.mail.test", Pref: 10})
	d.SetA("mx.mail.test", "127.0.0.9")
	d.SetTXT("_mta-sts.mail.test", "v=STSv1; id=1")
	d.SetFault("broken.test", DNSServFail)
	d.SetFault("empty.test", DNSHealthy)
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", d.Addr)
	}}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	if mx, err := r.LookupMX(ctx, "mail.test"); err != nil || len(mx) != 1 || mx[0].Host != "mx.mail.test." || mx[0].Pref != 10 {
		t.Errorf("MX: %v %v", mx, err)
	}
	if ips, err := r.LookupIP(ctx, "ip4", "mx.mail.test"); err != nil || len(ips) != 1 || !ips[0].Equal(net.IPv4(127, 0, 0, 9)) {
		t.Errorf("A: %v %v", ips, err)
	}
	if txt, err := r.LookupTXT(ctx, "_mta-sts.mail.test"); err != nil || len(txt) != 1 || txt[0] != "v=STSv1; id=1" {
		t.Errorf("TXT: %v %v", txt, err)
	}
	var de *net.DNSError
	if _, err := r.LookupMX(ctx, "unknown.test"); !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("an unknown name: %v, want NXDOMAIN", err)
	}
	if _, err := r.LookupMX(ctx, "broken.test"); !errors.As(err, &de) || de.IsNotFound || !de.IsTemporary {
		t.Errorf("SERVFAIL: %v, want a temporary failure", err)
	}
	if mx, err := r.LookupMX(ctx, "empty.test"); len(mx) != 0 || errors.As(err, &de) && de.IsTemporary {
		t.Errorf("a known name without records: %v %v, want no records", mx, err)
	}
	if d.Queries() == 0 {
		t.Error("no queries counted")
	}
}
