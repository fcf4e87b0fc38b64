package config

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/qmgate/qmgate/internal/mtasts"
	"github.com/qmgate/qmgate/internal/oauthtoken"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/relay/transport"
	"github.com/qmgate/qmgate/smtp"
)

// BuildTransport turns one route of a validated configuration into its
// transport. It is the only place that reads a route's settings; the
// transports themselves know nothing of this package. Files the route names
// (ca_file, password_file, users_file) are read now, so building again
// (a reload) picks up their changes.
func BuildTransport(cfg *Config, rc *Route, log *slog.Logger) (transport.Transport, error) {
	if len(rc.Hosts) > 1 {
		return failover(cfg, rc, log)
	}
	return buildOne(cfg, rc, nil, log)
}

// failover builds a route with several next hops: one transport per hop
// behind a transport.Failover, with one OAuth2 token Source for them all.
func failover(cfg *Config, rc *Route, log *slog.Logger) (transport.Transport, error) {
	src, err := oauthSource(rc, log)
	if err != nil {
		return nil, err
	}
	f := &transport.Failover{}
	for _, h := range rc.Hosts {
		one := *rc
		one.ViaValue, one.Via, one.Hosts = h, h, []string{h}
		if one.Parsed, err = ParseVia(h); err != nil {
			f.Close()
			return nil, err
		}
		t, err := buildOne(cfg, &one, src, log)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", h, err)
		}
		f.Hops = append(f.Hops, transport.Hop{Host: hostKey(one.Parsed), Transport: t})
	}
	return f, nil
}

// hostKey names a next hop in the shared health table and the metrics:
// its URL without user information or path.
func hostKey(u *url.URL) string {
	if u.Host == "" {
		return u.String()
	}
	return u.Scheme + "://" + u.Host
}

// oauthSource makes the route's token Source, or nil when it has no
// [route.oauth2].
func oauthSource(rc *Route, log *slog.Logger) (*oauthtoken.Source, error) {
	o, ok := rc.OAuth2Options()
	if !ok || rc.Via == "mx" {
		return nil, nil
	}
	o.Logger = log
	src, err := oauthtoken.New(o)
	if err != nil {
		return nil, fmt.Errorf("oauth2: %w", err)
	}
	return src, nil
}

