package transport

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/qmgate/qmgate/internal/oauthtoken"
	"github.com/qmgate/qmgate/internal/sasl"
	"github.com/qmgate/qmgate/mail"
)

// OAuth2 authenticates a smarthost route's SMTP connections with the
// route's shared token Source (smtp.Client.Authenticate): it takes the
// token, chooses XOAUTH2 or OAUTHBEARER from the server's offer (or the
// route's fixed mechanism), and after a 535 that blames the token
// invalidates it and tries once more on the same connection (RFC 7628 3.2.2:
// the server may answer a bad token with an error continuation).
type OAuth2 struct {
	Source *oauthtoken.Source
	Log    *slog.Logger
}

// revoked counts, per route, the connections that found the route's grant
// revoked; RevokedGrants reads it for the metrics.
var revoked sync.Map // route name -> *atomic.Uint64

// RevokedGrants returns, per route, how many times a connection found the
// route's OAuth2 grant revoked or expired since start.
func RevokedGrants() map[string]uint64 {
	out := map[string]uint64{}
	revoked.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return out
}

// Authenticate is the smtp.Client.Authenticate hook.
func (o *OAuth2) Authenticate(ctx context.Context, gc *gosmtp.Client, host string, port int) error {
	opts := o.Source.Options()
	for attempt := 0; ; attempt++ {
		tok, err := o.Source.Token(ctx)
		if err != nil {
			var te *oauthtoken.Error
			if errors.As(err, &te) && te.Kind == oauthtoken.Revoked {
				c, _ := revoked.LoadOrStore(opts.Route, new(atomic.Uint64))
				c.(*atomic.Uint64).Add(1)
				if o.Log != nil {
					o.Log.Error("OAuth2 grant revoked or expired: mail for this route waits until someone runs qmgate oauth2 login",
						"route", opts.Route, "host", host)
				}
			}
			return err
		}
		ok, offer := gc.Extension("AUTH")
		if !ok {
			return mail.Status{Class: mail.Temporary, Code: "4.7.0", Text: "remote host does not offer AUTH"}
		}
		mech, err := sasl.Choose(sasl.Offered(offer), opts.Mechanism)
		if err != nil {
			return mail.Status{Class: mail.Temporary, Code: "4.7.0", Text: "remote host offers neither XOAUTH2 nor OAUTHBEARER"}
		}
		sc, err := sasl.New(mech, opts.Username, tok.AccessToken, host, port)
		if err != nil {
			return err
		}
		err = gc.Auth(sc)
		if err != nil && attempt == 0 && sasl.TokenExpired(err, sc) {
			if o.Log != nil {
				o.Log.Info("OAuth2 token refused, fetching a new one", "route", opts.Route, "host", host)
			}
			o.Source.Invalidate(tok)
			continue
		}
		return err
	}
}
