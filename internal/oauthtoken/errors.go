package oauthtoken

import (
	"errors"
	"strings"

	"golang.org/x/oauth2"

	"github.com/qmgate/qmgate/mail"
)

// Kind says why a route has no token.
type Kind uint8

const (
	// Unavailable: the token endpoint did not answer, timed out or failed
	// (5xx). Mail waits and the next attempt asks again.
	Unavailable Kind = iota
	// Revoked: the endpoint refused the refresh token (invalid_grant): it was
	// revoked, expired, or the password changed. A person must run
	// `qmgate oauth2 login ROUTE` again; until then mail waits.
	Revoked
	// Refused: the endpoint refused the client or the request
	// (invalid_client, unauthorized_client, invalid_scope, ...): the
	// application's registration or the route's settings are wrong.
	Refused
	// Unconfigured: a file the route needs is missing or unreadable, or no
	// refresh token has been stored yet.
	Unconfigured
)

func (k Kind) String() string {
	switch k {
	case Revoked:
		return "revoked"
	case Refused:
		return "refused"
	case Unconfigured:
		return "unconfigured"
	}
	return "unavailable"
}

// Error is why a Source has no token for its route. Its Status is always
// temporary, so the queue keeps the mail until the lifetime ends; Kind lets
// a caller log and count a revoked grant loudly. errors.As finds both the
// Error and its mail.Status (mail.StatusOf works on it); Err is the
// underlying cause, for logs only.
type Error struct {
	Route string
	Kind  Kind
	// Code is the endpoint's RFC 6749 5.2 error code, when it sent one.
	Code string
	// Reason says in plain words what is missing when Kind is Unconfigured.
	Reason string
	Err    error
}

// Error is the text for logs: plain words and the cause.
func (e *Error) Error() string {
	s := e.Status().Text
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap gives errors.As and errors.Is the status and the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Status()}
	}
	return []error{e.Status(), e.Err}
}

// Status is the temporary mail.Status recorded for the route's recipients
// and shown by `queue show`. It names the route and, for a revoked grant,
// the command that renews it; it never holds a token or a secret.
func (e *Error) Status() mail.Status {
	r := routeName(e.Route)
	switch e.Kind {
	case Revoked:
		return mail.Temp("4.7.0", "OAuth2 grant of route "+r+" was revoked or has expired; run: qmgate oauth2 login "+r)
	case Refused:
		return mail.Temp("4.7.0", "OAuth2 token endpoint of route "+r+" refused the request ("+e.codeText()+"); check the client id, secret and scopes")
	case Unconfigured:
		return mail.Temp("4.7.0", "OAuth2 of route "+r+" is not set up: "+e.Reason)
	}
	return mail.Temp("4.4.1", "OAuth2 token endpoint of route "+r+" is not available; will retry")
}

// codeText is Code when it is a plain RFC 6749 error code (letters, digits
// and '_'), so that nothing the endpoint sends reaches a status text.
func (e *Error) codeText() string {
	odd := func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == ' ')
	}
	if e.Code == "" || len(e.Code) > 64 || strings.ContainsFunc(e.Code, odd) {
		return "no reason given"
	}
	return e.Code
}

// classify turns an error of golang.org/x/oauth2 into an *Error.
func classify(route string, err error) *Error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		code := re.ErrorCode
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		switch {
		case code == "invalid_grant":
			return &Error{Route: route, Kind: Revoked, Code: code, Err: err}
		case status >= 500 || status == 429 || code == "temporarily_unavailable" || code == "server_error":
			// RFC 6749 4.1.2.1 names the last two; 429 and 5xx are HTTP's.
			return &Error{Route: route, Kind: Unavailable, Code: code, Err: err}
		case code != "" || status >= 400:
			if code == "" {
				code = "HTTP " + strings.TrimSpace(strings.SplitN(re.Response.Status, " ", 2)[0])
			}
			return &Error{Route: route, Kind: Refused, Code: code, Err: err}
		}
	}
	// Anything else (no connection, a deadline, a malformed reply, a reply
	// without a token) is the endpoint's trouble: temporary, like every
	// unknown error.
	return &Error{Route: route, Kind: Unavailable, Err: err}
}
