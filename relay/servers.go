package relay

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/qmail"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/smtp"
)

// The protocol servers, built once for `qmgate serve` and the tcpserver
// drop-ins alike: the limits and timeouts of the configuration, the hub's
// handlers, the hub's policy.

func newQMTPServer(c *config.Config, h qmtp.Handler, log *slog.Logger) *qmtp.Server {
	return &qmtp.Server{
		Handler:         h,
		Hostname:        c.Hostname,
		MaxMessageBytes: c.MaxMessageBytes,
		MaxRecipients:   c.MaxRecipients,
		MaxHops:         c.MaxHops,
		ReadTimeout:     c.QMTP.ReadTimeout.D(),
		WriteTimeout:    c.QMTP.WriteTimeout.D(),
		SessionTimeout:  c.QMTP.SessionTimeout.D(),
		FirstTimeout:    c.QMTP.FirstTimeout.D(),
		MinDataRate:     c.QMTP.MinDataRate,
		MaxConns:        c.QMTP.MaxConns,
		MaxConnsPerIP:   c.QMTP.MaxConnsPerIP,
		MaxUnixConns:    c.QMTP.MaxUnixConns,
		IPv6PrefixLen:   c.Limits.ClientIPv6Prefix,
		Exempt:          connExempt(c),
		ErrorLog:        log,
	}
}

func newQMQPServer(c *config.Config, h qmqp.Handler, log *slog.Logger) *qmqp.Server {
	return &qmqp.Server{
		Handler:         h,
		Hostname:        c.Hostname,
		MaxMessageBytes: c.MaxMessageBytes,
		MaxRecipients:   c.MaxRecipients,
		MaxHops:         c.MaxHops,
		ReadTimeout:     c.QMQP.ReadTimeout.D(),
		WriteTimeout:    c.QMQP.WriteTimeout.D(),
		SessionTimeout:  c.QMQP.SessionTimeout.D(),
		FirstTimeout:    c.QMQP.FirstTimeout.D(),
		MinDataRate:     c.QMQP.MinDataRate,
		MaxConns:        c.QMQP.MaxConns,
		MaxConnsPerIP:   c.QMQP.MaxConnsPerIP,
		MaxUnixConns:    c.QMQP.MaxUnixConns,
		IPv6PrefixLen:   c.Limits.ClientIPv6Prefix,
		Exempt:          connExempt(c),
		ErrorLog:        log,
	}
}

// setSMTPLimits gives an SMTP server the connection limits of [smtp] (and
// [limits]) that the QMTP and QMQP servers get in newQMTPServer and
// newQMQPServer.
func setSMTPLimits(s *smtp.Server, c *config.Config) {
	l := &c.SMTP.ListenLimit
	s.ReadTimeout = l.ReadTimeout.D()
	s.WriteTimeout = l.WriteTimeout.D()
	s.SessionTimeout = l.SessionTimeout.D()
	s.FirstTimeout = l.FirstTimeout.D()
	s.MinDataRate = l.MinDataRate
	s.MaxConns = l.MaxConns
	s.MaxConnsPerIP = l.MaxConnsPerIP
	s.MaxUnixConns = l.MaxUnixConns
	s.IPv6PrefixLen = c.Limits.ClientIPv6Prefix
	s.Exempt = connExempt(c)
}

// connExempt returns the test for clients that count towards max_conns
// only, never towards max_conns_per_ip: [limits] exempt, the networks the
// rate limits spare too (trusted networks behind one address). nil when
// there are none.
func connExempt(c *config.Config) func(netip.Addr) bool {
	nets := config.Prefixes(c.Limits.Exempt)
	if len(nets) == 0 {
		return nil
	}
	return func(ip netip.Addr) bool { return InPrefixes(ip, nets) }
}

// newPolicy builds the policy of a configuration around a route table.
func newPolicy(cfg *config.Config, router *Router) *Policy {
	return &Policy{
		RcptHosts:   mail.HostList(cfg.RcptHosts),
		QMTPRelay:   config.Prefixes(cfg.QMTP.RelayClients),
		SMTPRelay:   config.Prefixes(cfg.SMTP.RelayClients),
		QMQPAllow:   config.Prefixes(cfg.QMQP.Allow),
		Router:      router,
		Unix:        newUnixPolicy(&cfg.QMQP),
		SMTPSenders: SenderMap(cfg.SMTP.SenderLogin),
	}
}

