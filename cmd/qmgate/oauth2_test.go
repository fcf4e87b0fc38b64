package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// oauth2Endpoint is a local token and device endpoint. revoked makes every
// refresh fail with invalid_grant.
func oauth2Endpoint(t *testing.T, revoked bool) *httptest.Server {
	var polls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		reply := func(status int, v any) {
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(v)
		}
		token := map[string]any{"access_token": "SECRET-ACCESS-TOKEN", "token_type": "Bearer", "expires_in": 3599, "scope": r.PostForm.Get("scope")}
		switch {
		case r.URL.Path == "/devicecode":
			reply(200, map[string]any{"device_code": "d", "user_code": "ABCD-EFGH", "verification_uri": "https://login.example/device", "expires_in": 60, "interval": 1})
		case r.PostForm.Get("grant_type") == "urn:ietf:params:oauth:grant-type:device_code":
			if polls.Add(1) == 1 {
				reply(400, map[string]string{"error": "authorization_pending"})
				return
			}
			token["refresh_token"] = "SECRET-REFRESH-TOKEN"
			reply(200, token)
		case revoked:
			reply(400, map[string]string{"error": "invalid_grant"})
		default:
			reply(200, token)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func runCmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(append([]string{"qmgate"}, args...), strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestOAuth2LoginAndToken(t *testing.T) {
	srv := oauth2Endpoint(t, false)
	rt := filepath.Join(t.TempDir(), "refresh-token")
	flags := []string{"-token-url", srv.URL + "/token", "-client-id", "c1", "-username", "user@example.com",
		"-refresh-token-file", rt, "-scope", "https://outlook.office.com/SMTP.Send offline_access"}

	code, out, errs := runCmd(append(append([]string{"oauth2", "login", "o365"}, flags...), "-device-auth-url", srv.URL+"/devicecode")...)
	if code != 0 {
		t.Fatalf("login: %d %s %s", code, out, errs)
	}
	for _, want := range []string{"https://login.example/device", "ABCD-EFGH", "stored in " + rt, "expires: ", "scope:   https://outlook.office.com/SMTP.Send offline_access"} {
		if !strings.Contains(out, want) {
			t.Errorf("login output lacks %q:\n%s", want, out)
		}
	}
	if b, _ := os.ReadFile(rt); string(b) != "SECRET-REFRESH-TOKEN\n" {
		t.Fatalf("stored %q", b)
	}

	code, out, errs = runCmd(append([]string{"oauth2", "token"}, append(flags, "o365")...)...)
	if code != 0 {
		t.Fatalf("token: %d %s %s", code, out, errs)
	}
	if !strings.Contains(out, "route:   o365 (refresh token, as user@example.com)") || !strings.Contains(out, "(in 1 hour)") {
		t.Errorf("token output:\n%s", out)
	}
	if strings.Contains(out+errs, "SECRET") {
		t.Fatalf("a token was printed:\n%s%s", out, errs)
	}
}

func TestOAuth2TokenClientCredentials(t *testing.T) {
	srv := oauth2Endpoint(t, false)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("s"), 0o600)
	code, out, errs := runCmd("oauth2", "token", "-token-url", srv.URL+"/token", "-client-id", "c1", "-client-secret-file", secret,
		"-username", "app@contoso.example", "-scope", "https://outlook.office365.com/.default", "m365")
	if code != 0 || !strings.Contains(out, "client credentials") || !strings.Contains(out, "scope:   https://outlook.office365.com/.default") {
		t.Fatalf("%d\n%s%s", code, out, errs)
	}
}

func TestOAuth2Revoked(t *testing.T) {
	srv := oauth2Endpoint(t, true)
	rt := filepath.Join(t.TempDir(), "refresh-token")
	os.WriteFile(rt, []byte("old"), 0o600)
	code, out, errs := runCmd("oauth2", "token", "-token-url", srv.URL+"/token", "-client-id", "c1", "-username", "u@example.com", "-refresh-token-file", rt, "gmail")
	if code != 75 || !strings.Contains(errs, "revoked") || !strings.Contains(errs, "run: qmgate oauth2 login gmail") {
		t.Fatalf("%d\n%s%s", code, out, errs)
	}
}

func TestOAuth2Usage(t *testing.T) {
	for _, args := range [][]string{
		{"oauth2"},
		{"oauth2", "show"},
		{"oauth2", "token"},
		{"oauth2", "token", "a", "b"},
	} {
		if code, _, _ := runCmd(args...); code != 64 {
			t.Errorf("%q: exit %d, want 64", args, code)
		}
	}
	if code, _, errs := runCmd("oauth2", "token", "r"); code != 78 || !strings.Contains(errs, "token URL") {
		t.Errorf("missing settings: %d %s", code, errs)
	}
}
