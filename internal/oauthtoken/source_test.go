package oauthtoken

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// endpoint is a local token endpoint (RFC 6749 3.2) on loopback. reply
// decides the answer to each request; every form is recorded.
type endpoint struct {
	*httptest.Server
	mu    sync.Mutex
	forms []url.Values
	reply func(w http.ResponseWriter, r *http.Request, form url.Values)
}

func newEndpoint(t *testing.T, reply func(w http.ResponseWriter, r *http.Request, form url.Values)) *endpoint {
	t.Helper()
	e := &endpoint{reply: reply}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", 400)
			return
		}
		e.mu.Lock()
		e.forms = append(e.forms, r.PostForm)
		e.mu.Unlock()
		e.reply(w, r, r.PostForm)
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *endpoint) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.forms)
}

func (e *endpoint) form(i int) url.Values {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.forms[i]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// tokenReply answers with a numbered access token valid for life seconds.
func tokenReply(n *atomic.Int32, life int, extra map[string]any) func(http.ResponseWriter, *http.Request, url.Values) {
	return func(w http.ResponseWriter, r *http.Request, form url.Values) {
		v := map[string]any{
			"access_token": fmt.Sprintf("at-%d", n.Add(1)),
			"token_type":   "Bearer",
			"expires_in":   life,
			"scope":        form.Get("scope"),
		}
		for k, x := range extra {
			v[k] = x
		}
		writeJSON(w, 200, v)
	}
}

func errorReply(status int, code string) func(http.ResponseWriter, *http.Request, url.Values) {
	return func(w http.ResponseWriter, r *http.Request, form url.Values) {
		writeJSON(w, status, map[string]string{"error": code, "error_description": "AADSTS700082: secret detail that must not reach a status"})
	}
}

// clock is a test clock that starts at the real time and moves only when
// told, so expiries computed by golang.org/x/oauth2 from time.Now line up.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }

func secretFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func ccOptions(t *testing.T, e *endpoint) Options {
	dir := t.TempDir()
	return Options{
		Route:            "m365",
		TokenURL:         e.URL + "/tenant/oauth2/v2.0/token",
		ClientID:         "client-1",
		ClientSecretFile: secretFile(t, dir, "secret", "s3cret\n"),
		Scopes:           []string{"https://outlook.office365.com/.default"},
		Username:         "app@contoso.example",
	}
}

func TestClientCredentialsShared(t *testing.T) {
	var n atomic.Int32
	e := newEndpoint(t, tokenReply(&n, 3600, nil))
	s, err := New(ccOptions(t, e))
	if err != nil {
		t.Fatal(err)
	}
	// Many connections of the route start at once: one request.
	var wg sync.WaitGroup
	toks := make([]string, 20)
	for i := range toks {
		wg.Go(func() {
			tok, err := s.Token(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			toks[i] = tok.AccessToken
		})
	}
	wg.Wait()
	if e.count() != 1 {
		t.Fatalf("%d token requests for 20 connections, want 1", e.count())
	}
	for _, a := range toks {
		if a != "at-1" {
			t.Fatalf("tokens %q", toks)
		}
	}
	f := e.form(0)
	want := url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {"client-1"},
		"client_secret": {"s3cret"},
		"scope":         {"https://outlook.office365.com/.default"},
	}
	if fmt.Sprint(f) != fmt.Sprint(want) {
		t.Fatalf("request %v, want %v", f, want)
	}
	tok, _ := s.Token(context.Background())
	if Scope(tok) != "https://outlook.office365.com/.default" {
		t.Errorf("scope %q", Scope(tok))
	}
}

func TestRefreshBeforeExpiry(t *testing.T) {
	var n atomic.Int32
	e := newEndpoint(t, tokenReply(&n, 3600, nil))
	o := ccOptions(t, e)
	var c clock
	o.Now = c.now
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	get := func() string {
		t.Helper()
		tok, err := s.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	if a := get(); a != "at-1" {
		t.Fatal(a)
	}
	c.advance(time.Hour - RefreshMargin - time.Minute)
	if a := get(); a != "at-1" || e.count() != 1 {
		t.Fatalf("before the margin: %s after %d requests", a, e.count())
	}
	c.advance(2 * time.Minute) // inside the margin, not yet expired
	if a := get(); a != "at-2" || e.count() != 2 {
		t.Fatalf("inside the margin: %s after %d requests", a, e.count())
	}
}

func TestShortLivedToken(t *testing.T) {
	var n atomic.Int32
	e := newEndpoint(t, tokenReply(&n, 120, nil))
	o := ccOptions(t, e)
	var c clock
	o.Now = c.now
	s, _ := New(o)
	s.Token(context.Background())
	// A two-minute token is replaced at half its life, not never.
	c.advance(50 * time.Second)
	s.Token(context.Background())
	if e.count() != 1 {
		t.Fatalf("%d requests before half life", e.count())
	}
	c.advance(20 * time.Second)
	tok, _ := s.Token(context.Background())
	if e.count() != 2 || tok.AccessToken != "at-2" {
		t.Fatalf("%d requests after half life, token %s", e.count(), tok.AccessToken)
	}
}

func TestInvalidate(t *testing.T) {
	var n atomic.Int32
	e := newEndpoint(t, tokenReply(&n, 3600, nil))
	s, _ := New(ccOptions(t, e))
	t1, _ := s.Token(context.Background())
	// The server said 535 with an expired token: the transport drops it.
	s.Invalidate(t1)
	t2, _ := s.Token(context.Background())
	if t2.AccessToken != "at-2" {
		t.Fatalf("after Invalidate: %s", t2.AccessToken)
	}
	// A second connection that saw the same refusal must not drop the new
	// token.
	s.Invalidate(t1)
	t3, _ := s.Token(context.Background())
	if t3.AccessToken != "at-2" || e.count() != 2 {
		t.Fatalf("stale Invalidate fetched again: %s, %d requests", t3.AccessToken, e.count())
	}
	s.Invalidate(nil)
	if t4, _ := s.Token(context.Background()); t4.AccessToken != "at-3" {
		t.Fatalf("Invalidate(nil): %s", t4.AccessToken)
	}
}

func rtOptions(t *testing.T, e *endpoint, rt string) Options {
	dir := t.TempDir()
	return Options{
		Route:            "gmail",
		TokenURL:         e.URL + "/token",
		DeviceAuthURL:    e.URL + "/device/code",
		ClientID:         "client-2.apps.example",
		ClientSecretFile: secretFile(t, dir, "secret", "gsecret"),
		RefreshTokenFile: secretFile(t, dir, "refresh-token", rt),
		Scopes:           []string{"https://mail.google.com/"},
		Username:         "user@example.com",
	}
}

func TestRefreshTokenRotated(t *testing.T) {
	var n atomic.Int32
	e := newEndpoint(t, tokenReply(&n, 3600, map[string]any{"refresh_token": "rt-2"}))
	o := rtOptions(t, e, "rt-1\n")
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.Token(context.Background())
	if err != nil || tok.AccessToken != "at-1" {
		t.Fatalf("%v %v", tok, err)
	}
	f := e.form(0)
	if f.Get("grant_type") != "refresh_token" || f.Get("refresh_token") != "rt-1" || f.Get("client_id") != "client-2.apps.example" || f.Get("client_secret") != "gsecret" {
		t.Fatalf("request %v", f)
	}
	b, err := os.ReadFile(o.RefreshTokenFile)
	if err != nil || string(b) != "rt-2\n" {
		t.Fatalf("refresh token file %q, %v", b, err)
	}
	fi, _ := os.Stat(o.RefreshTokenFile)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	ents, _ := os.ReadDir(filepath.Dir(o.RefreshTokenFile))
	if len(ents) != 2 {
		t.Fatalf("files left beside the token: %v", ents)
	}
	// The next refresh uses the rotated token.
	s.Invalidate(nil)
	s.Token(context.Background())
	if got := e.form(1).Get("refresh_token"); got != "rt-2" {
		t.Fatalf("second refresh sent %q", got)
	}
}

func TestRefreshTokenKept(t *testing.T) {
	// Google returns no refresh token on refresh: the file stays as it is.
	var n atomic.Int32
	e := newEndpoint(t, tokenReply(&n, 3600, nil))
	o := rtOptions(t, e, "rt-keep")
	o.ClientSecretFile = "" // a public client
	s, _ := New(o)
	if _, err := s.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.form(0)["client_secret"]; ok {
		t.Errorf("public client sent a secret: %v", e.form(0))
	}
	b, _ := os.ReadFile(o.RefreshTokenFile)
	if string(b) != "rt-keep" {
		t.Fatalf("file rewritten: %q", b)
	}
}

func wantError(t *testing.T, err error, kind Kind, text string) *Error {
	t.Helper()
	var oe *Error
	if !errors.As(err, &oe) {
		t.Fatalf("error %v (%T), want *Error", err, err)
	}
	if oe.Kind != kind {
		t.Fatalf("kind %v, want %v (%v)", oe.Kind, kind, err)
	}
	st := mail.StatusOf(err)
	if !st.IsTemporary() {
		t.Fatalf("status %v is not temporary", st)
	}
	if !strings.Contains(st.Text, text) {
		t.Fatalf("status text %q lacks %q", st.Text, text)
	}
	if strings.Contains(st.Text, "AADSTS") || strings.Contains(st.Text, "secret detail") {
		t.Fatalf("status text carries the endpoint's description: %q", st.Text)
	}
	return oe
}

func TestRevokedGrant(t *testing.T) {
	e := newEndpoint(t, errorReply(400, "invalid_grant"))
	s, _ := New(rtOptions(t, e, "rt-revoked"))
	_, err := s.Token(context.Background())
	oe := wantError(t, err, Revoked, "run: qmgate oauth2 login gmail")
	if oe.Code != "invalid_grant" {
		t.Errorf("code %q", oe.Code)
	}
	if !strings.Contains(err.Error(), "revoked") {
		t.Errorf("log text %q", err.Error())
	}
}

func TestRefusedClient(t *testing.T) {
	e := newEndpoint(t, errorReply(401, "invalid_client"))
	s, _ := New(ccOptions(t, e))
	_, err := s.Token(context.Background())
	wantError(t, err, Refused, "(invalid_client)")
}

func TestFailingEndpoint(t *testing.T) {
	var fail atomic.Bool
	var n atomic.Int32
	ok := tokenReply(&n, 3600, nil)
	e := newEndpoint(t, func(w http.ResponseWriter, r *http.Request, form url.Values) {
		if fail.Load() {
			http.Error(w, "internal error", 500)
			return
		}
		ok(w, r, form)
	})
	o := ccOptions(t, e)
	var c clock
	o.Now = c.now
	s, _ := New(o)

	fail.Store(true)
	_, err := s.Token(context.Background())
	oe := wantError(t, err, Unavailable, "not available")
	if st := oe.Status(); st.EnhancedCode() != "4.4.1" {
		t.Errorf("code %s", st.EnhancedCode())
	}

	// With a token that is due but not expired, a failed refresh keeps it.
	fail.Store(false)
	t1, err := s.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	c.advance(time.Hour - time.Minute)
	t2, err := s.Token(context.Background())
	if err != nil || t2.AccessToken != t1.AccessToken {
		t.Fatalf("due token not kept through a failed refresh: %v %v", t2, err)
	}
	// Once it has expired, the failure shows.
	c.advance(2 * time.Minute)
	_, err = s.Token(context.Background())
	wantError(t, err, Unavailable, "not available")
}

func TestSlowEndpoint(t *testing.T) {
	e := newEndpoint(t, func(w http.ResponseWriter, r *http.Request, form url.Values) {
		<-r.Context().Done() // never answers; the client gives up
	})
	o := ccOptions(t, e)
	o.RequestTimeout = 50 * time.Millisecond
	s, _ := New(o)
	_, err := s.Token(context.Background())
	wantError(t, err, Unavailable, "not available")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cause %v, want the deadline", err)
	}

	// A caller whose own context ends while another fetch is under way
	// returns at once.
	s.fetching <- struct{}{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.Token(ctx)
	<-s.fetching
	wantError(t, err, Unavailable, "not available")
}

func TestUnconfigured(t *testing.T) {
	var n atomic.Int32
	e := newEndpoint(t, tokenReply(&n, 3600, nil))
	o := rtOptions(t, e, "x")
	os.Remove(o.RefreshTokenFile)
	s, _ := New(o)
	_, err := s.Token(context.Background())
	wantError(t, err, Unconfigured, "no refresh token stored; run qmgate oauth2 login gmail")

	o = ccOptions(t, e)
	o.ClientSecretFile = filepath.Join(t.TempDir(), "missing")
	s, _ = New(o)
	_, err = s.Token(context.Background())
	wantError(t, err, Unconfigured, "client secret file")
	if e.count() != 0 {
		t.Fatalf("%d requests without credentials", e.count())
	}
}

func TestValidate(t *testing.T) {
	good := Options{Route: "r", TokenURL: "https://login.example/token", ClientID: "c", ClientSecretFile: "/s", Username: "u@example.com"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Options){
		"no token url":   func(o *Options) { o.TokenURL = "" },
		"plain http":     func(o *Options) { o.TokenURL = "http://login.example/token" },
		"no client":      func(o *Options) { o.ClientID = "" },
		"no credentials": func(o *Options) { o.ClientSecretFile = "" },
		"no username":    func(o *Options) { o.Username = "" },
		"username ^A":    func(o *Options) { o.Username = "u\x01auth=x" },
		"mechanism":      func(o *Options) { o.Mechanism = "PLAIN" },
		"device http":    func(o *Options) { o.DeviceAuthURL = "http://login.example/device" },
	} {
		o := good
		mod(&o)
		if err := o.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := New(o); err == nil {
			t.Errorf("%s: New accepted", name)
		}
	}
	o := good
	o.TokenURL = "http://127.0.0.1:8080/token"
	if err := o.Validate(); err != nil {
		t.Errorf("loopback http refused: %v", err)
	}
}

func TestMalformedToken(t *testing.T) {
	e := newEndpoint(t, func(w http.ResponseWriter, r *http.Request, form url.Values) {
		writeJSON(w, 200, map[string]any{"access_token": "ab\x01user=other", "token_type": "Bearer", "expires_in": 3600})
	})
	s, _ := New(ccOptions(t, e))
	_, err := s.Token(context.Background())
	wantError(t, err, Unavailable, "not available")
}
