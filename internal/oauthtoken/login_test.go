package oauthtoken

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// deviceEndpoint serves the device authorization endpoint (RFC 8628 3.1) and
// the token endpoint, which answers authorization_pending until pending
// polls have been made, then final; a refresh is answered by final at once.
func deviceEndpoint(t *testing.T, pending int32, final func(http.ResponseWriter, *http.Request, url.Values)) *endpoint {
	var polls atomic.Int32
	return newEndpoint(t, func(w http.ResponseWriter, r *http.Request, form url.Values) {
		switch r.URL.Path {
		case "/device/code":
			if form.Get("client_id") != "client-2.apps.example" || form.Get("scope") != "https://mail.google.com/" {
				writeJSON(w, 400, map[string]string{"error": "invalid_request"})
				return
			}
			writeJSON(w, 200, map[string]any{
				"device_code":      "dev-123",
				"user_code":        "WDJB-MJHT",
				"verification_uri": "https://login.example/device",
				"expires_in":       60,
				"interval":         1,
			})
		case "/token":
			if form.Get("grant_type") == "refresh_token" {
				final(w, r, form)
				return
			}
			if form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:device_code" || form.Get("device_code") != "dev-123" {
				writeJSON(w, 400, map[string]string{"error": "invalid_request"})
				return
			}
			if polls.Add(1) <= pending {
				writeJSON(w, 400, map[string]string{"error": "authorization_pending"})
				return
			}
			final(w, r, form)
		default:
			http.NotFound(w, r)
		}
	})
}

func TestLogin(t *testing.T) {
	var n atomic.Int32
	e := deviceEndpoint(t, 1, tokenReply(&n, 3600, map[string]any{"refresh_token": "rt-new"}))
	o := rtOptions(t, e, "old")
	os.Remove(o.RefreshTokenFile) // the first login: no file yet
	var shown string
	tok, err := Login(context.Background(), o, func(uri, code, complete string, expiry time.Time) error {
		shown = uri + " " + code
		if expiry.IsZero() {
			t.Error("no expiry passed to the prompt")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if shown != "https://login.example/device WDJB-MJHT" {
		t.Errorf("prompt showed %q", shown)
	}
	if tok.AccessToken != "at-1" || Scope(tok) != "https://mail.google.com/" {
		t.Errorf("token %+v", tok)
	}
	b, err := os.ReadFile(o.RefreshTokenFile)
	if err != nil || string(b) != "rt-new\n" {
		t.Fatalf("refresh token file %q, %v", b, err)
	}
	if fi, _ := os.Stat(o.RefreshTokenFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	// The secret is sent with the polls (Google's device flow wants it).
	if got := e.form(e.count() - 1).Get("client_secret"); got != "gsecret" {
		t.Errorf("client_secret %q", got)
	}

	// The stored token now serves the route.
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.form(e.count() - 1).Get("refresh_token"); got != "rt-new" {
		t.Errorf("refresh with %q", got)
	}
}

func TestLoginDenied(t *testing.T) {
	e := deviceEndpoint(t, 0, errorReply(400, "access_denied"))
	o := rtOptions(t, e, "keep")
	_, err := Login(context.Background(), o, func(string, string, string, time.Time) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "denied") {
		t.Fatalf("error %v", err)
	}
	if b, _ := os.ReadFile(o.RefreshTokenFile); string(b) != "keep" {
		t.Fatalf("file changed on a denied login: %q", b)
	}
}

func TestLoginNoRefreshToken(t *testing.T) {
	var n atomic.Int32
	e := deviceEndpoint(t, 0, tokenReply(&n, 3600, nil))
	_, err := Login(context.Background(), rtOptions(t, e, "keep"), func(string, string, string, time.Time) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "offline_access") {
		t.Fatalf("error %v", err)
	}
}

func TestLoginNeedsSettings(t *testing.T) {
	e := deviceEndpoint(t, 0, errorReply(400, "access_denied"))
	o := rtOptions(t, e, "x")
	o.DeviceAuthURL = ""
	if _, err := Login(context.Background(), o, nil); err == nil || !strings.Contains(err.Error(), "device authorization URL") {
		t.Errorf("no device URL: %v", err)
	}
	o = ccOptions(t, e)
	o.DeviceAuthURL = e.URL + "/device/code"
	if _, err := Login(context.Background(), o, nil); err == nil || !strings.Contains(err.Error(), "refresh token file") {
		t.Errorf("no refresh token file: %v", err)
	}
	if e.count() != 0 {
		t.Errorf("%d requests", e.count())
	}
}
