package testpeer

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// SinkMessage is one message an SMTPSink received.
type SinkMessage struct {
	From string
	To   []string
	// Data is the message as received, dot-unstuffed, with CRLF line ends
	// turned into LF.
	Data []byte
	// TLS tells whether the message came over TLS (after STARTTLS), and
	// ServerName is the name the client asked for in it (SNI).
	TLS        bool
	ServerName string
}

// SMTPSink is an SMTP server on a loopback port that accepts every message
// and records it, as the next hop of a Postfix instance (see
// PostfixConfig.Relayhost) or any SMTP client under test.
type SMTPSink struct {
	Addr string

	mu     sync.Mutex
	msgs   []SinkMessage
	notify chan struct{}
	srv    *smtp.Server
}

// SMTPSinkConfig is what may differ between sinks.
type SMTPSinkConfig struct {
	// Addr is where the sink listens; "" means a free port on 127.0.0.1.
	Addr string
	// Cert, when set, is offered with STARTTLS.
	Cert *tls.Certificate
}

// NewSMTPSink starts a sink on a free loopback port that is closed when
// the test ends.
func NewSMTPSink(t testing.TB) *SMTPSink {
	t.Helper()
	return StartSMTPSink(t, SMTPSinkConfig{})
}

// StartSMTPSink starts a sink as c says; it is closed when the test ends.
func StartSMTPSink(t testing.TB, c SMTPSinkConfig) *SMTPSink {
	t.Helper()
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", c.Addr)
	if err != nil {
		t.Fatal(err)
	}
	k := &SMTPSink{Addr: l.Addr().String(), notify: make(chan struct{}, 1)}
	k.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &sinkSession{sink: k, conn: c}, nil
	}))
	k.srv.Domain = "sink.qmgate.test"
	k.srv.ReadTimeout = time.Minute
	k.srv.WriteTimeout = time.Minute
	k.srv.MaxMessageBytes = 1 << 30
	k.srv.MaxRecipients = 100000
	k.srv.AllowInsecureAuth = true
	if c.Cert != nil {
		k.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*c.Cert}}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = k.srv.Serve(l)
	}()
	t.Cleanup(func() {
		k.srv.Close()
		<-done
	})
	return k
}

// Relayhost returns the sink's address in Postfix relayhost form,
// "[127.0.0.1]:port" (brackets: no MX lookup).
func (k *SMTPSink) Relayhost() string {
	host, port, _ := net.SplitHostPort(k.Addr)
	return "[" + host + "]:" + port
}

// Messages returns a copy of what the sink has received so far.
func (k *SMTPSink) Messages() []SinkMessage {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]SinkMessage(nil), k.msgs...)
}

// To returns the messages received so far for rcpt.
func (k *SMTPSink) To(rcpt string) []SinkMessage {
	var out []SinkMessage
	for _, m := range k.Messages() {
		if slices.Contains(m.To, rcpt) {
			out = append(out, m)
		}
	}
	return out
}

// Wait waits until the sink has received at least n messages, or fails the
// test after timeout.
func (k *SMTPSink) Wait(t testing.TB, n int, timeout time.Duration) []SinkMessage {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if m := k.Messages(); len(m) >= n {
			return m
		}
		select {
		case <-k.notify:
		case <-deadline.C:
			t.Fatalf("SMTP sink: %d of %d messages after %v", len(k.Messages()), n, timeout)
		}
	}
}

type sinkSession struct {
	sink *SMTPSink
	conn *smtp.Conn
	msg  SinkMessage
}

func (s *sinkSession) AuthMechanisms() []string { return nil }

func (s *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	s.msg = SinkMessage{From: from}
	return nil
}

func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.msg.To = append(s.msg.To, to)
	return nil
}

func (s *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if len(s.msg.To) == 0 {
		return errors.New("no recipients")
	}
	s.msg.Data = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	cs, ok := s.conn.TLSConnectionState()
	s.msg.TLS, s.msg.ServerName = ok, cs.ServerName
	s.sink.mu.Lock()
	s.sink.msgs = append(s.sink.msgs, s.msg)
	s.sink.mu.Unlock()
	select {
	case s.sink.notify <- struct{}{}:
	default:
	}
	s.msg = SinkMessage{}
	return nil
}

func (s *sinkSession) Reset()        { s.msg = SinkMessage{} }
func (s *sinkSession) Logout() error { return nil }
