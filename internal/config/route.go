package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/qmgate/qmgate/internal/oauthtoken"
	"github.com/qmgate/qmgate/internal/ratelimit"
	"github.com/qmgate/qmgate/internal/sasl"
)

// MaxRouteName bounds a route's name (it is a metric label and a word in
// `queue stat`).
const MaxRouteName = 64

// FallbackFailures are the failures that fallback_on may name: a connect
// that timed out (port 25 blocked by the network), or any failed connect.
var FallbackFailures = []string{"connect-timeout", "connect"}

// DefaultRouteName is the name of a route that has none: its first domain
// ("any" for "*", a leading '.' dropped), the domain of its first sender
// pattern if it has senders, and its transport, such as "example.net-smtp"
// or "any-from-billing.example.net-smtp". It depends on the route's own settings, not its place
// in the file, so reordering routes keeps the names in logs and metrics.
func DefaultRouteName(r *Route) string {
	d := "none"
	if len(r.Domains) > 0 {
		d = strings.TrimPrefix(r.Domains[0], ".")
		if d == "*" {
			d = "any"
		}
	}
	if len(r.Senders) > 0 {
		_, from, ok := strings.Cut(r.Senders[0], "@")
		if !ok {
			from = r.Senders[0]
		}
		d += "-from-" + strings.TrimPrefix(from, ".")
	}
	scheme := r.Via
	if i := strings.IndexByte(scheme, ':'); i >= 0 {
		scheme = scheme[:i]
	}
	return cleanName(d + "-" + scheme)
}

// cleanName keeps letters, digits, '.', '_' and '-', and bounds the length.
func cleanName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !nameByte(c) {
			b[i] = '_'
		}
	}
	if len(b) > MaxRouteName-7 {
		b = b[:MaxRouteName-7]
	}
	return string(b)
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// nameRoutes gives every unnamed route its default name; two unnamed
// routes that would share one are told apart by a short hash of their
// domains and transport (still independent of their order).
func nameRoutes(routes []Route) {
	count := map[string]int{}
	for i := range routes {
		if routes[i].Name == "" {
			count[DefaultRouteName(&routes[i])]++
		}
	}
	for i := range routes {
		r := &routes[i]
		if r.Name != "" {
			continue
		}
		n := DefaultRouteName(r)
		if count[n] > 1 {
			h := sha256.Sum256([]byte(strings.Join(r.Domains, ",") + "\x00" + r.Via + senderKey(r)))
			n += "-" + hex.EncodeToString(h[:3])
		}
		r.Name = n
	}
}

// senderKey is what a route's senders add to the hash that tells apart
// routes of one default name: nothing without senders, so that the names
// of routes without senders stay as they were.
func senderKey(r *Route) string {
	if len(r.Senders) == 0 {
		return ""
	}
	return "\x00" + strings.Join(r.Senders, ",")
}

