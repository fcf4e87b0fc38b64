package oauthtoken_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	gosasl "github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/qmgate/qmgate/internal/oauthtoken"
	"github.com/qmgate/qmgate/internal/sasl"
)

// smarthost is a go-smtp server on loopback that accepts OAUTHBEARER with
// one valid token and refuses every other token as expired, through
// go-sasl's server side: an independent implementation of RFC 7628 checking
// ours.
type smarthost struct {
	mu    sync.Mutex
	valid string
	seen  []string
}

func (h *smarthost) NewSession(*smtp.Conn) (smtp.Session, error) { return &hostSession{h: h}, nil }

type hostSession struct{ h *smarthost }

func (s *hostSession) AuthMechanisms() []string { return []string{sasl.OAuthBearer} }
func (s *hostSession) Auth(mech string) (gosasl.Server, error) {
	return refuse535{gosasl.NewOAuthBearerServer(func(o gosasl.OAuthBearerOptions) *gosasl.OAuthBearerError {
		s.h.mu.Lock()
		defer s.h.mu.Unlock()
		s.h.seen = append(s.h.seen, o.Username+" "+o.Token)
		if o.Token != s.h.valid || o.Username != "app@contoso.example" {
			return &gosasl.OAuthBearerError{Status: "invalid_token", Schemes: "bearer"}
		}
		return nil
	})}, nil
}

// refuse535 ends a refused exchange with 535 5.7.8, as real servers do
// (RFC 4954 6), where go-smtp's server would answer 454 to a non-SMTP error.
type refuse535 struct{ gosasl.Server }

func (r refuse535) Next(resp []byte) ([]byte, bool, error) {
	ch, done, err := r.Server.Next(resp)
	var se *smtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		err = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	}
	return ch, done, err
}
func (s *hostSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *hostSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *hostSession) Data(io.Reader) error                 { return nil }
func (s *hostSession) Reset()                               {}
func (s *hostSession) Logout() error                        { return nil }

// authenticate is what the SMTP transport does with a route's Source: take
// the shared token, choose the mechanism, AUTH, and after a 535 that blames
// the token, invalidate it and try once more on the same connection.
func authenticate(ctx context.Context, src *oauthtoken.Source, c *smtp.Client, host string, port int) error {
	o := src.Options()
	for attempt := 0; ; attempt++ {
		tok, err := src.Token(ctx)
		if err != nil {
			return err
		}
		_, offer := c.Extension("AUTH")
		mech, err := sasl.Choose(sasl.Offered(offer), o.Mechanism)
		if err != nil {
			return err
		}
		sc, err := sasl.New(mech, o.Username, tok.AccessToken, host, port)
		if err != nil {
			return err
		}
		err = c.Auth(sc)
		if err != nil && attempt == 0 && sasl.TokenExpired(err, sc) {
			src.Invalidate(tok)
			continue
		}
		return err
	}
}

func TestExpiredTokenRetriedOnce(t *testing.T) {
	var n atomic.Int32
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": []string{"stale", "fresh", "later"}[n.Add(1)-1], "token_type": "Bearer", "expires_in": 3600})
	}))
	defer tokens.Close()

	h := &smarthost{valid: "fresh"}
	srv := smtp.NewServer(h)
	srv.Domain = "smarthost.example"
	srv.AllowInsecureAuth = true // loopback test without TLS
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		<-served
	}()

	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("s"), 0o600)
	src, err := oauthtoken.New(oauthtoken.Options{
		Route: "m365", TokenURL: tokens.URL, ClientID: "c", ClientSecretFile: secret,
		Username: "app@contoso.example", Scopes: []string{"https://outlook.office365.com/.default"},
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	c, err := smtp.Dial(addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := authenticate(context.Background(), src, c, "127.0.0.1", addr.Port); err != nil {
		t.Fatalf("AUTH after one refresh: %v", err)
	}
	if got := n.Load(); got != 2 {
		t.Fatalf("%d token requests, want 2 (the stale one and its replacement)", got)
	}
	h.mu.Lock()
	seen := h.seen
	h.mu.Unlock()
	if len(seen) != 2 || seen[0] != "app@contoso.example stale" || seen[1] != "app@contoso.example fresh" {
		t.Fatalf("server saw %q", seen)
	}

	// A token that stays bad is tried only twice, and the refusal shows.
	h.mu.Lock()
	h.valid = "never"
	h.mu.Unlock()
	c2, err := smtp.Dial(addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	err = authenticate(context.Background(), src, c2, "127.0.0.1", addr.Port)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 535 {
		t.Fatalf("AUTH with a bad grant: %v", err)
	}
	if got := n.Load(); got != 3 {
		t.Fatalf("%d token requests, want 3", got)
	}
}
