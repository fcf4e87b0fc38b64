package sasl

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// step is one turn of a scripted SMTP server: the exact line it expects from
// the client (without CRLF) and the reply it sends.
type step struct{ expect, reply string }

// scriptServer serves one connection on loopback, greets, and then checks
// every line the client sends byte for byte against the script. The error
// it returns is the first difference.
func scriptServer(t *testing.T, script []step) (addr string, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	go func() {
		defer ln.Close()
		conn, err := ln.Accept()
		if err != nil {
			ch <- err
			return
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		fmt.Fprintf(conn, "220 mx.example.test ESMTP\r\n")
		for i, s := range script {
			line, err := r.ReadString('\n')
			if err != nil {
				ch <- fmt.Errorf("step %d: reading: %v", i, err)
				return
			}
			if line != s.expect+"\r\n" {
				ch <- fmt.Errorf("step %d: client sent %q, want %q", i, line, s.expect+"\r\n")
				return
			}
			if _, err := conn.Write([]byte(s.reply + "\r\n")); err != nil {
				ch <- err
				return
			}
		}
		ch <- nil
	}()
	return ln.Addr().String(), ch
}

// afterRefusal is what go-smtp (v0.25) sends after any failed AUTH, even
// after the server's final 535: a cancel line "*", which a server outside an
// exchange refuses as an unknown command. The script expects it so that the
// byte-for-byte check covers the whole conversation.
var afterRefusal = step{"*", "502 5.5.2 Error: command not recognized"}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

const ehloReply = "250-mx.example.test\r\n250-8BITMIME\r\n250 AUTH LOGIN PLAIN XOAUTH2 OAUTHBEARER"

// authOver runs go-smtp's client against the script: EHLO, the mechanism
// chosen from the offer, AUTH with c, QUIT.
func authOver(t *testing.T, script []step, fixed string, mk func(mech string) Client) (Client, error) {
	t.Helper()
	addr, done := scriptServer(t, script)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	sc := smtp.NewClient(conn)
	defer sc.Close()
	if err := sc.Hello("client.example.test"); err != nil {
		t.Fatal(err)
	}
	_, param := sc.Extension("AUTH")
	mech, err := Choose(Offered(param), fixed)
	if err != nil {
		t.Fatal(err)
	}
	c := mk(mech)
	authErr := sc.Auth(c)
	if err := sc.Quit(); err != nil {
		t.Errorf("QUIT: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return c, authErr
}

func TestSMTPXOAuth2(t *testing.T) {
	ir := b64("user=mailer@example.com\x01auth=Bearer tok-1\x01\x01")
	c, err := authOver(t, []step{
		{"EHLO client.example.test", ehloReply},
		{"AUTH XOAUTH2 " + ir, "235 2.7.0 Accepted"},
		{"QUIT", "221 2.0.0 bye"},
	}, "", func(mech string) Client {
		if mech != XOAuth2 {
			t.Fatalf("chose %s with both offered", mech)
		}
		return NewXOAuth2("mailer@example.com", "tok-1")
	})
	if err != nil || c.Failure() != nil {
		t.Fatalf("AUTH: %v, failure %+v", err, c.Failure())
	}
}

func TestSMTPXOAuth2ErrorContinuation(t *testing.T) {
	ir := b64("user=mailer@example.com\x01auth=Bearer stale\x01\x01")
	jsonErr := `{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`
	c, err := authOver(t, []step{
		{"EHLO client.example.test", ehloReply},
		{"AUTH XOAUTH2 " + ir, "334 " + b64(jsonErr)},
		// The client answers the error with an empty line, and the server
		// then refuses.
		{"", "535-5.7.8 Username and Password not accepted.\r\n535 5.7.8 Learn more"},
		afterRefusal,
		{"QUIT", "221 2.0.0 bye"},
	}, "", func(string) Client { return NewXOAuth2("mailer@example.com", "stale") })
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 535 {
		t.Fatalf("AUTH: %v, want the server's 535", err)
	}
	if f := c.Failure(); f == nil || f.Status != "400" || f.Scope != "https://mail.google.com/" {
		t.Fatalf("failure %+v", f)
	}
	if !TokenExpired(err, c) {
		t.Fatal("TokenExpired: false after 535 with status 400")
	}
}

func TestSMTPMicrosoftRefusal(t *testing.T) {
	// Microsoft 365 offers XOAUTH2 only and refuses a bad token at once.
	ir := b64("user=app@contoso.example\x01auth=Bearer expired\x01\x01")
	c, err := authOver(t, []step{
		{"EHLO client.example.test", "250-outlook.example\r\n250 AUTH LOGIN XOAUTH2"},
		{"AUTH XOAUTH2 " + ir, "535 5.7.3 Authentication unsuccessful"},
		afterRefusal,
		{"QUIT", "221 2.0.0 bye"},
	}, "", func(mech string) Client { return NewXOAuth2("app@contoso.example", "expired") })
	if !TokenExpired(err, c) {
		t.Fatalf("TokenExpired false for %v", err)
	}
}

func TestSMTPOAuthBearer(t *testing.T) {
	ir := b64("n,a=mailer@example.com,\x01host=smtp.example.test\x01port=587\x01auth=Bearer tok-2\x01\x01")
	c, err := authOver(t, []step{
		{"EHLO client.example.test", ehloReply},
		{"AUTH OAUTHBEARER " + ir, "235 2.7.0 Accepted"},
		{"QUIT", "221 2.0.0 bye"},
	}, "OAUTHBEARER", func(mech string) Client {
		return NewOAuthBearer("mailer@example.com", "tok-2", "smtp.example.test", 587)
	})
	if err != nil || c.Failure() != nil {
		t.Fatalf("AUTH: %v, failure %+v", err, c.Failure())
	}
}

func TestSMTPOAuthBearerErrorContinuation(t *testing.T) {
	ir := b64("n,a=mailer@example.com,\x01host=smtp.example.test\x01port=587\x01auth=Bearer stale\x01\x01")
	jsonErr := `{"status":"invalid_token","scope":"example_scope","openid-configuration":"https://example.com/.well-known/openid-configuration"}`
	c, err := authOver(t, []step{
		{"EHLO client.example.test", ehloReply},
		{"AUTH OAUTHBEARER " + ir, "334 " + b64(jsonErr)},
		// RFC 7628 3.2.3: the client answers with a single %x01.
		{b64("\x01"), "535 5.7.8 Authentication credentials invalid"},
		afterRefusal,
		{"QUIT", "221 2.0.0 bye"},
	}, "oauthbearer", func(mech string) Client {
		return NewOAuthBearer("mailer@example.com", "stale", "smtp.example.test", 587)
	})
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 535 || !strings.Contains(se.Message, "credentials invalid") {
		t.Fatalf("AUTH: %v, want the server's 535", err)
	}
	if f := c.Failure(); f == nil || f.Status != "invalid_token" || !TokenExpired(err, c) {
		t.Fatalf("failure %+v", f)
	}
}

func TestSMTPInsufficientScope(t *testing.T) {
	ir := b64("n,,\x01auth=Bearer narrow\x01\x01")
	c, err := authOver(t, []step{
		{"EHLO client.example.test", "250-mx\r\n250 AUTH OAUTHBEARER"},
		{"AUTH OAUTHBEARER " + ir, "334 " + b64(`{"status":"insufficient_scope","scope":"mail.send"}`)},
		{"AQ==", "535 5.7.8 Authentication credentials invalid"},
		afterRefusal,
		{"QUIT", "221 2.0.0 bye"},
	}, "", func(mech string) Client { return NewOAuthBearer("", "narrow", "", 0) })
	if err == nil || TokenExpired(err, c) {
		t.Fatalf("AUTH: %v; a missing scope must not read as an expired token", err)
	}
}
