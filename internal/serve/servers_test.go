package serve_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/netstring"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/smtp"
)

// knobs are the connection fields every server has, set the same way on
// each of them.
type knobs struct {
	MaxConns, MaxConnsPerIP, MaxUnixConns int
	FirstTimeout                          time.Duration
	Exempt                                func(netip.Addr) bool
}

// server is one of the three protocol servers under the shared core.
type server struct {
	name string
	// start makes the server and returns its Serve, its Shutdown and its
	// ErrServerClosed.
	start func(k knobs) (serve func(net.Listener) error, shutdown func(context.Context) error, closed error)
	// probe makes the smallest exchange and returns the first reply.
	probe func(c net.Conn) string
	// send sends one message on a new connection and returns the reply
	// to it.
	send func(c net.Conn, msg string) string
	// refused tells a refusal for too many connections.
	refused string
}

func servers() []server {
	return []server{
		{
			name: "QMTP",
			start: func(k knobs) (func(net.Listener) error, func(context.Context) error, error) {
				s := &qmtp.Server{Handler: qmtpAccept, MaxConns: k.MaxConns, MaxConnsPerIP: k.MaxConnsPerIP, MaxUnixConns: k.MaxUnixConns,
					FirstTimeout: k.FirstTimeout, Exempt: k.Exempt, ErrorLog: quiet()}
				return s.Serve, s.Shutdown, qmtp.ErrServerClosed
			},
			probe:   func(c net.Conn) string { return qmtpSend(c, "Subject: x\n\nhi\n") },
			send:    qmtpSend,
			refused: "Ztoo many connections",
		},
		{
			name: "QMQP",
			start: func(k knobs) (func(net.Listener) error, func(context.Context) error, error) {
				s := &qmqp.Server{Handler: qmqpAccept, MaxConns: k.MaxConns, MaxConnsPerIP: k.MaxConnsPerIP, MaxUnixConns: k.MaxUnixConns,
					FirstTimeout: k.FirstTimeout, Exempt: k.Exempt, ErrorLog: quiet(),
					Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
				return s.Serve, s.Shutdown, qmqp.ErrServerClosed
			},
			probe:   func(c net.Conn) string { return qmqpSend(c, "Subject: x\n\nhi\n") },
			send:    qmqpSend,
			refused: "Ztoo many connections",
		},
		{
			name: "SMTP",
			start: func(k knobs) (func(net.Listener) error, func(context.Context) error, error) {
				s := &smtp.Server{Handler: smtpAccept{}, MaxConns: k.MaxConns, MaxConnsPerIP: k.MaxConnsPerIP, MaxUnixConns: k.MaxUnixConns,
					FirstTimeout: k.FirstTimeout, Exempt: k.Exempt, ErrorLog: quiet(), Hostname: "mx.test"}
				return s.Serve, s.Shutdown, smtp.ErrServerClosed
			},
			probe: func(c net.Conn) string {
				line, _ := bufio.NewReader(c).ReadString('\n')
				return line
			},
			send:    smtpSend,
			refused: "421 4.3.2 ",
		},
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func readNetstring(c net.Conn) string {
	data, _, err := netstring.NewReader(bufio.NewReader(c)).Next(4096)
	if err != nil {
		return "error: " + err.Error()
	}
	b, _ := io.ReadAll(data)
	return string(b)
}

const testTimeout = 30 * time.Second

func dial(t *testing.T, network, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout(network, addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { c.Close() })
	return c
}

// run starts srv on a new listener of each network ("tcp" or "unix") and
// stops it when the test ends, checking that each Serve returned the
// server's ErrServerClosed. It returns the listeners' addresses.
func run(t *testing.T, srv server, k knobs, networks ...string) []string {
	t.Helper()
	serve, shutdown, closed := srv.start(k)
	var addrs []string
	served := make(chan error, len(networks))
	for _, network := range networks {
		addr := "127.0.0.1:0"
		if network == "unix" {
			addr = filepath.Join(t.TempDir(), "s")
		}
		l, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		go func() { served <- serve(l) }()
		addrs = append(addrs, l.Addr().String())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		shutdown(ctx)
		for range networks {
			if err := testpeer.Recv(t, "Serve to return", testTimeout, served); err != closed {
				t.Errorf("Serve returned %v, want %v", err, closed)
			}
		}
	})
	return addrs
}

// TestServeClosesListener: Serve closes its listener when it returns, as
// net/http's does, in every server.
func TestServeClosesListener(t *testing.T) {
	for _, srv := range servers() {
		t.Run(srv.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			serve, shutdown, closed := srv.start(knobs{})
			served := make(chan error, 1)
			go func() { served <- serve(l) }()
			c := dial(t, "tcp", l.Addr().String()) // Serve is running
			c.Close()
			if err := shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := testpeer.Recv(t, "Serve to return", testTimeout, served); err != closed {
				t.Fatalf("Serve returned %v", err)
			}
			if err := l.Close(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("listener still open after Serve returned (Close: %v)", err)
			}
		})
	}
}

// TestOverLimit: a client over MaxConnsPerIP gets the server's refusal
// before it sends anything.
func TestOverLimit(t *testing.T) {
	for _, srv := range servers() {
		t.Run(srv.name, func(t *testing.T) {
			addr := run(t, srv, knobs{MaxConnsPerIP: 1}, "tcp")[0]
			first := dial(t, "tcp", addr)
			if srv.name == "SMTP" {
				srv.probe(first) // the greeting: the slot is taken
			}
			second := dial(t, "tcp", addr)
			waitSlotTaken(t, srv, second)
		})
	}
}

// waitSlotTaken reads from c, which must be refused.
func waitSlotTaken(t *testing.T, srv server, c net.Conn) {
	t.Helper()
	if got := srv.probe(c); !strings.HasPrefix(got, srv.refused) {
		t.Fatalf("over the limit got %q, want %q...", got, srv.refused)
	}
}

// TestExempt: an exempt client is not held to MaxConnsPerIP.
func TestExempt(t *testing.T) {
	loopback := netip.MustParsePrefix("127.0.0.0/8")
	for _, srv := range servers() {
		t.Run(srv.name, func(t *testing.T) {
			addr := run(t, srv, knobs{MaxConnsPerIP: 1, Exempt: loopback.Contains}, "tcp")[0]
			first := dial(t, "tcp", addr)
			if srv.name == "SMTP" {
				srv.probe(first)
			}
			if got := srv.probe(dial(t, "tcp", addr)); strings.HasPrefix(got, srv.refused) || strings.HasPrefix(got, "error") {
				t.Fatalf("exempt client got %q", got)
			}
		})
	}
}

// TestUnixBudget: connections on a unix-domain socket have a budget of
// their own: they are neither refused because TCP clients hold every TCP
// slot, nor able to take TCP slots.
func TestUnixBudget(t *testing.T) {
	for _, srv := range servers() {
		t.Run(srv.name, func(t *testing.T) {
			addrs := run(t, srv, knobs{MaxConns: 1, MaxUnixConns: 1}, "tcp", "unix")
			tcp, unix := addrs[0], addrs[1]
			first := dial(t, "tcp", tcp)
			if srv.name == "SMTP" {
				srv.probe(first)
			}
			u := dial(t, "unix", unix)
			if got := srv.probe(u); strings.HasPrefix(got, srv.refused) || strings.HasPrefix(got, "error") {
				t.Fatalf("unix client refused with a free unix slot: %q", got)
			}
			// A QMQP server gives u's slot back only after its reply is
			// written, so u1 may still have found the slot taken. Then u1
			// was refused and a later client may be let in: u1 must show
			// the refusal, and the dial is repeated.
			for attempt := 1; ; attempt++ {
				u1 := dial(t, "unix", unix)
				if srv.name == "SMTP" {
					srv.probe(u1)
				}
				got := srv.probe(dial(t, "unix", unix))
				if strings.HasPrefix(got, srv.refused) {
					break
				}
				if srv.name != "QMQP" || attempt == 10 {
					t.Fatalf("over the limit got %q, want %q...", got, srv.refused)
				}
				if r := readNetstring(u1); !strings.HasPrefix(r, srv.refused) {
					t.Fatalf("two unix clients let in with a budget of one: the first got %q, the second %q", r, got)
				}
			}
		})
	}
}

// TestFirstTimeout: a client that says nothing is disconnected after
// FirstTimeout, long before the read timeout.
func TestFirstTimeout(t *testing.T) {
	for _, srv := range servers() {
		t.Run(srv.name, func(t *testing.T) {
			addr := run(t, srv, knobs{FirstTimeout: 200 * time.Millisecond}, "tcp")[0]
			c := dial(t, "tcp", addr)
			rest, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("connection not closed by the server: %v (read %q)", err, rest)
			}
			if srv.name == "SMTP" && !strings.Contains(string(rest), "\r\n421 4.4.2 ") {
				t.Errorf("SMTP client got %q, want a 421 after the greeting", rest)
			}
		})
	}
}

