package config

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	gosasl "github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/relay/transport"
)

// TestRouteNames: an unnamed route gets a name from its first domain and
// transport, independent of its place; clashes get a hash; bad and
// duplicate names are refused.
func TestRouteNames(t *testing.T) {
	doc := func(routes string) string { return "queue_dir = \"" + t.TempDir() + "\"\n" + routes }
	c, err := Parse("t.toml", []byte(doc(`[[route]]
domains = ["example.net"]
via = "discard:"
[[route]]
domains = [".example.org"]
via = "smtp://127.0.0.1:2525"
name = "m365"
[[route]]
domains = ["*"]
via = "mx"
`)))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"example.net-discard", "m365", "any-mx"}
	for i, w := range want {
		if c.Routes[i].Name != w {
			t.Errorf("route %d: name %q, want %q", i, c.Routes[i].Name, w)
		}
	}
	a, err := Parse("t.toml", []byte(doc("[[route]]\ndomains=[\"a\"]\nvia=\"discard:\"\n[[route]]\ndomains=[\"a\",\"b\"]\nvia=\"discard:\"\n")))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("t.toml", []byte(doc("[[route]]\ndomains=[\"a\",\"b\"]\nvia=\"discard:\"\n[[route]]\ndomains=[\"a\"]\nvia=\"discard:\"\n")))
	if err != nil {
		t.Fatal(err)
	}
	if a.Routes[0].Name == a.Routes[1].Name || a.Routes[0].Name != b.Routes[1].Name || a.Routes[1].Name != b.Routes[0].Name {
		t.Errorf("clashing names not stable across order: %q %q / %q %q", a.Routes[0].Name, a.Routes[1].Name, b.Routes[0].Name, b.Routes[1].Name)
	}
	for _, bad := range []string{
		"[[route]]\nname=\"a b\"\ndomains=[\"a\"]\nvia=\"discard:\"\n",
		"[[route]]\nname=\"x\"\ndomains=[\"a\"]\nvia=\"discard:\"\n[[route]]\nname=\"x\"\ndomains=[\"b\"]\nvia=\"discard:\"\n",
		"[[route]]\ndomains=[\"a\"]\nvia=\"mx\"\nfallback=\"nope\"\n",
		"[[route]]\ndomains=[\"a\"]\nvia=\"mx\"\nfallback=\"s\"\nfallback_on=[\"dns\"]\n[[route]]\nname=\"s\"\ndomains=[\"b\"]\nvia=\"discard:\"\n",
		"[[route]]\ndomains=[\"a\"]\nvia=\"discard:\"\nrate=\"fast\"\n",
		"[[route]]\ndomains=[\"a\"]\nvia=\"mx\"\n[route.oauth2]\ntoken_url=\"http://127.0.0.1/t\"\nclient_id=\"c\"\nclient_secret_file=\"/s\"\n",
		"[[route]]\ndomains=[\"a\"]\nvia=\"smtp://127.0.0.1\"\n[route.oauth2]\ntoken_url=\"http://127.0.0.1/t\"\nclient_id=\"c\"\nclient_secret_file=\"/s\"\n",
		"[[route]]\ndomains=[\"a\"]\nvia=\"smtp://127.0.0.1\"\ncert_file=\"/c\"\n",
		"[[route]]\ndomains=[\"a\"]\nvia=[\"smtp://127.0.0.1\", \"mx\"]\n",
		"[[route]]\ndomains=[\"a\"]\nvia=[\"https://x.example/h\", \"smtp://127.0.0.1\"]\n",
		"[[route]]\ndomains=[\"a\"]\nvia=[]\n",
		"[[route]]\ndomains=[\"a\"]\nvia=[1]\n",
	} {
		if _, err := Parse("t.toml", []byte(doc(bad))); err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
}

// oauthHost is a go-smtp smarthost on loopback that accepts OAUTHBEARER
// (go-sasl's server: an independent implementation of RFC 7628) with one
// valid token and stores what it gets.
type oauthHost struct {
	open  bool // no AUTH needed
	mu    sync.Mutex
	valid string
	seen  []string
	got   []string // recipients delivered
}

func (h *oauthHost) NewSession(*gosmtp.Conn) (gosmtp.Session, error) { return &oauthSession{h: h}, nil }

type oauthSession struct {
	h    *oauthHost
	auth bool
	to   []string
}

func (s *oauthSession) AuthMechanisms() []string { return []string{gosasl.OAuthBearer} }
func (s *oauthSession) Auth(string) (gosasl.Server, error) {
	return refuse535{gosasl.NewOAuthBearerServer(func(o gosasl.OAuthBearerOptions) *gosasl.OAuthBearerError {
		s.h.mu.Lock()
		defer s.h.mu.Unlock()
		s.h.seen = append(s.h.seen, o.Username+" "+o.Token)
		if o.Token != s.h.valid || o.Username != "app@contoso.example" {
			return &gosasl.OAuthBearerError{Status: "invalid_token", Schemes: "bearer"}
		}
		s.auth = true
		return nil
	})}, nil
}

// refuse535 ends a refused exchange with 535 5.7.8, as real servers do.
type refuse535 struct{ gosasl.Server }

func (r refuse535) Next(resp []byte) ([]byte, bool, error) {
	ch, done, err := r.Server.Next(resp)
	var se *gosmtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		err = &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	}
	return ch, done, err
}

func (s *oauthSession) Mail(string, *gosmtp.MailOptions) error {
	if !s.auth && !s.h.open {
		return &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	return nil
}
func (s *oauthSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *oauthSession) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	s.h.mu.Lock()
	s.h.got = append(s.h.got, s.to...)
	s.h.mu.Unlock()
	return nil
}
func (s *oauthSession) Reset()        { s.to = nil }
func (s *oauthSession) Logout() error { return nil }

