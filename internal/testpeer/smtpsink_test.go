package testpeer

import (
	"crypto/tls"
	"crypto/x509"
	"net/smtp"
	"testing"
	"time"
)

// TestSMTPSinkTLS: a sink with a certificate offers STARTTLS and records
// that a message came over it, and for which name; one without TLS
// records a plain message.
func TestSMTPSinkTLS(t *testing.T) {
	CheckGoroutines(t, 10*time.Second) // and lets none outlive the test
	ca := NewCA(t, "sink CA", "")
	cert := ca.Issue("mx.sink.test", x509.ExtKeyUsageServerAuth, "mx.sink.test")
	sink := StartSMTPSink(t, SMTPSinkConfig{Cert: &cert})
	c, err := smtp.Dial(sink.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.StartTLS(&tls.Config{RootCAs: ca.Pool, ServerName: "mx.sink.test"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@example.com"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"b@example.com", "c@example.com"} {
		if err := c.Rcpt(r); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: tls\r\n\r\nhello\r\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	got := sink.Wait(t, 1, time.Minute)
	if m := got[0]; !m.TLS || m.ServerName != "mx.sink.test" || len(sink.To("c@example.com")) != 1 || len(sink.To("d@example.com")) != 0 {
		t.Errorf("received %+v", got)
	}

	plain := NewSMTPSink(t)
	if err := smtp.SendMail(plain.Addr, nil, "a@example.com", []string{"b@example.com"}, []byte("Subject: plain\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	if m := plain.Wait(t, 1, time.Minute)[0]; m.TLS || m.ServerName != "" {
		t.Errorf("plain message recorded as TLS: %+v", m)
	}
}
