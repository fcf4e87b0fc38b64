package sasl

import (
	"strings"

	"github.com/qmgate/qmgate/mail"
)

// preference is the order in which Choose takes a mechanism when the route
// fixes none. XOAUTH2 comes first: Microsoft 365 offers only XOAUTH2, Gmail
// offers both and documents XOAUTH2 for SMTP, and OAUTHBEARER is taken only
// from a server that offers nothing else.
var preference = []string{XOAuth2, OAuthBearer}

// Offered splits the parameter of the EHLO keyword AUTH (RFC 4954 3), as
// go-smtp's Client.Extension("AUTH") returns it, into mechanism names.
func Offered(authParam string) []string {
	return strings.Fields(authParam)
}

// Choose picks the OAuth2 mechanism to use with a server that offers the
// mechanisms in offered (names in any case). fixed, when not empty, is the
// route's own choice: it is used if offered, and nothing else is. The error
// is a temporary mail.Status: a server that stops offering OAuth2 is a
// condition to wait out, like any other failure to authenticate.
func Choose(offered []string, fixed string) (string, error) {
	has := func(m string) bool {
		for _, o := range offered {
			if strings.EqualFold(o, m) {
				return true
			}
		}
		return false
	}
	if fixed != "" {
		m := strings.ToUpper(fixed)
		if m != XOAuth2 && m != OAuthBearer {
			return "", mail.Temp("4.7.0", "the route names an unknown OAuth2 mechanism; use XOAUTH2 or OAUTHBEARER")
		}
		if !has(m) {
			return "", mail.Temp("4.7.0", "remote host does not offer the route's authentication mechanism "+m)
		}
		return m, nil
	}
	for _, m := range preference {
		if has(m) {
			return m, nil
		}
	}
	return "", mail.Temp("4.7.0", "remote host offers no OAuth2 authentication mechanism (XOAUTH2 or OAUTHBEARER)")
}

// ValidMechanism checks a route's fixed mechanism: empty (choose from the
// server's offer), XOAUTH2 or OAUTHBEARER, in any case.
func ValidMechanism(name string) bool {
	switch strings.ToUpper(name) {
	case "", XOAuth2, OAuthBearer:
		return true
	}
	return false
}
