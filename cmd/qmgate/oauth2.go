package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/oauth2"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/oauthtoken"
	"github.com/qmgate/qmgate/mail"
)

func init() {
	register(&command{name: "oauth2", summary: "login|token ROUTE: store a smarthost's OAuth2 refresh token, or show its access token's expiry and scope", run: runOAuth2})
}

const oauth2Usage = `usage: qmgate oauth2 login|token [flags] ROUTE

  login  runs the device-code flow once: open the address shown, enter the
         code, approve; the refresh token is stored in -refresh-token-file
  token  gets an access token as the route would and shows its expiry and
         scope (never the token itself)

ROUTE names a route of the configuration (-config, $QMGATE_CONFIG, or the
default file), whose [route.oauth2] settings are used; flags override them,
or give them all for a route not in the configuration:`

// runOAuth2 is `qmgate oauth2 login|token`.
func runOAuth2(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) < 1 || (args[0] != "login" && args[0] != "token") {
		fmt.Fprintln(stderr, oauth2Usage)
		fmt.Fprintln(stderr, "  (run qmgate oauth2 login -h for them)")
		return 64
	}
	sub := args[0]
	var o oauthtoken.Options
	var scopes []string
	fs := newFlags("oauth2 "+sub, oauth2Usage)
	fs.StringVar(&o.TokenURL, "token-url", "", "token endpoint `URL` (https://login.microsoftonline.com/TENANT/oauth2/v2.0/token, https://oauth2.googleapis.com/token)")
	fs.StringVar(&o.DeviceAuthURL, "device-auth-url", "", "device authorization endpoint `URL`, for login (https://login.microsoftonline.com/TENANT/oauth2/v2.0/devicecode, https://oauth2.googleapis.com/device/code)")
	fs.StringVar(&o.ClientID, "client-id", "", "the application's client `ID`")
	fs.StringVar(&o.ClientSecretFile, "client-secret-file", "", "`FILE` holding the client secret (client credentials; Google's device flow)")
	fs.StringVar(&o.RefreshTokenFile, "refresh-token-file", "", "`FILE` holding the refresh token (written by login; without it, client credentials are used)")
	fs.StringVar(&o.Username, "username", "", "the `MAILBOX` the token acts for")
	fs.Func("scope", "a `SCOPE` to request (repeat the flag or separate with spaces)", func(s string) error {
		scopes = append(scopes, strings.Fields(s)...)
		return nil
	})
	cfgPath := fs.String("config", "", "configuration `FILE` holding the route")
	fs.DurationVar(&o.RequestTimeout, "timeout", oauthtoken.RequestTimeout, "time limit of each request to the endpoints, a `DURATION`")
	// ROUTE may stand before or after the flags.
	pos, code, ok := parseFlags(fs, args[1:], stdout, stderr)
	switch {
	case !ok:
		return code
	case len(pos) == 0:
		fs.SetOutput(stderr)
		fs.Usage()
		return 64
	case len(pos) > 1:
		fmt.Fprintln(stderr, "qmgate oauth2: one ROUTE, flags before or after it")
		return 64
	}
	o.Route = pos[0]
	o.Scopes = scopes
	if path := config.Locate(*cfgPath); path != "" {
		cfg, err := config.Load(path)
		if err != nil {
			return fail(stderr, "oauth2 "+sub, 78, "%v", err)
		}
		if rc := cfg.RouteByName(o.Route); rc != nil {
			if ro, ok := rc.OAuth2Options(); ok {
				o = mergeOAuth2(o, ro)
			}
		} else if *cfgPath != "" {
			return fail(stderr, "oauth2 "+sub, 78, "no route is called %s in %s", o.Route, path)
		}
	}
	if err := o.Validate(); err != nil {
		return fail(stderr, "oauth2 "+sub, 78, "%v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if sub == "login" {
		return oauth2Login(ctx, o, stdout, stderr)
	}
	return oauth2Token(ctx, o, stdout, stderr)
}

func oauth2Login(ctx context.Context, o oauthtoken.Options, stdout, stderr io.Writer) int {
	tok, err := oauthtoken.Login(ctx, o, func(uri, code, complete string, expiry time.Time) error {
		fmt.Fprintf(stdout, "To let qmgate send mail as %s through route %s, open\n\n    %s\n\nand enter the code %s", o.Username, o.Route, uri, code)
		if !expiry.IsZero() {
			fmt.Fprintf(stdout, " (valid until %s)", expiry.UTC().Format("15:04 UTC"))
		}
		fmt.Fprintln(stdout, ".")
		fmt.Fprintln(stdout, "Waiting for the approval...")
		return nil
	})
	if err != nil {
		return oauth2Fail(stderr, "oauth2 login", err)
	}
	fmt.Fprintf(stdout, "Refresh token of route %s stored in %s.\n", o.Route, o.RefreshTokenFile)
	describeToken(stdout, o, tok)
	return 0
}

func oauth2Token(ctx context.Context, o oauthtoken.Options, stdout, stderr io.Writer) int {
	s, err := oauthtoken.New(o)
	if err != nil {
		return fail(stderr, "oauth2 token", 78, "%v", err)
	}
	tok, err := s.Token(ctx)
	if err != nil {
		return oauth2Fail(stderr, "oauth2 token", err)
	}
	describeToken(stdout, o, tok)
	return 0
}

// describeToken prints what a person may see of a token: its expiry and
// scope, never the token.
func describeToken(w io.Writer, o oauthtoken.Options, tok *oauth2.Token) {
	fmt.Fprintf(w, "route:   %s (%s, as %s)\n", o.Route, o.Grant(), o.Username)
	if tok.Expiry.IsZero() {
		fmt.Fprintln(w, "expires: not said by the token endpoint")
	} else {
		left := time.Until(tok.Expiry).Round(time.Minute)
		fmt.Fprintf(w, "expires: %s (in %s)\n", tok.Expiry.UTC().Format("2006-01-02 15:04:05 UTC"), plainDuration(left))
	}
	scope := oauthtoken.Scope(tok)
	if scope == "" {
		scope = "not said by the token endpoint"
	}
	fmt.Fprintf(w, "scope:   %s\n", scope)
}

func plainDuration(d time.Duration) string {
	if d < time.Minute {
		return "less than a minute"
	}
	h, m := int(d.Hours()), int(d.Minutes())%60
	switch {
	case h == 0:
		return count(m, "minute")
	case m == 0:
		return count(h, "hour")
	}
	return count(h, "hour") + " " + count(m, "minute")
}

func count(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

// oauth2Fail prints a failure in plain words: the status text of the token
// source's errors, with exit code 75 (try again later), or the login's own
// message (the access was denied, the code expired), with 1.
func oauth2Fail(stderr io.Writer, cmd string, err error) int {
	var oe *oauthtoken.Error
	if errors.As(err, &oe) {
		return fail(stderr, cmd, 75, "%s", mail.StatusOf(err).Text)
	}
	return fail(stderr, cmd, 1, "%v", err)
}

// mergeOAuth2 fills the settings not given as flags from the route's.
func mergeOAuth2(flags, route oauthtoken.Options) oauthtoken.Options {
	o := flags
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&o.TokenURL, route.TokenURL)
	set(&o.DeviceAuthURL, route.DeviceAuthURL)
	set(&o.ClientID, route.ClientID)
	set(&o.ClientSecretFile, route.ClientSecretFile)
	set(&o.RefreshTokenFile, route.RefreshTokenFile)
	set(&o.Username, route.Username)
	set(&o.Mechanism, route.Mechanism)
	if len(o.Scopes) == 0 {
		o.Scopes = route.Scopes
	}
	return o
}
