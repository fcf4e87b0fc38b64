package smtp_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"strings"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/smtp"
)

// spool is a Handler that accepts mail for one domain and prints it instead
// of queueing it.
type spool struct{ domain mail.HostList }

func (s spool) Sender(ctx context.Context, c *mail.ConnInfo, from string) mail.Status {
	return mail.OK("")
}

func (s spool) Recipient(ctx context.Context, c *mail.ConnInfo, from, rcpt string) mail.Status {
	if !c.RelayClient && c.AuthUser == "" && !s.domain.RecipientAllowed(rcpt) {
		return mail.StatusNotRcptHost
	}
	return mail.OK("")
}

func (s spool) Deliver(ctx context.Context, c *mail.ConnInfo, env mail.Envelope, body io.Reader) mail.Status {
	msg, err := io.ReadAll(body)
	if err != nil {
		return mail.StatusOf(err) // a limit or a broken connection: do not commit
	}
	// A real handler writes msg to disk and syncs before it answers.
	fmt.Printf("from <%s> to %q, %d lines\n", env.Sender, env.Recipients, strings.Count(string(msg), "\n"))
	return mail.OK("queued")
}

// A server for one domain, and the client delivering a message to it.
func Example() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &smtp.Server{
		Hostname: "mx.example.net",
		Handler:  spool{domain: mail.HostList{"example.net"}},
	}
	go srv.Serve(l)
	defer srv.Close()

	c := &smtp.Client{TLS: smtp.TLSNone, LocalName: "client.example.org"}
	ctx := context.Background()
	conn, err := c.Dial(ctx, l.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	env := mail.Envelope{
		Sender:     "Hate.The Quoting@example.org",
		Recipients: []string{"postmaster@example.net", "someone@elsewhere.example"},
	}
	sts, err := conn.Send(ctx, env, strings.NewReader("Subject: hello\n\nHi.\n"))
	if err != nil {
		log.Fatal(err)
	}
	for i, st := range sts {
		fmt.Printf("%s: %s %s\n", env.Recipients[i], st.Class, st.Code)
	}
	// Output:
	// from <Hate.The Quoting@example.org> to ["postmaster@example.net"], 5 lines
	// postmaster@example.net: accept 2.0.0
	// someone@elsewhere.example: permanent 5.7.1
}

// A submission server: AUTH against a password file, required before MAIL,
// offered only under TLS.
func ExampleServer_submission() {
	passwords, err := smtp.ReadPasswordFile(strings.NewReader(
		"alice@example.org:$2a$10$NLOhTJoYj5YbZ82ZfbT5suOVsj6v6l1nZOc8iQHcaeWBSFdODtVpC\n"))
	if err != nil {
		log.Fatal(err)
	}
	srv := &smtp.Server{
		Hostname:    "submit.example.net",
		Handler:     spool{},
		Auth:        passwords,
		RequireAuth: true,
		// TLSConfig: &tls.Config{Certificates: ...}, then:
		// go srv.Serve(l587); go srv.ServeTLS(l465)
	}
	_ = srv
	fmt.Println(passwords.Len(), "user")
	// Output: 1 user
}

// Delivery to an MX: opportunistic TLS, one Status per recipient.
func ExampleClient_mx() {
	c := &smtp.Client{
		TLS:       smtp.TLSOpportunistic,
		LocalName: "hub.example.net",
	}
	deliver := func(ctx context.Context, mx string, env mail.Envelope, body io.Reader) []mail.Status {
		conn, err := c.Dial(ctx, mx)
		if err != nil {
			st := mail.StatusOf(err)
			sts := make([]mail.Status, len(env.Recipients))
			for i := range sts {
				sts[i] = st // temporary: try the next MX, or later
			}
			return sts
		}
		defer conn.Close()
		sts, _ := conn.Send(ctx, env, body)
		return sts
	}
	_ = deliver
}

// A password file line for `qmgate passwd`.
func ExampleHashPassword() {
	hash, err := smtp.HashPassword("correct horse battery staple")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("alice@example.org:%s\n", hash)
}