// DropIn serves one connection the way qmail-qmtpd and qmail-qmqpd do under
// tcpserver (qmgate's qmtpd and qmqpd): the servers, handlers and policy of
// `qmgate serve`, with tcpserver's environment (RELAYCLIENT, DATABYTES,
// TCPREMOTEIP...) and a sink in place of the queue.
type DropIn struct {
	Config *config.Config
	Env    qmail.Env
	Sink   qmail.Sink
	// Program tells that Sink runs a qmail-queue program ($QMAILQUEUE),
	// which takes recipients without a domain from relay clients and routes
	// nothing itself. Otherwise Sink is qmgate's daemon, whose policy
	// (routes, mailbox names) each recipient meets here already, so that a
	// recipient the daemon would refuse is refused alone, as qmail-qmtpd
	// refuses a bad recipient, instead of failing the whole package.
	Program bool
	// Routes is the daemon's route table (BuildRouter of Config), which
	// the daemon's policy consults; nil when Program is set or the
	// configuration has no routes (it is then one for the drop-in alone:
	// the socket, sizes), and the daemon's own routes are not known.
	Routes *Router
	Log    *slog.Logger
}

// LoadRoutes builds Routes from Config with the daemon's own builder, for
// a drop-in that hands its mail to the daemon; a drop-in that runs a
// qmail-queue program, or whose configuration has no routes, has none.
func (d *DropIn) LoadRoutes() (err error) {
	d.Routes = nil
	if !d.Program && len(d.Config.Routes) > 0 {
		d.Routes, err = BuildRouter(d.Config, d.Log)
	}
	return err
}

func (d *DropIn) policy() *Policy {
	p := newPolicy(d.Config, nil)
	p.Unix = nil // the daemon applies it, to the drop-in's own user
	if d.Env.RelaySet {
		p.RelaySuffix = d.Env.RelayClient
	}
	if d.Program {
		p.LocalRecipients = true
	} else {
		p.Router = d.Routes
	}
	return p
}

func (d *DropIn) handlers() *Handlers {
	pol := d.policy()
	return &Handlers{Sink: d.Sink, Policy: func() *Policy { return pol }, Log: d.Log}
}

// maxMessageBytes is the size limit: $DATABYTES overrides the
// configuration, and 0 means none, as in qmail.
func (d *DropIn) maxMessageBytes() int64 {
	n := d.Config.MaxMessageBytes
	if d.Env.DataBytesSet {
		n = d.Env.DataBytes
	}
	if n == 0 {
		return -1
	}
	return n
}

// QMTPServer returns the server for the connection: a relay client is one
// tcpserver gave RELAYCLIENT, or one in [qmtp] relay_clients.
func (d *DropIn) QMTPServer() *qmtp.Server {
	h := d.handlers()
	s := newQMTPServer(d.Config, h, d.Log)
	s.Hostname = "" // TCPLOCALHOST, else the local address, as qmail
	s.MaxMessageBytes = d.maxMessageBytes()
	s.ConnContext = func(ctx context.Context, info *mail.ConnInfo) (context.Context, error) {
		info.RelayClient = d.Env.RelaySet || info.RelayClient || InPrefixes(info.RemoteIP(), h.Policy().QMTPRelay)
		return ctx, nil
	}
	return s
}

// QMQPServer returns the server for the connection. Who may use it is
// [qmqp] allow, exactly as for `qmgate serve` (empty: nobody), unless
// [qmqp] trust_tcpserver leaves it to tcpserver's rules, qmail-qmqpd's way.
func (d *DropIn) QMQPServer() *qmqp.Server {
	h := d.handlers()
	s := newQMQPServer(d.Config, h, d.Log)
	s.Hostname = ""
	s.MaxMessageBytes = d.maxMessageBytes()
	trust := d.Config.QMQP.TrustTCPServer
	s.AllowFunc = func(info *mail.ConnInfo) bool {
		return trust || InPrefixes(info.RemoteIP(), h.Policy().QMQPAllow)
	}
	return s
}
