package mtasts

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	p, err := Parse([]byte("version: STSv1\r\nmode: enforce\r\nmx: mx1.example.net\r\nmx: *.example.net\r\nmax_age: 604800\r\nextension: ignored\r\n"))
	if err != nil || p.Mode != ModeEnforce || len(p.MX) != 2 || p.MaxAge != 7*24*time.Hour {
		t.Fatalf("%+v %v", p, err)
	}
	if p, err := Parse([]byte("version: STSv1\nmode: none\nmax_age: 86400\n")); err != nil || p.Mode != ModeNone {
		t.Errorf("mode none: %+v %v", p, err)
	}
	if p, _ := Parse([]byte("version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 1\n")); p.Mode != ModeTesting {
		t.Errorf("repeated mode: the first counts, got %s", p.Mode)
	}
	for _, bad := range []string{
		"",
		"mode: enforce\nmx: a.example\nmax_age: 1\n",
		"version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
		"version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",
		"version: STSv1\nmode: enforce\nmax_age: 1\n",
		"version: STSv1\nmode: enforce\nmx: a.example\n",
		"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
		"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
		"version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
		"version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n",
		"version: STSv1\nmode enforce\n",
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestAllows(t *testing.T) {
	p := Policy{Mode: ModeEnforce, MX: []string{"mx1.example.net", "*.mail.example.net"}}
	for host, want := range map[string]bool{
		"mx1.example.net": true, "MX1.Example.NET.": true, "a.mail.example.net": true,
		"mail.example.net": false, "a.b.mail.example.net": false, "mx2.example.net": false, "mx.evil.example": false,
	} {
		if got := p.Allows(host); got != want {
			t.Errorf("Allows(%s) = %v", host, got)
		}
	}
	for _, m := range []Mode{ModeNone, ""} {
		if !(Policy{Mode: m}).Allows("anything.example") {
			t.Errorf("mode %q refused a host", m)
		}
	}
	if (Policy{Mode: ModeTesting, MX: []string{"a.example"}}).Allows("b.example") {
		t.Error("testing mode: Allows must still say which hosts enforce would refuse")
	}
}

func TestParseTXT(t *testing.T) {
	for _, tt := range []struct {
		recs []string
		id   string
		ok   bool
	}{
		{[]string{"v=STSv1; id=20260101T000000"}, "20260101T000000", true},
		{[]string{"v=spf1 -all", "v=STSv1; id=abc;"}, "abc", true},
		{nil, "", true},
		{[]string{"v=STSv1; id=a", "v=STSv1; id=b"}, "", false},
		{[]string{"v=STSv1; id=" + strings.Repeat("a", 33)}, "", false},
		{[]string{"v=STSv1; id=a-b"}, "", false},
		{[]string{"v=STSv1;"}, "", false},
	} {
		id, err := parseTXT(tt.recs)
		if id != tt.id || (err == nil) != tt.ok {
			t.Errorf("parseTXT(%q) = %q, %v", tt.recs, id, err)
		}
	}
}
