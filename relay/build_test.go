package relay

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
)

// sinkTx is one transaction a sinkSMTP took: over TLS or not, with which
// AUTH user, for which recipients.
type sinkTx struct {
	TLS   bool
	User  string
	Rcpts []string
}

// sinkSMTP is an SMTP server on loopback that offers STARTTLS (with the
// test PKI's certificate) and AUTH PLAIN (any password; over plain text
// too, so that a client that should not send credentials can be caught
// sending them) and records every transaction and every AUTH.
type sinkSMTP struct {
	addr string
	mu   sync.Mutex
	txs  []sinkTx
	auth []string // users that sent AUTH, with "tls" or "plain"
}

func newSinkSMTP(t *testing.T, pki *testPKI) *sinkSMTP {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(pki.Cert, pki.Key)
	if err != nil {
		t.Fatal(err)
	}
	s := &sinkSMTP{}
	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) {
		return &sinkSession{s: s, c: c}, nil
	}))
	srv.Domain = "sink.test"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.AllowInsecureAuth = true
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *sinkSMTP) transactions() []sinkTx {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.txs)
}

type sinkSession struct {
	s   *sinkSMTP
	c   *gosmtp.Conn
	tx  sinkTx
	usr string
}

func (ss *sinkSession) tls() bool { _, ok := ss.c.TLSConnectionState(); return ok }

func (ss *sinkSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *sinkSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, _ string) error {
		ss.usr = user
		how := "plain"
		if ss.tls() {
			how = "tls"
		}
		ss.s.mu.Lock()
		ss.s.auth = append(ss.s.auth, user+" "+how)
		ss.s.mu.Unlock()
		return nil
	}), nil
}

