package qmail

import (
	"testing"
	"time"
)

func TestReadEnv(t *testing.T) {
	env := map[string]string{
		"TCPREMOTEIP": "192.0.2.7", "TCPREMOTEPORT": "40000", "TCPREMOTEHOST": "client.example",
		"TCPLOCALIP": "192.0.2.1", "TCPLOCALPORT": "209", "TCPLOCALHOST": "mx.example",
		"RELAYCLIENT": "", "DATABYTES": "1000",
	}
	e := ReadEnv("QMTP", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if !e.RelaySet || e.RelayClient != "" || !e.Conn.RelayClient || !e.DataBytesSet || e.DataBytes != 1000 {
		t.Fatalf("%+v", e)
	}
	got := e.Conn.Received(time.Date(1995, 9, 26, 4, 46, 54, 0, time.UTC))
	want := "Received: from client.example (192.0.2.7)\n  by mx.example with QMTP; 26 Sep 1995 04:46:54 -0000\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	e = ReadEnv("QMQP", func(string) (string, bool) { return "", false })
	if e.RelaySet || e.DataBytesSet {
		t.Fatalf("%+v", e)
	}
	got = e.Conn.Received(time.Date(1995, 9, 26, 4, 46, 54, 0, time.UTC))
	if want := "Received: from unknown (unknown)\n  by unknown with QMQP; 26 Sep 1995 04:46:54 -0000\n"; got != want {
		t.Fatalf("got %q", got)
	}
}
