package qmail

import (
	"reflect"
	"testing"
)

func TestParseQMQPServers(t *testing.T) {
	in := []string{
		"192.0.2.1",
		"192.0.2.2 hub two, the backup",
		"192.0.2.3,junk",
		"192.0.2.4:2628",
		"192.0.2.5:junk",
		"192.0.2.6.7",
		"hub.example.net",
		"hub.example.net:7628",
		"2001:db8::1",
		"[2001:db8::2]:2628",
		"[2001:db8::3]",
		"fe80::1%eth0",
		"   192.0.2.8   ",
		"not a server!",
		"300.1.1.1",
		"12345",
		"host:0",
		"-bad",
		"::%[", // found by FuzzParseQMQPServers: a zone with a bracket
		"[fe80::1%]]:628",
	}
	want := []string{
		"192.0.2.1:628",
		"192.0.2.2:628",
		"192.0.2.3:628",
		"192.0.2.4:2628",
		"192.0.2.5:628",
		"192.0.2.6:628",
		"hub.example.net:628",
		"hub.example.net:7628",
		"[2001:db8::1]:628",
		"[2001:db8::2]:2628",
		"[2001:db8::3]:628",
		"[fe80::1%eth0]:628",
		"192.0.2.8:628",
	}
	wantSkipped := []string{"not a server!", "300.1.1.1", "12345", "host:0", "-bad", "::%[", "[fe80::1%]]:628"}
	got, skipped := ParseQMQPServers(in)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("servers:\n got %q\nwant %q", got, want)
	}
	if !reflect.DeepEqual(skipped, wantSkipped) {
		t.Errorf("skipped:\n got %q\nwant %q", skipped, wantSkipped)
	}
}
