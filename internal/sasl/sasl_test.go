package sasl

import (
	"errors"
	"testing"

	gosasl "github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/qmgate/qmgate/mail"
)

// Both clients satisfy go-sasl's interface, which go-smtp's Client.Auth takes.
var (
	_ gosasl.Client = (*XOAuth2Client)(nil)
	_ gosasl.Client = (*OAuthBearerClient)(nil)
	_ gosasl.Client = Client(nil)
)

func TestXOAuth2Start(t *testing.T) {
	mech, ir, err := NewXOAuth2("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg").Start()
	if err != nil || mech != "XOAUTH2" {
		t.Fatalf("Start: %q, %v", mech, err)
	}
	want := "user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"
	if string(ir) != want {
		t.Fatalf("initial response %q, want %q", ir, want)
	}
}

func TestOAuthBearerStart(t *testing.T) {
	for _, tc := range []struct {
		c    *OAuthBearerClient
		want string
	}{
		// RFC 7628 4.1, without the SASL framing.
		{NewOAuthBearer("user@example.com", "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==", "server.example.com", 143),
			"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"},
		{NewOAuthBearer("", "T", "", 0), "n,,\x01auth=Bearer T\x01\x01"},
		// RFC 5801 4: ',' and '=' in the authzid are escaped.
		{NewOAuthBearer("a,b=c", "T", "h", 0), "n,a=a=2Cb=3Dc,\x01host=h\x01auth=Bearer T\x01\x01"},
	} {
		mech, ir, err := tc.c.Start()
		if err != nil || mech != "OAUTHBEARER" || string(ir) != tc.want {
			t.Errorf("Start: %q %q %v, want %q", mech, ir, err, tc.want)
		}
	}
}

func TestErrorContinuation(t *testing.T) {
	challenge := []byte(`{"status":"invalid_token","schemes":"bearer","scope":"https://mail.example/"}`)
	ob := NewOAuthBearer("u", "T", "h", 25)
	resp, err := ob.Next(challenge)
	if err != nil || string(resp) != "\x01" {
		t.Fatalf("OAUTHBEARER answer %q, %v; want \\x01", resp, err)
	}
	if f := ob.Failure(); f == nil || f.Status != "invalid_token" || f.Scope != "https://mail.example/" || !f.TokenRejected() {
		t.Fatalf("failure %+v", f)
	}
	if _, err := ob.Next(challenge); err == nil {
		t.Fatal("a second continuation must end the exchange")
	}

	xo := NewXOAuth2("u", "T")
	resp, err = xo.Next([]byte(`{"status":"401","schemes":"bearer mac","scope":"https://mail.google.com/"}`))
	if err != nil || resp == nil || len(resp) != 0 {
		t.Fatalf("XOAUTH2 answer %q (nil %v), %v; want an empty, non-nil response", resp, resp == nil, err)
	}
	if !xo.Failure().TokenRejected() {
		t.Fatal("status 401 must read as a rejected token")
	}
}

func TestTokenRejected(t *testing.T) {
	for status, want := range map[string]bool{
		"invalid_token": true, "401": true, "400": true,
		"insufficient_scope": false, "invalid_request": false, "": false,
	} {
		if got := (&Failure{Status: status}).TokenRejected(); got != want {
			t.Errorf("%q: %v, want %v", status, got, want)
		}
	}
	if (*Failure)(nil).TokenRejected() {
		t.Error("nil failure rejected")
	}
	if f := parseFailure([]byte("not json")); f.Status != "" || string(f.Raw) != "not json" {
		t.Errorf("non-JSON challenge: %+v", f)
	}
	if f := parseFailure(make([]byte, 2*MaxChallenge)); len(f.Raw) != MaxChallenge {
		t.Errorf("long challenge kept %d bytes", len(f.Raw))
	}
}

func TestTokenExpired(t *testing.T) {
	e535 := &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Username and Password not accepted"}
	scope := NewXOAuth2("u", "T")
	scope.Next([]byte(`{"status":"insufficient_scope"}`))
	expired := NewOAuthBearer("u", "T", "", 0)
	expired.Next([]byte(`{"status":"invalid_token"}`))
	for _, tc := range []struct {
		name string
		err  error
		c    Client
		want bool
	}{
		{"535 without continuation (Microsoft 365)", e535, NewXOAuth2("u", "T"), true},
		{"535 after invalid_token", e535, expired, true},
		{"535 after insufficient_scope", e535, scope, false},
		{"454 temporary", &smtp.SMTPError{Code: 454}, NewXOAuth2("u", "T"), false},
		{"not an SMTP error", errors.New("connection reset"), NewXOAuth2("u", "T"), false},
		{"nil", nil, NewXOAuth2("u", "T"), false},
	} {
		if got := TokenExpired(tc.err, tc.c); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestNew(t *testing.T) {
	for _, m := range []string{"xoauth2", "XOAUTH2", "OAuthBearer"} {
		c, err := New(m, "u", "T", "h", 587)
		if err != nil {
			t.Fatal(err)
		}
		if mech, _, _ := c.Start(); mech != normal(m) {
			t.Errorf("%s: mechanism %s", m, mech)
		}
	}
	if _, err := New("PLAIN", "u", "T", "", 0); err == nil {
		t.Error("PLAIN accepted")
	}
}

func normal(m string) string {
	if len(m) == len(XOAuth2) {
		return XOAuth2
	}
	return OAuthBearer
}

func TestChoose(t *testing.T) {
	for _, tc := range []struct {
		offered []string
		fixed   string
		want    string // "" for an error
	}{
		{[]string{"LOGIN", "XOAUTH2"}, "", "XOAUTH2"},                                                       // Microsoft 365
		{Offered("LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH"), "", "XOAUTH2"},                // Gmail
		{Offered("LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH"), "oauthbearer", "OAUTHBEARER"}, // fixed
		{[]string{"oauthbearer"}, "", "OAUTHBEARER"},
		{[]string{"XOAUTH2"}, "OAUTHBEARER", ""},
		{[]string{"PLAIN", "LOGIN"}, "", ""},
		{nil, "", ""},
		{[]string{"XOAUTH2"}, "PLAIN", ""},
	} {
		got, err := Choose(tc.offered, tc.fixed)
		if got != tc.want {
			t.Errorf("Choose(%q, %q) = %q, %v; want %q", tc.offered, tc.fixed, got, err, tc.want)
		}
		if tc.want == "" {
			if st := mail.StatusOf(err); !st.IsTemporary() || err == nil {
				t.Errorf("Choose(%q, %q): error %v is not a temporary status", tc.offered, tc.fixed, err)
			}
		}
	}
	for name, want := range map[string]bool{"": true, "xoauth2": true, "OAUTHBEARER": true, "PLAIN": false} {
		if ValidMechanism(name) != want {
			t.Errorf("ValidMechanism(%q) != %v", name, want)
		}
	}
}

func TestFraming(t *testing.T) {
	for _, c := range []Client{
		NewXOAuth2("u\x01auth=Bearer other", "T"),
		NewXOAuth2("u", "T\x01\x01"),
		NewOAuthBearer("u", "T", "h\x01port=1", 0),
		NewOAuthBearer("u", "T\r\n", "h", 0),
	} {
		if _, _, err := c.Start(); err == nil {
			t.Errorf("%+v: started", c)
		}
	}
}
