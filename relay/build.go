package relay

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
)

// BuildRouter makes the route table and each route's transport from the
// configuration.
func BuildRouter(cfg *config.Config, log *slog.Logger) (*Router, error) {
	r := &Router{}
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		t, err := buildTransport(cfg, rc, log)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("route[%d] %s: %w", i, rc.Via, err)
		}
		r.Routes = append(r.Routes, &Route{
			Name:        fmt.Sprintf("route[%d]", i),
			Patterns:    mail.HostList(rc.Domains),
			Via:         rc.Via,
			Transport:   t,
			Concurrency: rc.Concurrency,
		})
	}
	return r, nil
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
func routeTLS(rc *config.Route, serverName string) (*tls.Config, error) {
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
	return tc, nil
}

func buildTransport(cfg *config.Config, rc *config.Route, log *slog.Logger) (Transport, error) {
	u := rc.Parsed
	d := cfg.Delivery
	switch u.Scheme {
	case "discard":
		return discard{}, nil
	case "maildir":
		// Directories are made on first delivery, by the daemon's user.
		return &Maildir{Dir: config.Dir(u), Hostname: cfg.Hostname}, nil
	case "mbox":
		return &Mbox{Dir: config.Dir(u)}, nil
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
		return NewQMTP(addr, c, rc.Concurrency), nil
	case "qmqp":
		var servers []string
		for _, s := range strings.Split(u.Host, ",") {
			servers = append(servers, withPort(s, qmqp.DefaultPort))
		}
		// qmail-qmqpc's 10 s connect and 60 s I/O defaults: QMQP servers
		// are near and answer fast, and a quick failover is the point.
		return &QMQP{Client: &qmqp.Client{Servers: servers}}, nil
	case "smtp", "smtps":
		return newSMTPTransport(cfg, rc, log)
	case "mx":
		return newMXTransport(cfg, rc, log)
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
		return NewWebhook(u.String(), hdr, hc, max(d.Timeout.D(), 30*time.Second)/10, log), nil
	}
	return nil, fmt.Errorf("unknown transport %q", u.Scheme)
}
