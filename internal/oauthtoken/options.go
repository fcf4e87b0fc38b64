// Package oauthtoken gets and keeps the OAuth2 access tokens with which a
// smarthost route authenticates (SMTP AUTH XOAUTH2 or OAUTHBEARER, see
// internal/sasl). One Source per route holds the route's token, shares it
// between all of the route's connections, and refreshes it before it
// expires, through golang.org/x/oauth2. Two grants are supported: client
// credentials (RFC 6749 4.4; Microsoft 365 application access) and a refresh
// token kept in a file (RFC 6749 6; Gmail and delegated Microsoft access),
// which Login obtains once with the device authorization grant (RFC 8628).
//
// It knows nothing of SMTP or of the configuration file: a route is
// described by a plain Options struct. Failures are temporary mail.Status
// values, so mail waits while a token endpoint is down or a grant needs to
// be renewed by a person.
package oauthtoken

import (
	"cmp"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/qmgate/qmgate/internal/sasl"
)

// Defaults for the limits in Options.
const (
	// RefreshMargin is how long before its expiry a token is replaced. Five
	// minutes covers clock skew and a slow connection that started with the
	// token just before. A token that lives less than twice the margin is
	// replaced at half its life instead.
	RefreshMargin = 5 * time.Minute
	// UnknownLifetime is how long a token is used when the endpoint does not
	// say when it expires (expires_in is only RECOMMENDED, RFC 6749 5.1).
	UnknownLifetime = 30 * time.Minute
	// RequestTimeout bounds one request to the token endpoint.
	RequestTimeout = 30 * time.Second
	// MaxSecretFileBytes bounds a client secret or refresh token file.
	MaxSecretFileBytes = 16 << 10
)

// Options describe the OAuth2 settings of one route.
type Options struct {
	// Route names the route in status texts and logs ("m365").
	Route string
	// TokenURL is the token endpoint, such as
	// https://login.microsoftonline.com/TENANT/oauth2/v2.0/token or
	// https://oauth2.googleapis.com/token.
	TokenURL string
	// DeviceAuthURL is the device authorization endpoint (RFC 8628 3.1), used
	// only by Login.
	DeviceAuthURL string
	// ClientID is the application's client id.
	ClientID string
	// ClientSecretFile holds the client secret (first line). Required for
	// client credentials; optional with a refresh token (public clients have
	// none; Google's device flow wants one).
	ClientSecretFile string
	// Scopes requested, such as https://outlook.office365.com/.default (client
	// credentials), https://outlook.office.com/SMTP.Send offline_access, or
	// https://mail.google.com/.
	Scopes []string
	// RefreshTokenFile holds the refresh token, owned by the mail user, mode
	// 0600. When set, the route uses the refresh token grant; when empty,
	// client credentials. A rotated refresh token is written back to it.
	RefreshTokenFile string
	// Username is the mailbox the token acts for, sent in the SASL exchange.
	Username string
	// Mechanism fixes the SASL mechanism (XOAUTH2 or OAUTHBEARER); empty
	// chooses from the server's offer (sasl.Choose).
	Mechanism string

	// RefreshMargin overrides the package's RefreshMargin when positive.
	RefreshMargin time.Duration
	// RequestTimeout overrides the package's RequestTimeout when positive.
	RequestTimeout time.Duration
	// HTTPClient makes the token requests; nil uses http.DefaultClient.
	HTTPClient *http.Client
	// Logger receives one line per token fetched or failed; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil uses time.Now. Tests move it forward.
	Now func() time.Time
}

// Grant names the way a route gets its tokens.
func (o *Options) Grant() string {
	if o.RefreshTokenFile != "" {
		return "refresh token"
	}
	return "client credentials"
}

// Validate checks the options without touching files or the network.
func (o *Options) Validate() error {
	var missing []string
	if o.TokenURL == "" {
		missing = append(missing, "token URL")
	}
	if o.ClientID == "" {
		missing = append(missing, "client id")
	}
	if o.RefreshTokenFile == "" && o.ClientSecretFile == "" {
		missing = append(missing, "client secret file (or a refresh token file)")
	}
	if o.Username == "" {
		missing = append(missing, "username")
	}
	if len(missing) > 0 {
		return errors.New("OAuth2 settings of route " + o.routeName() + " lack: " + strings.Join(missing, ", "))
	}
	if !strings.HasPrefix(o.TokenURL, "https://") && !loopbackHTTP(o.TokenURL) {
		return errors.New("OAuth2 token URL of route " + o.routeName() + " must be https:// (plain http only to loopback)")
	}
	if o.DeviceAuthURL != "" && !strings.HasPrefix(o.DeviceAuthURL, "https://") && !loopbackHTTP(o.DeviceAuthURL) {
		return errors.New("OAuth2 device authorization URL of route " + o.routeName() + " must be https:// (plain http only to loopback)")
	}
	if !printable(o.Username) {
		// It is framed by ^A in the SASL exchange.
		return errors.New("OAuth2 username of route " + o.routeName() + " must not contain spaces or control characters")
	}
	if !sasl.ValidMechanism(o.Mechanism) {
		return errors.New("OAuth2 mechanism of route " + o.routeName() + " must be XOAUTH2 or OAUTHBEARER")
	}
	return nil
}

// printable reports whether s is visible ASCII only (%x21-7E): a username,
// or an access token, which RFC 6750 2.1 restricts further (b64token).
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// loopbackHTTP allows plain http to a loopback token endpoint, for tests and
// for a local token broker.
func loopbackHTTP(u string) bool {
	for _, p := range []string{"http://127.", "http://[::1]", "http://localhost:", "http://localhost/"} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}

func (o *Options) routeName() string { return routeName(o.Route) }

// routeName is how status texts and errors name a route.
func routeName(r string) string { return cmp.Or(r, "(unnamed)") }

// margin and timeout are the overrides when positive, else the defaults.
func (o *Options) margin() time.Duration  { return cmp.Or(max(o.RefreshMargin, 0), RefreshMargin) }
func (o *Options) timeout() time.Duration { return cmp.Or(max(o.RequestTimeout, 0), RequestTimeout) }

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Options) logger() *slog.Logger { return cmp.Or(o.Logger, slog.New(slog.DiscardHandler)) }