func serveOAuthHost(t *testing.T, h *oauthHost) string {
	srv := gosmtp.NewServer(h)
	srv.Domain = "smarthost.example"
	srv.AllowInsecureAuth = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

func deliverOne(t *testing.T, tr transport.Transport, rcpt string) transport.Result {
	t.Helper()
	j := &transport.Job{ID: "1", Envelope: mail.Envelope{Sender: "a@contoso.example", Recipients: []string{rcpt}},
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("Subject: x\n\nhi\n")), nil }}
	tr.Deliver(context.Background(), []*transport.Job{j})
	if len(j.Results) != 1 {
		t.Fatalf("results %v", j.Results)
	}
	return j.Results[0]
}

// TestOAuth2Route: an smtp route with [route.oauth2] (client credentials)
// gets one token, shares it between connections, refreshes it once after
// an expired-token 535, and turns a revoked refresh token into a temporary
// failure that names the route and the command that renews the grant.
func TestOAuth2Route(t *testing.T) {
	var mu sync.Mutex
	issued := []string{"stale", "fresh"}
	requests := 0
	revoke := false
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if revoke {
			w.WriteHeader(400)
			json.NewEncoder(w).Encode(map[string]any{"error": "invalid_grant"})
			return
		}
		tok := issued[min(requests, len(issued)-1)]
		requests++
		json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3600})
	}))
	defer tokens.Close()
	h := &oauthHost{valid: "fresh"}
	addr := serveOAuthHost(t, h)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	doc := `queue_dir = "` + dir + `/queue"
[[route]]
name = "m365"
domains = ["*"]
via = "smtp://` + addr + `"
tls = "none"
insecure_auth = true
username = "app@contoso.example"
[route.oauth2]
token_url = "` + tokens.URL + `/token"
client_id = "c"
client_secret_file = "` + secret + `"
scopes = ["https://outlook.office365.com/.default"]
`
	cfg, err := Parse("t.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := BuildTransport(cfg, &cfg.Routes[0], slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if r := deliverOne(t, tr, "x@example.com"); !r.Status.IsAccept() {
		t.Fatalf("first delivery: %v", r.Status)
	}
	tr.Close() // drop the pooled connection: the next one authenticates again
	if r := deliverOne(t, tr, "y@example.com"); !r.Status.IsAccept() {
		t.Fatalf("second delivery: %v", r.Status)
	}
	h.mu.Lock()
	seen := strings.Join(h.seen, ",")
	h.mu.Unlock()
	if seen != "app@contoso.example stale,app@contoso.example fresh,app@contoso.example fresh" {
		t.Fatalf("server saw %s", seen)
	}
	mu.Lock()
	if requests != 2 {
		t.Errorf("%d token requests, want 2", requests)
	}
	// The token the server now refuses is dropped; the grant is revoked.
	revoke = true
	mu.Unlock()
	h.mu.Lock()
	h.valid = "never"
	h.mu.Unlock()
	tr.Close()
	before := revokedFor("m365")
	r := deliverOne(t, tr, "z@example.com")
	if r.Status.Class != mail.Temporary || !strings.Contains(r.Status.Text, "qmgate oauth2 login m365") {
		t.Fatalf("revoked grant: %v", r.Status)
	}
	if revokedFor("m365") != before+1 {
		t.Errorf("revoked grants not counted")
	}
}

// revokedFor reads the transport's revoked-grant count of a route.
func revokedFor(route string) uint64 { return transport.RevokedGrants()[route] }

// greeter421 accepts connections and greets each with 421, counting them.
func greeter421(t *testing.T) (string, func() int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
			c.Write([]byte("421 4.3.2 busy, try another host\r\n"))
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// TestSeveralHosts: a route with a list of next hops skips one that
// refuses connections and one that greets with 4xx, delivers each message
// to one host only, marks the failed hosts down in the shared health table,
// and skips them while they back off.
func TestSeveralHosts(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	busy, greeted := greeter421(t)
	h := &oauthHost{open: true}
	good := serveOAuthHost(t, h)
	dir := t.TempDir()
	doc := `queue_dir = "` + dir + `/queue"
[[route]]
domains = ["*"]
via = ["smtp://` + deadAddr + `", "smtp://` + busy + `", "smtp://` + good + `"]
tls = "none"
`
	cfg, err := Parse("t.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Routes[0].Via; got != "smtp://"+deadAddr {
		t.Fatalf("via %q", got)
	}
	tr, err := BuildTransport(cfg, &cfg.Routes[0], slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if r := deliverOne(t, tr, "x@example.com"); !r.Status.IsAccept() || r.HostDown {
		t.Fatalf("first delivery: %+v", r)
	}
	up := map[string]bool{}
	for _, hh := range transport.Nexthops.Snapshot() {
		up[hh.Host] = hh.Up
	}
	if up["smtp://"+deadAddr] || up["smtp://"+busy] || !up["smtp://"+good] {
		t.Fatalf("health %v", up)
	}
	if greeted() != 1 {
		t.Fatalf("busy host greeted %d times", greeted())
	}
	if r := deliverOne(t, tr, "y@example.com"); !r.Status.IsAccept() {
		t.Fatalf("second delivery: %+v", r)
	}
	if greeted() != 1 {
		t.Errorf("host in its backoff was tried again: %d connections", greeted())
	}
	h.mu.Lock()
	got := strings.Join(h.got, ",")
	h.mu.Unlock()
	if got != "x@example.com,y@example.com" {
		t.Errorf("good host got %s", got)
	}
}
