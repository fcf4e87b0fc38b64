package testpeer

import (
	"bytes"
	"io"
	"net"
	"net/smtp"
	"strings"
	"testing"
	"time"
)

// TestPostfixRelaysToSink starts an instance with qmqpd and smtpd that relays
// to a sink, and hands it one message by each protocol.
func TestPostfixRelaysToSink(t *testing.T) {
	sink := NewSMTPSink(t)
	pf := StartPostfix(t, PostfixConfig{QMQP: true, SMTP: true, Relayhost: sink.Relayhost()})

	// QMQP by hand: mailfront's example request.
	c, err := net.DialTimeout("tcp", pf.QMQPAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.WriteString(c, "42:5:test\n,13:a@example.com,13:b@example.com,,"); err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(c)
	c.Close()
	if err != nil || !bytes.Contains(reply, []byte(":KOk: queued as ")) {
		t.Fatalf("qmqpd reply %q, %v", reply, err)
	}

	msg := "From: c@example.com\r\nTo: d@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
	if err := smtp.SendMail(pf.SMTPAddr, nil, "c@example.com", []string{"d@example.org"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}

	got := sink.Wait(t, 2, time.Minute)
	byFrom := map[string]SinkMessage{}
	for _, m := range got {
		byFrom[m.From] = m
	}
	if m := byFrom["a@example.com"]; len(m.To) != 1 || m.To[0] != "b@example.com" || !bytes.HasSuffix(m.Data, []byte("\ntest\n")) {
		t.Errorf("QMQP message: %+v", m)
	}
	if m := byFrom["c@example.com"]; len(m.To) != 1 || m.To[0] != "d@example.org" || !bytes.HasSuffix(m.Data, []byte("\n\nhello\n")) {
		t.Errorf("SMTP message: %+v", m)
	}
	if !strings.Contains(pf.Log(), "status=sent") {
		t.Errorf("maillog has no delivery:\n%s", pf.Log())
	}
}