func qmtpSend(c net.Conn, msg string) string {
	var p []byte
	p = netstring.AppendString(p, "\n"+msg)
	p = netstring.AppendString(p, "a@example.org")
	p = netstring.Append(p, netstring.AppendString(nil, "b@example.org"))
	c.Write(p)
	return readNetstring(c)
}

func qmqpSend(c net.Conn, msg string) string {
	var p []byte
	p = netstring.AppendString(p, msg)
	p = netstring.AppendString(p, "a@example.org")
	p = netstring.AppendString(p, "b@example.org")
	c.Write(netstring.Append(nil, p))
	return readNetstring(c)
}

// smtpSend sends msg (LF line ends) in one DATA transaction and returns
// the reply to the final dot.
func smtpSend(c net.Conn, msg string) string {
	r := bufio.NewReader(c)
	reply := func() string {
		for {
			line, err := r.ReadString('\n')
			if err != nil || len(line) < 4 || line[3] != '-' {
				return line
			}
		}
	}
	reply() // greeting
	for _, cmd := range []string{"EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.org>", "DATA"} {
		c.Write([]byte(cmd + "\r\n"))
		reply()
	}
	c.Write([]byte(strings.ReplaceAll(msg, "\n", "\r\n") + ".\r\n"))
	return reply()
}

