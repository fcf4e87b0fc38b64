//go:build linux

package cluster

import (
	"context"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/smtp"
)

var quietLog = slog.New(slog.DiscardHandler)

// delivery is one recipient a sink accepted.
type delivery struct {
	marker, rcpt string
	at           time.Time
}

// sink is a recording next hop, over QMTP or SMTP.
type sink struct {
	addr string
	l    net.Listener
	qsrv *qmtp.Server
	ssrv *smtp.Server

	mu       sync.Mutex
	got      []delivery
	corrupt  []string
	traceHdr int // copies that still carried the hand-off trace header
}

var markerRE = regexp.MustCompile(`(?m)^X-Cluster-Marker: (m[0-9]+)$`)

func newSink(t *testing.T, proto, addr string) *sink {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{addr: addr, l: l}
	switch proto {
	case "qmtp":
		s.qsrv = &qmtp.Server{Handler: qmtp.HandlerFunc(s.serveQMTP), Hostname: "sink.test", ErrorLog: quietLog, MaxConns: -1, MaxConnsPerIP: -1}
		go s.qsrv.Serve(l)
	case "smtp":
		s.ssrv = &smtp.Server{Handler: smtpSink{s}, Hostname: "sink.test", ErrorLog: quietLog, MaxConns: -1, MaxConnsPerIP: -1}
		go s.ssrv.Serve(l)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if s.qsrv != nil {
			s.qsrv.Shutdown(ctx)
		}
		if s.ssrv != nil {
			s.ssrv.Shutdown(ctx)
		}
		l.Close()
	})
	return s
}

func (s *sink) take(env mail.Envelope, body []byte) mail.Status {
	now := time.Now()
	m := markerRE.FindSubmatch(body)
	s.mu.Lock()
	defer s.mu.Unlock()
	if m == nil {
		s.corrupt = append(s.corrupt, string(body[:min(len(body), 200)]))
		return mail.OK("")
	}
	if strings.Contains(string(body), "X-Qmgate-Handoff:") {
		s.traceHdr++
	}
	for _, r := range env.Recipients {
		s.got = append(s.got, delivery{marker: string(m[1]), rcpt: r, at: now})
	}
	return mail.OK("")
}

func (s *sink) serveQMTP(ctx context.Context, req *qmtp.Request) []mail.Status {
	body, err := io.ReadAll(req.Body)
	env, eerr := req.Envelope()
	if err != nil || eerr != nil {
		return nil
	}
	st := s.take(env, body)
	out := make([]mail.Status, len(env.Recipients))
	for i := range out {
		out[i] = st
	}
	return out
}

type smtpSink struct{ s *sink }

func (smtpSink) Sender(context.Context, *mail.ConnInfo, string) mail.Status { return mail.OK("") }
func (smtpSink) Recipient(context.Context, *mail.ConnInfo, string, string) mail.Status {
	return mail.OK("")
}
func (k smtpSink) Deliver(ctx context.Context, c *mail.ConnInfo, env mail.Envelope, body io.Reader) mail.Status {
	b, err := io.ReadAll(body)
	if err != nil {
		return mail.Temp("4.3.0", "read failed")
	}
	return k.s.take(env, b)
}

func (s *sink) deliveries() []delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]delivery(nil), s.got...)
}
