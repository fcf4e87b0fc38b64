package qmail

import (
	"bytes"
	"errors"
	"net"
	"reflect"
	"testing"
)

// FuzzReadEnvelope: any input is either a qmail-queue exit code or an
// envelope that encodes back to the bytes it came from.
func FuzzReadEnvelope(f *testing.F) {
	for _, s := range []string{"Fa@x\x00Tb@y\x00\x00", "F\x00\x00", "", "X", "Fa\x00Tb", "Fa@x\x00Tb\x00Tc\x00\x00rest"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		env, err := ReadEnvelope(bytes.NewReader(in), 100)
		if err != nil {
			var ee *EnvelopeError
			if !errors.As(err, &ee) || (ee.Code != ExitAddressTooLong && ee.Code != ExitEnvelopeFormat && ee.Code != ExitReadError) {
				t.Fatalf("error without a qmail-queue exit code: %v", err)
			}
			return
		}
		out := AppendEnvelope(nil, env)
		if !bytes.HasPrefix(in, out) {
			t.Fatalf("%q re-encodes as %q", in, out)
		}
		again, err := ReadEnvelope(bytes.NewReader(out), 0)
		if err != nil || !reflect.DeepEqual(again, env) {
			t.Fatalf("round trip: %+v %v", again, err)
		}
	})
}

// FuzzParseQMQPServers: never a panic, and every server is host:port.
func FuzzParseQMQPServers(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "192.0.2.1 x", "[::1]:628", "h.example:1", "fe80::1%eth0", "1.2.3.4.5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		servers, _ := ParseQMQPServers([]string{line})
		for _, s := range servers {
			if _, _, err := net.SplitHostPort(s); err != nil {
				t.Fatalf("%q gave %q: %v", line, s, err)
			}
		}
	})
}
