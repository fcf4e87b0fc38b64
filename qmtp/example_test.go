package qmtp_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"strings"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmtp"
)

// A QMTP server embedded in a program: accept mail for example.net, refuse
// the rest. A real handler streams req.Body into durable storage and answers
// K only once the message is safely stored.
func ExampleServer() {
	rcpthosts := mail.HostList{"example.net"}
	srv := &qmtp.Server{
		Hostname: "mx.example.net",
		Handler: qmtp.HandlerFunc(func(ctx context.Context, req *qmtp.Request) []mail.Status {
			_, err := io.Copy(io.Discard, req.Body) // store it here
			env, eerr := req.Envelope()
			if err != nil || eerr != nil {
				return nil // nothing stored; the server answers for us
			}
			fmt.Printf("message of %d bytes from <%s>\n", req.Size, env.Sender)
			st := make([]mail.Status, len(env.Recipients))
			for i, rcpt := range env.Recipients {
				if rcpthosts.RecipientAllowed(rcpt) {
					st[i] = mail.OK("queued")
				} else {
					st[i] = mail.StatusNotRcptHost
				}
			}
			return st
		}),
	}
	l, err := net.Listen("tcp", "127.0.0.1:0") // ":209" in real life
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()

	// Talk to it.
	body := "Subject: hello\n\nhi\n"
	res, err := qmtp.Send(context.Background(), l.Addr().String(), &qmtp.Message{
		Envelope: mail.Envelope{Sender: "me@example.org", Recipients: []string{"you@example.net", "them@example.com"}},
		Body:     strings.NewReader(body),
		Size:     int64(len(body)),
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, st := range res[0] {
		fmt.Printf("%s\n", st.Reply())
	}
	// Output:
	// message of 19 bytes from <me@example.org>
	// Kqueued
	// Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)
}

// A client sending several messages pipelined on one connection, and
// keeping the connection for more.
func ExampleClient() {
	addr := exampleServer() // somewhere to send to

	client := &qmtp.Client{} // qmtp.Client{TLSConfig: ...} for QMTPS
	conn, err := client.Dial(context.Background(), addr)
	if err != nil {
		// A *qmtp.DialError: nothing was sent. Under MXPS this is the
		// one case where falling back to SMTP on the same host is right.
		log.Fatal(err)
	}
	defer conn.Close()

	var msgs []*qmtp.Message
	for i, rcpts := range [][]string{{"a@example.net"}, {"b@example.net", "temp@example.net"}} {
		body := fmt.Sprintf("Subject: %d\n\nbody\n", i)
		msgs = append(msgs, &qmtp.Message{
			Envelope: mail.Envelope{Sender: "me@example.org", Recipients: rcpts},
			Body:     strings.NewReader(body),
			Size:     int64(len(body)),
		})
	}
	res, err := conn.Send(context.Background(), msgs...)
	if err != nil {
		log.Println(err) // statuses are still filled in: temporary where unknown
	}
	for i, statuses := range res {
		for j, st := range statuses {
			fmt.Printf("%s: %s %s\n", msgs[i].Envelope.Recipients[j], st.Class, st.Text)
		}
	}
	fmt.Println("reusable:", conn.Err() == nil)
	// Output:
	// a@example.net: accept ok
	// b@example.net: accept ok
	// temp@example.net: temporary try again later
	// reusable: true
}

// exampleServer starts a server that accepts everything except recipients
// starting with "temp".
func exampleServer() string {
	srv := &qmtp.Server{Handler: qmtp.HandlerFunc(func(ctx context.Context, req *qmtp.Request) []mail.Status {
		env, err := req.Envelope()
		if err != nil {
			return nil
		}
		st := make([]mail.Status, len(env.Recipients))
		for i, r := range env.Recipients {
			st[i] = mail.OK("ok")
			if strings.HasPrefix(r, "temp") {
				st[i] = mail.Temp("4.3.0", "try again later")
			}
		}
		return st
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(l)
	return l.Addr().String()
}
