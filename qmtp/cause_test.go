package qmtp

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// TestDialCause checks that a failed connection names its cause in the
// status every recipient gets, and that the status stays the temporary
// "could not connect" of the wire (code 4.4.1).
func TestDialCause(t *testing.T) {
	srvTLS, _ := testCert(t)
	tlsAddr := startServer(t, newTestServer(func(s *Server) { s.TLSConfig = srvTLS }), true)

	// A listener that accepts and never answers: the TLS handshake waits
	// until the connect timeout.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := silent.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	defer func() {
		select {
		case c := <-accepted:
			c.Close()
		default:
		}
	}()

	for _, tc := range []struct {
		name, addr string
		client     Client
		want       string
	}{
		{"refused", testpeer.FreePort(t), Client{}, "could not connect to remote host: connection refused"},
		{"no such host", "nohost.invalid:209", Client{}, "could not connect to remote host: no such host"},
		{"timeout", silent.Addr().String(), Client{TLSConfig: &tls.Config{}, ConnectTimeout: 300 * time.Millisecond}, "could not connect to remote host: timeout after 300ms"},
		{"untrusted", tlsAddr, Client{TLSConfig: &tls.Config{}}, "TLS handshake with remote host failed: certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := &Message{Envelope: mail.Envelope{Sender: "a@example.com", Recipients: []string{"b@example.net", "c@example.net"}}, Body: strings.NewReader("x\n"), Size: 2}
			res, err := tc.client.Send(context.Background(), tc.addr, msg)
			var de *DialError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v, want a *DialError", err)
			}
			for _, st := range res[0] {
				if st.Text != tc.want || !st.IsTemporary() || st.EnhancedCode() != "4.4.1" {
					t.Errorf("status = %q (%s), want %q (4.4.1)", st.Text, st.EnhancedCode(), tc.want)
				}
			}
			if st := mail.StatusOf(err); st.Text != tc.want {
				t.Errorf("StatusOf(err) = %q, want %q", st.Text, tc.want)
			}
		})
	}
}