// buildOne builds the transport of a route with one next hop; src, when
// set, is the route's shared OAuth2 token Source.
func buildOne(cfg *Config, rc *Route, src *oauthtoken.Source, log *slog.Logger) (transport.Transport, error) {
	u := rc.Parsed
	if u == nil {
		var err error
		if u, err = ParseVia(rc.Via); err != nil {
			return nil, err
		}
	}
	d := cfg.Delivery
	switch u.Scheme {
	case "discard":
		return transport.Discard{}, nil
	case "maildir", "mbox":
		// Directories are made on first delivery, by the daemon's user.
		var users *transport.Users
		if rc.UsersFile != "" {
			var err error
			if users, err = transport.LoadUsers(rc.UsersFile); err != nil {
				return nil, fmt.Errorf("users_file: %w", err)
			}
		}
		uc, err := userControl(cfg, rc, log)
		if err != nil {
			return nil, err
		}
		if u.Scheme == "mbox" {
			return &transport.Mbox{Mailboxes: transport.Mailboxes{Dir: Dir(u), Users: users, MaxNewPerHour: rc.MaxNewMailboxesPerHour, UserControl: uc}}, nil
		}
		return &transport.Maildir{Mailboxes: transport.Mailboxes{Dir: Dir(u), Users: users, MaxNewPerHour: rc.MaxNewMailboxesPerHour, UserControl: uc},
			Hostname: cfg.Hostname}, nil
	case "qmtp", "qmtps":
		c := &qmtp.Client{ConnectTimeout: d.ConnectTimeout.D(), IOTimeout: d.Timeout.D()}
		addr := withPort(u.Host, qmtp.DefaultPort)
		if u.Scheme == "qmtps" {
			if u.Port() == "" {
				return nil, fmt.Errorf("qmtps:// needs a port: QMTPS has no registered one")
			}
			tc, err := routeTLS(rc, u.Hostname())
			if err != nil {
				return nil, err
			}
			c.TLSConfig = tc
			addr = u.Host
		}
		return transport.NewQMTP(addr, c, transport.Reuse{MaxIdle: rc.Concurrency}), nil
	case "qmqp":
		var servers []string
		for _, s := range strings.Split(u.Host, ",") {
			servers = append(servers, withPort(s, qmqp.DefaultPort))
		}
		// qmail-qmqpc's 10 s connect and 60 s I/O defaults: QMQP servers
		// are near and answer fast, and a quick failover is the point.
		return &transport.QMQP{Client: &qmqp.Client{Servers: servers}}, nil
	case "smtp", "smtps":
		c, err := smtpClient(cfg, rc, log)
		if err != nil {
			return nil, err
		}
		if src == nil {
			if src, err = oauthSource(rc, log); err != nil {
				return nil, err
			}
		}
		if src != nil {
			c.Username, c.Password = "", ""
			c.Authenticate = (&transport.OAuth2{Source: src, Log: log}).Authenticate
		}
		switch rc.TLS {
		case "", "required":
			c.TLS = smtp.TLSRequired
		case "opportunistic":
			c.TLS = smtp.TLSOpportunistic
		case "none":
			c.TLS = smtp.TLSNone
		}
		if (c.Username != "" || c.Authenticate != nil) && c.TLS == smtp.TLSOpportunistic && !rc.InsecureAuth {
			// Credentials go only over verified TLS: without the
			// override, opportunistic becomes required for this route.
			c.TLS = smtp.TLSRequired
		}
		return transport.NewSMTP(u.Scheme+"://"+u.Host, c, transport.Reuse{MaxIdle: rc.Concurrency}), nil
	case "mx":
		return mxTransport(cfg, rc, log)
	case "http", "https":
		hdr := http.Header{}
		for _, h := range rc.Headers {
			k, v, ok := strings.Cut(h, ":")
			if !ok {
				return nil, fmt.Errorf("header %q: want \"Name: value\"", h)
			}
			hdr.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		var hc *http.Client
		if rc.CAFile != "" {
			tc, err := routeTLS(rc, "")
			if err != nil {
				return nil, err
			}
			hc = &http.Client{Transport: &http.Transport{TLSClientConfig: tc, Proxy: nil}}
		}
		return transport.NewWebhook(transport.WebhookOptions{
			URL: u.String(), Headers: hdr, HTTPClient: hc,
			Timeout:           max(d.Timeout.D(), 30*time.Second) / 10,
			RedirectPermanent: rc.RedirectPermanent,
			Log:               log,
		}), nil
	}
	return nil, fmt.Errorf("unknown transport %q", u.Scheme)
}

// withPort adds the default port to host when it has none.
func withPort(hostport string, port int) string {
	if _, _, err := net.SplitHostPort(hostport); err == nil {
		return hostport
	}
	h := strings.Trim(hostport, "[]")
	return net.JoinHostPort(h, fmt.Sprint(port))
}

// routeTLS builds the client TLS configuration of a route: the system roots,
// or the route's ca_file.
func routeTLS(rc *Route, serverName string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if rc.CAFile != "" {
		pem, err := os.ReadFile(rc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no certificates", rc.CAFile)
		}
		tc.RootCAs = pool
	}
	if rc.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(rc.CertFile, rc.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// smtpClient is the SMTP client of an smtp, smtps or mx route: timeouts,
// credentials and trust roots.
func smtpClient(cfg *Config, rc *Route, log *slog.Logger) (*smtp.Client, error) {
	c := &smtp.Client{
		LocalName:         cfg.Hostname,
		ConnectTimeout:    cfg.Delivery.ConnectTimeout.D(),
		CommandTimeout:    min(cfg.Delivery.Timeout.D(), 5*time.Minute),
		DataTimeout:       cfg.Delivery.Timeout.D(),
		ErrorLog:          log.With("transport", "smtp"),
		Username:          rc.Username,
		Password:          rc.Password,
		AllowInsecureAuth: rc.InsecureAuth,
	}
	if rc.PasswordFile != "" {
		b, err := os.ReadFile(rc.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("password_file: %w", err)
		}
		c.Password = strings.TrimRight(string(b), "\r\n")
	}
	if rc.PasswordEnv != "" {
		c.Password = os.Getenv(rc.PasswordEnv)
		if c.Password == "" {
			return nil, fmt.Errorf("password_env: environment variable %s is not set", rc.PasswordEnv)
		}
	}
	if rc.CAFile != "" || rc.CertFile != "" {
		tc, err := routeTLS(rc, "")
		if err != nil {
			return nil, err
		}
		c.TLSConfig = tc
	}
	return c, nil
}

// mxTransport builds an mx route: DNS (the system's resolver or
// [delivery] resolver), QMTP for MXPS exchangers, SMTP with opportunistic
// STARTTLS unless the route says otherwise. It never sends credentials.
func mxTransport(cfg *Config, rc *Route, log *slog.Logger) (transport.Transport, error) {
	r := net.DefaultResolver
	if cfg.Delivery.Resolver != "" {
		addr := cfg.Delivery.Resolver
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	}
	c, err := smtpClient(cfg, rc, log)
	if err != nil {
		return nil, err
	}
	c.Username, c.Password, c.AllowInsecureAuth, c.Authenticate = "", "", false, nil
	c.TLS = smtp.TLSOpportunistic
	if rc.TLS == "required" {
		c.TLS = smtp.TLSRequired
	} else if rc.TLS == "none" {
		c.TLS = smtp.TLSNone
	}
	dialer := &net.Dialer{Resolver: r}
	c.DialContext = dialer.DialContext
	mx := &transport.MX{
		Resolver: r,
		QMTP:     &qmtp.Client{Dialer: dialer, ConnectTimeout: cfg.Delivery.ConnectTimeout.D(), IOTimeout: cfg.Delivery.Timeout.D()},
		SMTP:     c,
		QMTPPort: cfg.Delivery.QMTPPort,
		SMTPPort: cfg.Delivery.SMTPPort,
		Log:      log,
	}
	if rc.MTASTS == nil || *rc.MTASTS {
		mx.STS = mtastsCache(cfg, rc, r, dialer, c)
	}
	return mx, nil
}

// mtastsCache is an mx route's MTA-STS policy cache: kept in the queue
// directory, looked up with the route's resolver, fetched from
// delivery.mta_sts_port and verified with the route's trust store.
func mtastsCache(cfg *Config, rc *Route, r *net.Resolver, dialer *net.Dialer, c *smtp.Client) *mtasts.Cache {
	port := strconv.Itoa(cfg.Delivery.MTASTSPort)
	sc := &mtasts.Cache{
		Dir:      filepath.Join(cfg.QueueDir, "mtasts"),
		Resolver: r,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return dialer.DialContext(ctx, network, net.JoinHostPort(host, port))
		},
	}
	if c.TLSConfig != nil {
		sc.RootCAs = c.TLSConfig.RootCAs
	}
	return sc
}
