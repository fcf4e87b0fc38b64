// Package sasl holds the SASL client mechanisms that carry an OAuth2 bearer
// token in SMTP AUTH: XOAUTH2 (Google's and Microsoft's format) and
// OAUTHBEARER (RFC 7628), and the choice between them from what a server
// offers. The clients satisfy github.com/emersion/go-sasl's Client interface,
// which go-smtp's Client.Auth drives.
//
// It knows nothing of where a token comes from (see internal/oauthtoken) or of
// the connection; it only builds the bytes of the exchange and remembers the
// error a server sent, so a transport can tell an expired token from other
// refusals.
package sasl

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
)

// Mechanism names as servers list them after AUTH in EHLO (RFC 4954 3).
const (
	XOAuth2     = "XOAUTH2"
	OAuthBearer = "OAUTHBEARER"
)

// MaxChallenge bounds the error challenge a client keeps. The JSON of
// RFC 7628 3.2.2 is a few dozen bytes; anything longer is kept cut.
const MaxChallenge = 1024

// Client is a SASL client mechanism for one authentication attempt. Start and
// Next are go-sasl's Client interface; Failure reports what the server said
// about the token, if it said anything.
type Client interface {
	Start() (mech string, ir []byte, err error)
	Next(challenge []byte) (response []byte, err error)
	// Failure is the error the server sent in its continuation (RFC 7628
	// 3.2.2), or nil when it sent none.
	Failure() *Failure
}

// Failure is the error a server sends in a 334 continuation when it refuses
// a token: JSON with "status", "schemes" and "scope" (RFC 7628 3.2.2). Google
// sends it for XOAUTH2 too, with an HTTP status code as "status".
type Failure struct {
	Status  string `json:"status"`
	Schemes string `json:"schemes,omitempty"`
	Scope   string `json:"scope,omitempty"`
	// Raw is the decoded challenge as the server sent it (at most
	// MaxChallenge bytes), kept when it is not JSON.
	Raw []byte `json:"-"`
}

// TokenRejected reports whether the failure says the token itself is bad:
// expired, revoked or malformed (RFC 6750 3.1 "invalid_token", or "401" as
// Google sends it), so that a fresh token may succeed. "insufficient_scope"
// and "invalid_request" say the grant or the request is wrong, and a new
// token would fail the same way.
func (f *Failure) TokenRejected() bool {
	if f == nil {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(f.Status)) {
	case "invalid_token", "401", "400":
		// Gmail answers an expired token with "400" as well as "401". Being
		// generous costs one token request: the retry happens only once.
		return true
	}
	return false
}

func parseFailure(challenge []byte) *Failure {
	if len(challenge) > MaxChallenge {
		challenge = challenge[:MaxChallenge]
	}
	f := &Failure{Raw: append([]byte(nil), challenge...)}
	if err := json.Unmarshal(challenge, f); err != nil {
		f.Status = ""
	}
	return f
}

// errFraming refuses a value that would break out of its field.
var errFraming = errors.New("sasl: username, token or host contains a control character")

// unframed checks that no value holds ^A, the field separator of both
// mechanisms, or another control character.
func unframed(values ...string) error {
	for _, v := range values {
		for i := 0; i < len(v); i++ {
			if v[i] < 0x20 || v[i] == 0x7f {
				return errFraming
			}
		}
	}
	return nil
}

// errExtraChallenge ends an exchange in which the server sent a second
// continuation after the client has answered its error: go-smtp then
// cancels the AUTH with "*" (RFC 4954 4).
var errExtraChallenge = errors.New("sasl: unexpected challenge after the error continuation")

// XOAuth2Client is the XOAUTH2 mechanism: the initial response is
// "user=" USER ^A "auth=Bearer " TOKEN ^A ^A. A server that refuses the
// token sends a 334 continuation with a JSON error, to which the client
// answers with an empty line; the server then sends 535.
type XOAuth2Client struct {
	Username string
	Token    string
	failure  *Failure
}

// NewXOAuth2 returns an XOAUTH2 client for one attempt.
func NewXOAuth2(username, token string) *XOAuth2Client {
	return &XOAuth2Client{Username: username, Token: token}
}

// Start returns the mechanism name and the initial response.
func (c *XOAuth2Client) Start() (string, []byte, error) {
	if err := unframed(c.Username, c.Token); err != nil {
		return "", nil, err
	}
	ir := "user=" + c.Username + "\x01auth=Bearer " + c.Token + "\x01\x01"
	return XOAuth2, []byte(ir), nil
}