// RouteByName returns the route called name, or nil.
func (c *Config) RouteByName(name string) *Route {
	for i := range c.Routes {
		if c.Routes[i].Name == name {
			return &c.Routes[i]
		}
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// validateSmarthost checks route i's name, OAuth2, client certificate,
// pacing and fallback settings.
func validateSmarthost(c *Config, i int) Errors {
	var errs Errors
	r := &c.Routes[i]
	key := fmt.Sprintf("route[%d]", i)
	bad := func(k, format string, args ...any) {
		errs = append(errs, &Error{Key: key + "." + k, Msg: fmt.Sprintf(format, args...)})
	}
	scheme := ""
	if r.Parsed != nil {
		scheme = r.Parsed.Scheme
	}
	if r.Name == "" || len(r.Name) > MaxRouteName || strings.IndexFunc(r.Name, func(c rune) bool { return c > 0x7f || !nameByte(byte(c)) }) >= 0 {
		bad("name", "%q: want up to %d letters, digits, '.', '_' or '-'", r.Name, MaxRouteName)
	}
	for j := 0; j < i; j++ {
		if c.Routes[j].Name == r.Name {
			bad("name", "%q is also the name of route[%d]", r.Name, j)
		}
	}
	if r.PasswordEnv != "" && (strings.ContainsAny(r.PasswordEnv, "= \t") || r.PasswordEnv != strings.TrimSpace(r.PasswordEnv)) {
		bad("password_env", "%q is not an environment variable name", r.PasswordEnv)
	}
	if o := r.OAuth2; o != nil {
		switch {
		case scheme != "smtp" && scheme != "smtps":
			bad("oauth2", "OAuth2 is for smtp:// and smtps:// smarthost routes")
		case r.Username == "":
			bad("username", "OAuth2 needs the mailbox the token acts for as username")
		case r.Password != "" || r.PasswordFile != "" || r.PasswordEnv != "":
			bad("oauth2", "set a password or OAuth2, not both")
		case o.TokenURL == "" || o.ClientID == "":
			bad("oauth2", "needs token_url and client_id")
		case o.ClientSecretFile == "" && o.RefreshTokenFile == "":
			bad("oauth2", "needs client_secret_file (client credentials) or refresh_token_file")
		case !sasl.ValidMechanism(o.Mechanism):
			bad("oauth2.mechanism", "%q: use XOAUTH2 or OAUTHBEARER", o.Mechanism)
		}
	}
	if (r.CertFile == "") != (r.KeyFile == "") {
		bad("cert_file", "cert_file and key_file go together")
	}
	if r.Rate != "" {
		if _, err := ratelimit.ParseRate(r.Rate); err != nil {
			bad("rate", "%v", err)
		}
	}
	if r.Fallback != "" || len(r.FallbackOn) > 0 {
		if scheme != "mx" {
			bad("fallback", "only mx routes fall back to another route")
		}
		fb := c.RouteByName(r.Fallback)
		switch {
		case r.Fallback == "":
			bad("fallback", "fallback_on needs fallback, the name of a smarthost route")
		case fb == nil:
			bad("fallback", "no route is called %q", r.Fallback)
		case fb == r || fb.Via == "mx":
			bad("fallback", "%q must be a smarthost route, not an mx route", r.Fallback)
		}
		if r.FallbackAfter < 1 {
			bad("fallback_after", "must be at least 1")
		}
		for j, f := range r.FallbackOn {
			if !slices.Contains(FallbackFailures, f) {
				bad(fmt.Sprintf("fallback_on[%d]", j), "%q: want one of %s", f, strings.Join(FallbackFailures, ", "))
			}
		}
	}
	return errs
}

// OAuth2Options maps the route's [route.oauth2] table to the options of its
// token Source (without a logger); ok is false when the route has none.
func (r *Route) OAuth2Options() (o oauthtoken.Options, ok bool) {
	a := r.OAuth2
	if a == nil {
		return o, false
	}
	return oauthtoken.Options{
		Route: r.Name, TokenURL: a.TokenURL, DeviceAuthURL: a.DeviceAuthURL,
		ClientID: a.ClientID, ClientSecretFile: a.ClientSecretFile, Scopes: a.Scopes,
		RefreshTokenFile: a.RefreshTokenFile, Username: r.Username, Mechanism: a.Mechanism,
	}, true
}

// setVia fills Via and Hosts from the via key: one URL or a list of them.
func (r *Route) setVia() {
	switch v := r.ViaValue.(type) {
	case nil:
		if r.Via != "" && len(r.Hosts) == 0 {
			r.Hosts = []string{r.Via}
		}
	case string:
		r.Via, r.Hosts = v, []string{v}
	case []any:
		r.Hosts = nil
		for _, h := range v {
			s, ok := h.(string)
			if !ok {
				r.viaErr = "want a transport URL or a list of them"
				return
			}
			r.Hosts = append(r.Hosts, s)
		}
		if len(r.Hosts) == 0 {
			r.viaErr = "an empty list of next hops"
			return
		}
		r.Via = r.Hosts[0]
	default:
		r.viaErr = "want a transport URL or a list of them"
	}
}

// failoverScheme reports whether a transport can be one of several next
// hops: those that tell a failed connection from a failed delivery.
func failoverScheme(s string) bool {
	return s == "qmtp" || s == "qmtps" || s == "smtp" || s == "smtps"
}

// ValidSenderPattern checks one entry of a route's senders: an address
// (local@domain), "*@" and a domain pattern, a domain pattern alone, or "*";
// a domain pattern is an exact domain or ".suffix", as in domains.
func ValidSenderPattern(p string) error {
	if p == "*" {
		return nil
	}
	if p == "" || strings.ContainsAny(p, " \t\r\n<>,;\"") {
		return errors.New("want user@example.net, *@example.net, example.net, .example.net or *")
	}
	local, dom, addr := strings.Cut(p, "@")
	if addr {
		if local == "" || strings.Contains(dom, "@") || strings.Contains(local, "*") && local != "*" {
			return errors.New("want user@example.net or *@example.net: a local part, or * for any")
		}
	} else {
		dom = p
	}
	d := strings.TrimPrefix(dom, ".")
	if d == "" || strings.Contains(d, "*") || strings.HasPrefix(d, ".") || strings.Contains(d, "..") {
		return errors.New("want a domain: example.net, or .example.net for its subdomains")
	}
	return nil
}
