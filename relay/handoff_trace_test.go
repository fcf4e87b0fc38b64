package relay

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/queue"
)

func TestTraceFilter(t *testing.T) {
	long := strings.Repeat("x", 3*traceBufBytes)
	for _, tc := range []struct{ in, out, value string }{
		{"X-Qmgate-Handoff: arrival=a; attempts=1\nSubject: s\n\nbody\n", "Subject: s\n\nbody\n", "arrival=a; attempts=1"},
		{"Received: r\nx-qmgate-handoff: one\n\tmore\nX-QMGATE-HANDOFF: two\nSubject: s\n\nX-Qmgate-Handoff: kept\n", "Received: r\nSubject: s\n\nX-Qmgate-Handoff: kept\n", "one"},
		{"Subject: s\r\n\r\nX-Qmgate-Handoff: body\r\n", "Subject: s\r\n\r\nX-Qmgate-Handoff: body\r\n", ""},
		{"no header here\nX-Qmgate-Handoff: body\n", "no header here\nX-Qmgate-Handoff: body\n", ""},
		{"Subject: " + long + "\nX-Qmgate-Handoff: v\nA: " + long + "\n\n" + long, "Subject: " + long + "\nA: " + long + "\n\n" + long, "v"},
		{"X-Qmgate-Handoff: v", "", "v"},
		{"", "", ""},
	} {
		f := newTraceFilter(strings.NewReader(tc.in))
		got, err := io.ReadAll(f)
		if err != nil || string(got) != tc.out || f.value != tc.value {
			t.Errorf("%.60q: got %.60q value %q err %v", tc.in, got, f.value, err)
		}
	}
}

func TestParseHandoff(t *testing.T) {
	at := time.Date(2026, 11, 30, 8, 0, 0, 5, time.UTC)
	c, ok := parseHandoff(strings.TrimSpace(strings.TrimPrefix(handoffHeaderLine(at, 7, true), HandoffHeader+":")))
	if !ok || !c.Arrival.Equal(at) || c.Attempts != 7 || !c.DelayNotified {
		t.Fatalf("round trip: %+v %v", c, ok)
	}
	for _, bad := range []string{"", "arrival=x; attempts=1", "arrival=2026-11-30T08:00:00Z", "attempts=-1; arrival=2026-11-30T08:00:00Z"} {
		if _, ok := parseHandoff(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestHandoffTrust: a message with a hand-off trace header continues its
// arrival time, attempts and delay notice only at a hub that trusts the
// sender as a relay client; a hub that does not removes the header and
// queues the message as a fresh arrival. Neither keeps the header.
func TestHandoffTrust(t *testing.T) {
	const conf = `
hostname = "hub-b.test"
rcpthosts = ["example.com"]
[qmtp]
listen = ["127.0.0.1:0"]
%s
[[route]]
domains = ["*"]
via = "qmtp://127.0.0.1:1"
`
	arrival := time.Now().Add(-2 * time.Hour).UTC().Truncate(time.Second)
	msg := handoffHeaderLine(arrival, 5, true) + "Subject: m\n\nbody\n"
	for _, tc := range []struct {
		name    string
		relay   string
		trusted bool
	}{
		{"trusted", `relay_clients = ["127.0.0.1"]`, true},
		{"untrusted", ``, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHub(t, fmt.Sprintf(conf, tc.relay))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now().Add(-time.Minute)
			sts, err := qmtp.Send(ctx, h.addr("qmtp"), &qmtp.Message{
				Envelope: mail.Envelope{Sender: "s@src.test", Recipients: []string{"user@example.com"}},
				Body:     strings.NewReader(msg), Size: int64(len(msg))})
			if err != nil || !sts[0][0].IsAccept() {
				t.Fatalf("send: %v %v", sts, err)
			}
			rows, err := h.hub.queue.List(ctx)
			if err != nil || len(rows) != 1 {
				t.Fatalf("queue: %v %v", rows, err)
			}
			d, err := h.hub.queue.Show(ctx, rows[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(d.Header, HandoffHeader) || !strings.Contains(d.Header, "Subject: m") {
				t.Fatalf("header kept:\n%s", d.Header)
			}
			if tc.trusted {
				if !d.Received.Equal(arrival) || d.Attempts < 5 || !d.DelayNotified {
					t.Fatalf("not continued: received %v attempts %d delay notified %v", d.Received, d.Attempts, d.DelayNotified)
				}
			} else if d.Received.Before(start) || d.Attempts >= 5 || d.DelayNotified {
				t.Fatalf("untrusted header believed: received %v attempts %d delay notified %v", d.Received, d.Attempts, d.DelayNotified)
			}
		})
	}
}

// TestHandoffQMTPS: a hand-off over QMTPS verifies the peer's certificate
// against the configured roots, and with a client certificate the peer
// trusts the hub (no relay_clients entry needed) and continues the
// message's attempts; without one the message is accepted (the peer's
// own domain) but starts afresh; with the wrong roots nothing moves.
func TestHandoffQMTPS(t *testing.T) {
	pki := newTestPKI(t)
	for _, tc := range []struct {
		name          string
		ca, cert, key string
		moved         bool
		trusted       bool
	}{
		{"client certificate", pki.CA, pki.ClientCert, pki.ClientKey, true, true},
		{"no client certificate", pki.CA, "", "", true, false},
		{"unknown server", "", "", "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startHub(t, fmt.Sprintf(`
hostname = "hub-b.test"
rcpthosts = ["example.com"]
[qmtp]
listen_tls = ["127.0.0.1:0"]
tls_cert = %q
tls_key = %q
client_ca = %q
[[route]]
domains = ["*"]
via = "qmtp://127.0.0.1:1"
`, pki.Cert, pki.Key, pki.CA))
			q, err := queue.Open(t.TempDir(), queue.Options{Hostname: "hub-a.test", Passive: true})
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			id, err := q.Put(ctx, mail.Envelope{Sender: "s@src.test", Recipients: []string{"user@example.com"}}, strings.NewReader("Subject: m\n\nbody\n"))
			if err != nil {
				t.Fatal(err)
			}
			if err := q.Continue(ctx, id, queue.Continuation{Attempts: 6}); err != nil {
				t.Fatal(err)
			}
			res, err := Handoff(ctx, q, HandoffOptions{Peers: []string{"qmtps://" + b.addr("qmtps")},
				CAFile: tc.ca, CertFile: tc.cert, KeyFile: tc.key})
			if !tc.moved {
				if err == nil || res.Recipients != 0 || q.Metrics().Messages != 1 {
					t.Fatalf("handed off to an unverified peer: %+v %v", res, err)
				}
				return
			}
			if err != nil || res.Recipients != 1 || q.Metrics().Messages != 0 {
				t.Fatalf("hand-off: %+v %v", res, err)
			}
			rows, err := b.hub.queue.List(ctx)
			if err != nil || len(rows) != 1 {
				t.Fatalf("peer queue: %v %v", rows, err)
			}
			if got := rows[0].Attempts >= 6; got != tc.trusted {
				t.Fatalf("peer counts %d attempts (trusted %v)", rows[0].Attempts, tc.trusted)
			}
		})
	}
}