// Next answers the error continuation with an empty response and records
// the error; a second continuation ends the exchange.
func (c *XOAuth2Client) Next(challenge []byte) ([]byte, error) {
	if c.failure != nil {
		return nil, errExtraChallenge
	}
	c.failure = parseFailure(challenge)
	return []byte{}, nil
}

// Failure returns the error the server sent, or nil.
func (c *XOAuth2Client) Failure() *Failure { return c.failure }

// OAuthBearerClient is the OAUTHBEARER mechanism of RFC 7628: the initial
// response is the GS2 header "n,a=USER," followed by ^A "host=" HOST ^A
// "port=" PORT ^A "auth=Bearer " TOKEN ^A ^A (RFC 7628 3.1). A server that
// refuses the token sends a JSON error in a 334 continuation, to which the
// client must answer with a single ^A (RFC 7628 3.2.3); the server then sends
// 535.
//
// go-sasl has an OAUTHBEARER client, but it answers the error continuation by
// cancelling the exchange ("*") instead of with ^A, so the server's 535 and
// its reply text are lost; hence this one.
type OAuthBearerClient struct {
	Username string // authorization identity; omitted from the header when empty
	Token    string
	Host     string // the server's host name; omitted when empty
	Port     int    // the server's port; omitted when zero
	failure  *Failure
}

// NewOAuthBearer returns an OAUTHBEARER client for one attempt.
func NewOAuthBearer(username, token, host string, port int) *OAuthBearerClient {
	return &OAuthBearerClient{Username: username, Token: token, Host: host, Port: port}
}

// Start returns the mechanism name and the initial response.
func (c *OAuthBearerClient) Start() (string, []byte, error) {
	if err := unframed(c.Username, c.Token, c.Host); err != nil {
		return "", nil, err
	}
	var b strings.Builder
	b.WriteString("n,")
	if c.Username != "" {
		// RFC 5801 4: "=" and "," in the authzid are escaped as =3D and =2C.
		b.WriteString("a=")
		b.WriteString(strings.NewReplacer("=", "=3D", ",", "=2C").Replace(c.Username))
	}
	b.WriteString(",")
	if c.Host != "" {
		b.WriteString("\x01host=" + c.Host)
	}
	if c.Port != 0 {
		b.WriteString("\x01port=" + strconv.Itoa(c.Port))
	}
	b.WriteString("\x01auth=Bearer " + c.Token + "\x01\x01")
	return OAuthBearer, []byte(b.String()), nil
}

// Next answers the error continuation with ^A (RFC 7628 3.2.3) and records
// the error; a second continuation ends the exchange.
func (c *OAuthBearerClient) Next(challenge []byte) ([]byte, error) {
	if c.failure != nil {
		return nil, errExtraChallenge
	}
	c.failure = parseFailure(challenge)
	return []byte{0x01}, nil
}

// Failure returns the error the server sent, or nil.
func (c *OAuthBearerClient) Failure() *Failure { return c.failure }

// New returns a client of the named mechanism (XOAUTH2 or OAUTHBEARER, in
// any case). host and port name the server for OAUTHBEARER; XOAUTH2 has no
// place for them.
func New(mech, username, token, host string, port int) (Client, error) {
	switch strings.ToUpper(mech) {
	case XOAuth2:
		return NewXOAuth2(username, token), nil
	case OAuthBearer:
		return NewOAuthBearer(username, token, host, port), nil
	}
	return nil, errors.New("unknown OAuth2 SASL mechanism " + strconv.Quote(mech) + " (XOAUTH2 or OAUTHBEARER)")
}

// TokenExpired reports whether err, returned by go-smtp's Client.Auth with
// c, is a 535 refusal that a fresh token may cure: the server's error
// continuation said the token was bad (Failure.TokenRejected), or the server
// sent no continuation at all, as Microsoft 365 does for every bad token
// ("535 5.7.3 Authentication unsuccessful"). The transport then invalidates
// the route's token and tries once more, and only once.
func TokenExpired(err error, c Client) bool {
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 535 {
		return false
	}
	f := c.Failure()
	// A continuation that is not JSON says nothing either way: try once more.
	return f == nil || f.Status == "" || f.TokenRejected()
}
