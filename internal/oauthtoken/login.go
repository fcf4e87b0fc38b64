package oauthtoken

import (
	"context"
	"errors"
	"time"

	"golang.org/x/oauth2"
)

// LoginTimeout bounds the whole device flow when the endpoint does not say
// how long its codes live (expires_in, RFC 8628 3.2).
const LoginTimeout = 15 * time.Minute

// Prompt shows a person where to go and which code to enter (RFC 8628 3.3).
type Prompt func(verificationURI, userCode, verificationURIComplete string, expiry time.Time) error

// Login runs the device authorization grant (RFC 8628) once: it asks the
// device endpoint for a code, calls prompt so that a person can approve the
// access in a browser, polls the token endpoint until they have, and stores
// the refresh token in o.RefreshTokenFile. It returns the first token, whose
// access token the caller should not print.
func Login(ctx context.Context, o Options, prompt Prompt) (*oauth2.Token, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.DeviceAuthURL == "" {
		return nil, errors.New("OAuth2 settings of route " + o.routeName() + " lack: device authorization URL")
	}
	if o.RefreshTokenFile == "" {
		return nil, errors.New("OAuth2 settings of route " + o.routeName() + " lack: refresh token file (login stores the refresh token there)")
	}
	var secret string
	if o.ClientSecretFile != "" {
		var err error
		if secret, err = readSecret(o.ClientSecretFile); err != nil {
			return nil, err
		}
	}
	if o.HTTPClient != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, o.HTTPClient)
	}
	cfg := o.config(secret)
	rctx, cancel := context.WithTimeout(ctx, o.timeout())
	da, err := cfg.DeviceAuth(rctx)
	cancel()
	if err != nil {
		return nil, classify(o.Route, err)
	}
	if da.Expiry.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, LoginTimeout)
		defer cancel()
	}
	if err := prompt(da.VerificationURI, da.UserCode, da.VerificationURIComplete, da.Expiry); err != nil {
		return nil, err
	}
	t, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		var re *oauth2.RetrieveError
		switch {
		case errors.As(err, &re) && re.ErrorCode == "access_denied":
			return nil, errors.New("the access was denied in the browser")
		case errors.As(err, &re) && re.ErrorCode == "expired_token", errors.Is(err, context.DeadlineExceeded):
			return nil, errors.New("the code expired before the access was approved; run the login again")
		}
		return nil, classify(o.Route, err)
	}
	if t.RefreshToken == "" {
		return nil, errors.New("the token endpoint returned no refresh token; for Microsoft add the scope offline_access")
	}
	if err := writeSecret(o.RefreshTokenFile, t.RefreshToken); err != nil {
		return nil, err
	}
	return t, nil
}