func (ss *sinkSession) Mail(string, *gosmtp.MailOptions) error {
	ss.tx = sinkTx{TLS: ss.tls(), User: ss.usr}
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	ss.tx.Rcpts = append(ss.tx.Rcpts, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	ss.s.mu.Lock()
	ss.s.txs = append(ss.s.txs, ss.tx)
	ss.s.mu.Unlock()
	return nil
}

func (ss *sinkSession) Reset()        { ss.tx = sinkTx{} }
func (ss *sinkSession) Logout() error { return nil }

// runEngine builds the routes of doc (then changed by edit, when not nil,
// as an embedding program might build what validation refuses), queues one
// message per recipient list with the hub's destination key (a route's
// via), and runs the engine until every message is delivered or was tried.
func runEngine(t *testing.T, doc string, edit func(*config.Config), lists ...[]string) *queue.Queue {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse("test.toml", []byte("queue_dir = \""+dir+"/queue\"\n"+doc))
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(cfg)
	}
	log := slog.New(slog.DiscardHandler)
	router, err := BuildRouter(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(router.Close)
	q, err := queue.Open(cfg.QueueDir, queue.Options{Logger: log, DestinationOf: func(sender, rcpt string) string {
		return router.Lookup(sender, rcpt).Via
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	for _, rcpts := range lists {
		env := mail.Envelope{Sender: "s@x.test", Recipients: rcpts}
		if _, err := q.Put(context.Background(), env, strings.NewReader("Subject: route\n\nx\n")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Engine{Queue: q, Routes: func() *Router { return router }, Log: log}
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	testpeer.WaitFor(t, "every message delivered or tried", 30*time.Second, func() bool {
		rows, err := q.List(context.Background())
		if err != nil {
			return false
		}
		for _, r := range rows {
			if r.Attempts == 0 {
				return false
			}
		}
		return true
	})
	cancel()
	if err := testpeer.Recv(t, "the hub to stop", 30*time.Second, done); err != nil {
		t.Fatal(err)
	}
	return q
}

// TestRoutesSharingAViaAreNotMixed: two routes to one smarthost, one with
// verified TLS and credentials, one with no TLS and none. The queue groups
// their recipients as one destination; each must still be delivered with
// its own route's settings, in either order of the recipients (the route
// of the first recipient used to serve the whole group: a TLS downgrade
// one way, credentials for the wrong mail the other).
func TestRoutesSharingAViaAreNotMixed(t *testing.T) {
	pki := newTestPKI(t)
	sink := newSinkSMTP(t, pki)
	doc := fmt.Sprintf(`
[[route]]
domains = ["secure.test"]
via = "smtp://%[1]s"
tls = "required"
ca_file = %[2]q
username = "secure-user"
password = "pw"

[[route]]
domains = ["plain.test"]
via = "smtp://%[1]s"
tls = "none"
`, sink.addr, pki.CA)
	runEngine(t, doc, nil,
		[]string{"a@secure.test", "b@plain.test"},
		[]string{"c@plain.test", "d@secure.test"})
	seen := map[string]bool{}
	for _, tx := range sink.transactions() {
		for _, r := range tx.Rcpts {
			seen[r] = true
			secure := strings.HasSuffix(r, "@secure.test")
			if tx.TLS != secure || (tx.User == "secure-user") != secure {
				t.Errorf("%s went with tls=%v user=%q (transaction for %v)", r, tx.TLS, tx.User, tx.Rcpts)
			}
		}
	}
	for _, r := range []string{"a@secure.test", "b@plain.test", "c@plain.test", "d@secure.test"} {
		if !seen[r] {
			t.Errorf("%s not delivered; transactions %+v", r, sink.transactions())
		}
	}
}

// TestNoCredentialsOverUnverifiedTLS: a route with tls = "opportunistic"
// and a username never sends AUTH over a TLS session whose certificate was
// not verified (here: no ca_file, so the test CA is not trusted); the mail
// waits instead. With insecure_auth = true, the administrator's explicit
// choice, it is sent.
func TestNoCredentialsOverUnverifiedTLS(t *testing.T) {
	pki := newTestPKI(t)
	for _, insecure := range []bool{false, true} {
		sink := newSinkSMTP(t, pki)
		doc := fmt.Sprintf(`
[[route]]
domains = ["*"]
via = "smtp://%s"
tls = "opportunistic"
username = "joe"
password = "pw"
insecure_auth = true
`, sink.addr)
		var edit func(*config.Config)
		if !insecure {
			// Validation refuses this route without the override; build
			// it anyway, as an embedding program might, to check the
			// builder's own guard.
			plain := strings.Replace(doc, "insecure_auth = true", "", 1)
			if _, err := config.Parse("test.toml", []byte(plain)); err == nil {
				t.Fatal("config accepted username with tls = \"opportunistic\" and no insecure_auth")
			}
			edit = func(c *config.Config) { c.Routes[0].InsecureAuth = false }
		}
		q := runEngine(t, doc, edit, []string{"r@example.org"})
		sink.mu.Lock()
		auth := slices.Clone(sink.auth)
		sink.mu.Unlock()
		if !insecure && len(auth) > 0 {
			t.Errorf("credentials sent over unverified TLS: %v", auth)
		}
		if insecure && (len(auth) != 1 || auth[0] != "joe tls") {
			t.Errorf("with insecure_auth: AUTH %v, want joe over (unverified) TLS", auth)
		}
		if !insecure && q.Metrics().Messages != 1 {
			t.Errorf("the message left the queue without credentials being sent")
		}
	}
}

// TestPolicyAsksLocalRoutes: the hub refuses at RCPT what a Maildir or mbox
// route would bounce: users not on its users_file (5.1.1) and names no
// mailbox can have (5.1.3), for every client, so no forged sender gets a
// bounce.
func TestPolicyAsksLocalRoutes(t *testing.T) {
	dir := t.TempDir()
	users := dir + "/users"
	if err := os.WriteFile(users, []byte("joe\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("test.toml", []byte(fmt.Sprintf(`queue_dir = %q
rcpthosts = ["local.test", "box.test"]
[[route]]
domains = ["local.test"]
via = "maildir:%s/mail"
users_file = %q
[[route]]
domains = ["box.test"]
via = "mbox:%s/mbox"
`, dir+"/queue", dir, users, dir)))
	if err != nil {
		t.Fatal(err)
	}
	router, err := BuildRouter(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer router.Close()
	p := &Policy{RcptHosts: mail.HostList(cfg.RcptHosts), Router: router}
	for _, c := range []*mail.ConnInfo{{Proto: "SMTP"}, {Proto: "QMTP", RelayClient: true}, {Proto: "QMQP"}} {
		for rcpt, code := range map[string]string{
			"joe@local.test":     "",
			"Joe-ext@local.test": "",
			"ann@local.test":     "5.1.1",
			"ann@box.test":       "",
			"-x@box.test":        "5.1.3",
			".x@box.test":        "5.1.3",
			"\u212Aate@box.test": "5.1.3",
		} {
			st := p.Recipient(c, "", rcpt)
			if code == "" && !st.IsAccept() || code != "" && st.Code != code {
				t.Errorf("%s %q: %v, want %q", c.Proto, rcpt, st, code)
			}
		}
	}
}
