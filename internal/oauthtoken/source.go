package oauthtoken

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Source holds the access token of one route. Every connection of the route
// asks it for the token; the first caller after the token's refresh time
// fetches a new one while the others wait for it, so a route sends one
// token request however many connections it opens. Safe for concurrent use.
type Source struct {
	opts Options
	// fetching holds one token while a fetch is under way; waiters select
	// on it with their context, which a mutex would not allow.
	fetching chan struct{}

	mu        sync.Mutex
	tok       *oauth2.Token
	refreshAt time.Time
}

// New returns the Source of a route, after checking its options. It
// fetches nothing: the first Token call does.
func New(o Options) (*Source, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return &Source{opts: o, fetching: make(chan struct{}, 1)}, nil
}

// Options returns the options the Source was built from.
func (s *Source) Options() Options { return s.opts }

// Token returns a valid access token of the route, fetching one when there
// is none or the current one is due for refresh. The token is shared: the
// caller must not modify it. On failure the error is an *Error whose
// temporary mail.Status says why; a token that is due for refresh but not
// yet expired is still returned when the refresh fails.
func (s *Source) Token(ctx context.Context) (*oauth2.Token, error) {
	if t := s.current(true); t != nil {
		return t, nil
	}
	select {
	case s.fetching <- struct{}{}:
	case <-ctx.Done():
		return nil, &Error{Route: s.opts.Route, Kind: Unavailable, Err: ctx.Err()}
	}
	defer func() { <-s.fetching }()
	// Another caller may have fetched while this one waited.
	if t := s.current(true); t != nil {
		return t, nil
	}
	t, err := s.fetch(ctx)
	if err == nil && (t.AccessToken == "" || !printable(t.AccessToken)) {
		// The token goes between ^A separators in the SASL exchange;
		// anything but a b64token (RFC 6750 2.1) there is the endpoint's
		// fault, and temporary.
		err = &Error{Route: s.opts.Route, Kind: Unavailable, Err: errors.New("the token endpoint returned a malformed access token")}
	}
	if err != nil {
		if old := s.current(false); old != nil {
			s.opts.logger().Warn("OAuth2 token refresh failed, using the current token until it expires",
				"route", s.opts.Route, "error", err.Error(), "expiry", old.Expiry)
			return old, nil
		}
		s.opts.logger().Error("OAuth2 token unavailable", "route", s.opts.Route,
			"reason", err.Kind.String(), "error", err.Error())
		return nil, err
	}
	s.store(t)
	s.opts.logger().Info("OAuth2 token fetched", "route", s.opts.Route, "expiry", t.Expiry)
	return t, nil
}

// Invalidate drops the cached token when it is still the one given, so
// that the next Token call fetches a new one. The transport calls it after
// a server refused the token with 535 (sasl.TokenExpired), then tries once
// more. Passing the rejected token, rather than dropping whatever is
// cached, keeps many connections that saw the same refusal from fetching a
// token each: only the first drop counts. nil drops the cached token
// unconditionally.
func (s *Source) Invalidate(rejected *oauth2.Token) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok == nil {
		return
	}
	if rejected == nil || rejected.AccessToken == s.tok.AccessToken {
		s.tok = nil
		s.refreshAt = time.Time{}
	}
}

// current returns the cached token: when due is set, only if it is not yet
// due for refresh; otherwise if it has not expired.
func (s *Source) current(due bool) *oauth2.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok == nil {
		return nil
	}
	now := s.opts.now()
	if due {
		if now.Before(s.refreshAt) {
			return s.tok
		}
		return nil
	}
	if !s.tok.Expiry.IsZero() && now.Before(s.tok.Expiry) {
		return s.tok
	}
	return nil
}

// store caches t and computes when to replace it: RefreshMargin before its
// expiry, or at half its life when it lives less than twice the margin.
func (s *Source) store(t *oauth2.Token) {
	now := s.opts.now()
	at := now.Add(UnknownLifetime)
	if !t.Expiry.IsZero() {
		life := t.Expiry.Sub(now)
		margin := s.opts.margin()
		if margin > life/2 {
			margin = life / 2
		}
		at = t.Expiry.Add(-margin)
	}
	s.mu.Lock()
	s.tok, s.refreshAt = t, at
	s.mu.Unlock()
}

// fetch asks the token endpoint for a new token, within the request
// timeout.
func (s *Source) fetch(ctx context.Context) (*oauth2.Token, *Error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.timeout())
	defer cancel()
	if s.opts.HTTPClient != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, s.opts.HTTPClient)
	}
	var secret string
	if s.opts.ClientSecretFile != "" {
		var err error
		if secret, err = readSecret(s.opts.ClientSecretFile); err != nil {
			return nil, &Error{Route: s.opts.Route, Kind: Unconfigured, Reason: "cannot read the client secret file", Err: err}
		}
	}
	if s.opts.RefreshTokenFile == "" {
		cc := clientcredentials.Config{
			ClientID:     s.opts.ClientID,
			ClientSecret: secret,
			TokenURL:     s.opts.TokenURL,
			Scopes:       s.opts.Scopes,
			AuthStyle:    oauth2.AuthStyleInParams,
		}
		t, err := cc.Token(ctx)
		if err != nil {
			return nil, classify(s.opts.Route, err)
		}
		return t, nil
	}
	rt, err := readSecret(s.opts.RefreshTokenFile)
	if err != nil {
		return nil, &Error{Route: s.opts.Route, Kind: Unconfigured, Reason: "no refresh token stored; run qmgate oauth2 login " + s.opts.routeName(), Err: err}
	}
	t, err := s.opts.config(secret).TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
	if err != nil {
		return nil, classify(s.opts.Route, err)
	}
	if t.RefreshToken != "" && t.RefreshToken != rt {
		// The endpoint rotated the refresh token (Microsoft does). When it
		// cannot be saved the access token is still good, and the old
		// refresh token stays valid until its own expiry at the providers
		// that rotate, so the failure is logged rather than returned.
		if err := writeSecret(s.opts.RefreshTokenFile, t.RefreshToken); err != nil {
			s.opts.logger().Error("OAuth2 rotated refresh token could not be saved", "route", s.opts.Route, "error", err.Error())
		} else {
			s.opts.logger().Info("OAuth2 refresh token rotated and saved", "route", s.opts.Route)
		}
	}
	return t, nil
}

// config is the golang.org/x/oauth2 configuration of the route. The client
// authenticates in the request body (RFC 6749 2.3.1), which every provider
// accepts and which public clients without a secret need.
func (o *Options) config(secret string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     o.ClientID,
		ClientSecret: secret,
		Scopes:       o.Scopes,
		Endpoint: oauth2.Endpoint{
			TokenURL:      o.TokenURL,
			DeviceAuthURL: o.DeviceAuthURL,
			AuthStyle:     oauth2.AuthStyleInParams,
		},
	}
}

// Scope returns the scope a token was granted, as the endpoint returned it
// (RFC 6749 5.1), or "" when it did not say.
func Scope(t *oauth2.Token) string {
	if t == nil {
		return ""
	}
	if s, ok := t.Extra("scope").(string); ok {
		return s
	}
	return ""
}