var qmtpAccept = qmtp.HandlerFunc(func(ctx context.Context, req *qmtp.Request) []mail.Status {
	_, err := io.Copy(io.Discard, req.Body)
	env, eerr := req.Envelope()
	st := mail.OK("queued")
	if err != nil || eerr != nil {
		st = mail.StatusOf(errors.Join(err, eerr))
	}
	out := make([]mail.Status, len(env.Recipients))
	for i := range out {
		out[i] = st
	}
	return out
})

var qmqpAccept = qmqp.HandlerFunc(func(ctx context.Context, req *qmqp.Request) mail.Status {
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return mail.StatusOf(err)
	}
	if _, err := req.Envelope(); err != nil {
		return mail.StatusOf(err)
	}
	return mail.OK("queued")
})

type smtpAccept struct{}

func (smtpAccept) Sender(context.Context, *mail.ConnInfo, string) mail.Status { return mail.OK("") }
func (smtpAccept) Recipient(context.Context, *mail.ConnInfo, string, string) mail.Status {
	return mail.OK("")
}
func (smtpAccept) Deliver(ctx context.Context, c *mail.ConnInfo, env mail.Envelope, body io.Reader) mail.Status {
	if _, err := io.Copy(io.Discard, body); err != nil {
		return mail.StatusOf(err)
	}
	return mail.OK("queued")
}

// TestNUL: a message with a NUL byte is refused at the door by every
// server, permanently, with enhanced code 5.6.0; the same message without
// it is accepted.
func TestNUL(t *testing.T) {
	want := map[string]string{"QMTP": "Dsorry, message contains a NUL byte (#5.6.0)", "QMQP": "Dsorry, message contains a NUL byte (#5.6.0)", "SMTP": "554 5.6.0 sorry, message contains a NUL byte\r\n"}
	for _, srv := range servers() {
		t.Run(srv.name, func(t *testing.T) {
			addr := run(t, srv, knobs{}, "tcp")[0]
			if got := srv.send(dial(t, "tcp", addr), "Subject: x\n\nclean\n"); strings.HasPrefix(got, "D") || strings.HasPrefix(got, "5") || strings.HasPrefix(got, "error") {
				t.Fatalf("clean message refused: %q", got)
			}
			if got := srv.send(dial(t, "tcp", addr), "Subject: x\n\nnul \x00 here\n"); got != want[srv.name] {
				t.Fatalf("message with NUL: got %q, want %q", got, want[srv.name])
			}
		})
	}
}
