package qmqp_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
)

// spool is a toy queue: it writes the body to a file first, then reads the
// envelope, and commits (here: keeps the file) only if the envelope is good,
// as qmail-queue does with fd 0 and fd 1.
func spool(ctx context.Context, req *qmqp.Request) mail.Status {
	f, err := os.CreateTemp("", "qmqp-example-")
	if err != nil {
		return mail.StatusQueueTrouble
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := io.Copy(f, req.Body); err != nil {
		req.Envelope() // let the server see the rest; it replies
		return mail.StatusOf(err)
	}
	env, err := req.Envelope()
	if err != nil {
		return mail.StatusOf(err) // the server's refusal, or no reply at all
	}
	if err := f.Sync(); err != nil {
		return mail.StatusQueueTrouble
	}
	fmt.Printf("queued from <%s> for %d recipient(s)\n", env.Sender, len(env.Recipients))
	return mail.OK("ok queued")
}

// A QMQP hub for the application servers of 10.0.0.0/8, plus whoever can
// open the local socket.
func ExampleServer() {
	srv := &qmqp.Server{
		Handler:  qmqp.HandlerFunc(spool),
		Allow:    []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
		Hostname: "hub.example.net",
	}
	l, err := net.Listen("tcp", "127.0.0.1:0") // port 628 in production
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())

	// A client hands over one message.
	body := "Subject: hello\n\nHi there.\n"
	res, err := qmqp.Send(context.Background(), []string{l.Addr().String()},
		mail.Envelope{Sender: "app@example.net", Recipients: []string{"ops@example.org"}},
		strings.NewReader(body), int64(len(body)))
	fmt.Println(string(res.Status.Reply()), err)
	// Output:
	// queued from <app@example.net> for 1 recipient(s)
	// Kok queued <nil>
}

// A nullclient sends through the first hub it can reach; once connected it
// never tries another hub, so a message is not queued twice.
func ExampleClient() {
	srv := &qmqp.Server{
		Handler: qmqp.HandlerFunc(spool),
		Allow:   []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	down, _ := net.Listen("tcp", "127.0.0.1:0")
	down.Close() // a hub that is down: the connection is refused

	c := &qmqp.Client{Servers: []string{down.Addr().String(), l.Addr().String()}}
	msg := "Subject: report\n\nAll good.\n"
	env := mail.Envelope{Sender: "cron@app1.example.net", Recipients: []string{"ops@example.org", "dev@example.org"}}
	res, err := c.Send(context.Background(), env, strings.NewReader(msg), int64(len(msg)))
	switch {
	case err == nil && res.Status.IsAccept():
		fmt.Println("accepted by the second hub:", res.Server == l.Addr().String())
	case err == nil:
		fmt.Println("refused:", res.Status) // Z: retry later; D: bounce
	default:
		fmt.Println("not sent:", err) // *qmqp.ConnectError or *qmqp.TransferError: retry later
	}
	// Output:
	// queued from <cron@app1.example.net> for 2 recipient(s)
	// accepted by the second hub: true
}
