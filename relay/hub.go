package relay

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/serve"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/queue"
	"github.com/qmgate/qmgate/smtp"
)

// Hub is the running daemon: listeners, policy, queue and delivery engine.
//
// Its life: New (builds routes and policy from a Config), Listen (binds every
// listener; done before dropping root), Start (opens the queue and serves),
// Reload (swaps routes, allow lists, relay clients, certificates,
// passwords, DKIM keys and rewrite rules without dropping a connection),
// Shutdown.
type Hub struct {
	log      *slog.Logger
	cfg      *config.Config // the listeners' configuration (not reloadable)
	state    atomic.Pointer[hubState]
	queue    *queue.Queue
	metrics  *Metrics
	build    BuildInfo
	engine   *Engine
	handlers *Handlers

	listeners []*boundListener
	qmtpSrv   *qmtp.Server
	qmqpSrv   *qmqp.Server
	smtpSrv   *smtp.Server
	subSrv    *smtp.Server
	metricsL  net.Listener

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error

	started  atomic.Bool // listeners serving
	draining atomic.Bool // Drain called: not ready, listeners closing
	drain    drainState  // drain.go
}

// hubState is everything a reload may change. It is immutable; a reload
// builds a new one and swaps the pointer.
type hubState struct {
	cfg       *config.Config
	policy    *Policy
	router    *Router
	smtpCert  *tls.Certificate
	qmtpCert  *tls.Certificate
	clientCAs *x509.CertPool
	passwords *smtp.PasswordFile
	identity  *Identity // DKIM keys and rewrite rules; nil for none
}

// boundListener is one bound socket and what serves it.
type boundListener struct {
	kind string // "qmtp", "qmtps", "qmqp", "smtp", "submission", "submissions"
	addr string
	l    net.Listener
	unix string // socket path for unix listeners
}

// New builds a hub from a validated configuration.
func New(cfg *config.Config, log *slog.Logger) (*Hub, error) {
	h := &Hub{log: log, cfg: cfg, errs: make(chan error, 16)}
	st, err := buildState(cfg, log)
	if err != nil {
		return nil, err
	}
	h.wireRequeue(st.router)
	h.state.Store(st)
	return h, nil
}

// buildState loads everything reloadable: routes and their transports,
// policy, certificates, password file.
func buildState(cfg *config.Config, log *slog.Logger) (*hubState, error) {
	router, err := BuildRouter(cfg, log)
	if err != nil {
		return nil, err
	}
	st := &hubState{cfg: cfg, router: router, policy: newPolicy(cfg, router)}
	st.policy.Limits = newLimits(&cfg.Limits, log)
	st.policy.DropInUsers = cfg.QMQP.DropInUsers
	if err := st.load(cfg); err != nil {
		router.Close()
		return nil, err
	}
	st.policy.Identity = st.identity
	return st, nil
}

// load reads the files of st: DKIM keys and rewrite rules, certificates,
// client CAs and the password file.
func (st *hubState) load(cfg *config.Config) (err error) {
	if st.identity, err = BuildIdentity(cfg); err != nil {
		return err
	}
	if cfg.SMTP.TLSCert != "" {
		c, err := tls.LoadX509KeyPair(cfg.SMTP.TLSCert, cfg.SMTP.TLSKey)
		if err != nil {
			return fmt.Errorf("smtp.tls_cert: %w", err)
		}
		st.smtpCert = &c
	}
	if cfg.QMTP.TLSCert != "" {
		c, err := tls.LoadX509KeyPair(cfg.QMTP.TLSCert, cfg.QMTP.TLSKey)
		if err != nil {
			return fmt.Errorf("qmtp.tls_cert: %w", err)
		}
		st.qmtpCert = &c
	}
	if cfg.QMTP.ClientCA != "" {
		pem, err := os.ReadFile(cfg.QMTP.ClientCA)
		if err != nil {
			return fmt.Errorf("qmtp.client_ca: %w", err)
		}
		st.clientCAs = x509.NewCertPool()
		if !st.clientCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("qmtp.client_ca: no certificates in %s", cfg.QMTP.ClientCA)
		}
	}
	if cfg.SMTP.AuthFile != "" {
		if st.passwords, err = smtp.LoadPasswordFile(cfg.SMTP.AuthFile); err != nil {
			return fmt.Errorf("smtp.auth_file: %w", err)
		}
	}
	return nil
}

// Listen binds every configured listener. It runs before privileges are
// dropped, so ports below 1024 work; unix sockets are created mode 0666 (any
// local user may hand mail to the daemon, as with any sendmail) and their
// paths are returned by UnixSockets so the caller can chown them.
func (h *Hub) Listen() error {
	c := h.cfg
	groups := []struct {
		kind  string
		addrs []string
	}{
		{"qmqp", c.QMQP.Listen}, {"qmtp", c.QMTP.Listen}, {"qmtps", c.QMTP.ListenTLS},
		{"smtp", c.SMTP.Listen}, {"submission", c.SMTP.Submission}, {"submissions", c.SMTP.Submissions},
	}
	for _, g := range groups {
		for _, a := range g.addrs {
			bl, err := bind(g.kind, a)
			if err != nil {
				h.closeListeners()
				return err
			}
			h.listeners = append(h.listeners, bl)
		}
	}
	if c.Metrics.Listen != "" {
		l, err := net.Listen("tcp", c.Metrics.Listen)
		if err != nil {
			h.closeListeners()
			return fmt.Errorf("metrics.listen: %w", err)
		}
		h.metricsL = l
	}
	return nil
}

// listenConfig turns TCP keep-alive off on accepted connections: every
// session already has read and session timeouts, which find a vanished
// client anyway, and the four setsockopt calls keep-alive costs per
// connection are a measurable share of a QMQP or SMTP server's work at
// thousands of connections a second (see BENCHMARKS.md).
var listenConfig = net.ListenConfig{KeepAlive: -1}

func bind(kind, addr string) (*boundListener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		// A socket file left by a previous run would make bind fail; remove
		// it only if it is a socket.
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(path)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("%s listen %s: %w", kind, addr, err)
		}
		// Mode 0666 through the umask at bind time: a chmod by path
		// afterwards would follow whatever link was put there meanwhile.
		old := syscall.Umask(0o111)
		l, err := net.Listen("unix", path)
		syscall.Umask(old)
		if err != nil {
			return nil, fmt.Errorf("%s listen %s: %w", kind, addr, err)
		}
		return &boundListener{kind: kind, addr: addr, l: l, unix: path}, nil
	}
	l, err := listenConfig.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listen %s: %w", kind, addr, err)
	}
	return &boundListener{kind: kind, addr: addr, l: l}, nil
}

// UnixSockets returns the paths of the unix-socket listeners.
func (h *Hub) UnixSockets() []string {
	var out []string
	for _, bl := range h.listeners {
		if bl.unix != "" {
			out = append(out, bl.unix)
		}
	}
	return out
}

// Addrs returns the bound addresses by kind ("qmtp", "smtp", ...), for tests
// that listen on port 0.
func (h *Hub) Addrs() map[string][]string {
	out := map[string][]string{}
	for _, bl := range h.listeners {
		out[bl.kind] = append(out[bl.kind], bl.l.Addr().String())
	}
	if h.metricsL != nil {
		out["metrics"] = []string{h.metricsL.Addr().String()}
	}
	return out
}

func (h *Hub) closeListeners() {
	for _, bl := range h.listeners {
		bl.l.Close()
		if bl.unix != "" {
			os.Remove(bl.unix)
		}
	}
	h.listeners = nil
	if h.metricsL != nil {
		h.metricsL.Close()
	}
}

// QueueOptions turns the configuration into queue options.
func QueueOptions(cfg *config.Config, log *slog.Logger) queue.Options {
	backoff := queue.Backoff{Floor: cfg.Queue.RetryMin.D(), Cap: cfg.Queue.RetryMax.D(), Jitter: 0.25}
	// "0s" in the file turns the delay notice or the commit linger off;
	// 0 is the queue's default.
	off := func(d time.Duration) time.Duration { return cmp.Or(d, -1) }
	return queue.Options{
		Hostname:           cfg.Hostname,
		Postmaster:         cfg.Postmaster,
		Lifetime:           cfg.Queue.Lifetime.D(),
		DelayNotice:        off(cfg.Queue.DelayNotice.D()),
		Retry:              backoff,
		DestinationBackoff: backoff,
		MaxRecipients:      max(cfg.MaxRecipients, 1),
		MinFreeBytes:       cfg.Queue.MinFreeBytes,
		CommitLinger:       off(cfg.Queue.CommitLinger.D()),
		Logger:             log,
	}
}

// Start opens the queue and serves every bound listener, the delivery engine,
// the queue's control socket and the metrics listener, until Shutdown.
func (h *Hub) Start() error {
	if err := os.MkdirAll(h.cfg.QueueDir, 0o700); err != nil {
		return fmt.Errorf("queue_dir: %w", err)
	}
	opt := QueueOptions(h.cfg, h.log)
	opt.DestinationOf = h.destinationOf
	q, err := queue.Open(h.cfg.QueueDir, opt)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	h.queue = q
	q.SetNextHops(queueNextHops)
	h.metrics = NewMetrics(func() (int, int, time.Duration) {
		m := q.Metrics()
		return m.Messages, m.PendingRecipients, m.OldestAge(time.Now())
	})
	h.metrics.WatchCommits(q.CommitStats)
	h.metrics.Ready = h.Ready
	h.metrics.Registry.MustRegister(limitsCollector{func() *Limits { return h.state.Load().policy.Limits }})
	h.registerBuildInfo()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.handlers = &Handlers{
		Sink:     QueueSink{Queue: q, Log: h.log},
		Policy:   func() *Policy { return h.state.Load().policy },
		Log:      h.log,
		Metrics:  h.metrics,
		Identity: func() *Identity { return h.state.Load().identity },
	}
	h.buildServers()
	serves := map[string]func(net.Listener) error{
		"qmtp": h.qmtpSrv.Serve, "qmtps": h.qmtpSrv.ServeTLS, "qmqp": h.qmqpSrv.Serve,
		"smtp": h.smtpSrv.Serve, "submission": h.subSrv.Serve, "submissions": h.subSrv.ServeTLS,
	}
	for _, bl := range h.listeners {
		var inner net.Listener = bl.l
		if bl.kind == "qmqp" && bl.unix != "" {
			inner = peerListener{inner} // local users are named by their uid
		}
		if pp, ok := h.proxyPolicy(bl); ok {
			inner = serve.NewProxyListener(inner, pp)
		}
		l := countingListener{Listener: inner, g: h.metrics.Sessions.WithLabelValues(protoLabel(bl.kind))}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			if err := serves[bl.kind](l); err != nil && !isClosedErr(err) {
				h.log.Error("listener stopped", "kind", bl.kind, "addr", bl.addr, "err", err)
				h.errs <- fmt.Errorf("%s %s: %w", bl.kind, bl.addr, err)
			}
		}()
	}
	h.engine = &Engine{Queue: q, Routes: func() *Router { return h.state.Load().router }, Log: h.log, Metrics: h.metrics}
	ectx := h.drain.engineContext(ctx)
	q.SetDrainer(h.controlDrain)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer h.drain.engineStopped()
		if err := h.engine.Run(ectx); err != nil {
			h.log.Error("delivery engine stopped", "err", err)
		}
	}()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		if err := q.ServeControl(ctx); err != nil && ctx.Err() == nil {
			h.log.Error("queue control socket stopped", "err", err)
		}
	}()
	if h.metricsL != nil {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.metrics.Serve(ctx, h.metricsL, h.healthy, h.log)
		}()
	}
	h.started.Store(true)
	h.log.Info("qmgate started", "listeners", h.Addrs(), "queue", h.cfg.QueueDir, "config", h.cfg.Source)
	return nil
}

// Errors delivers fatal listener errors.
func (h *Hub) Errors() <-chan error { return h.errs }

// Queue returns the open queue (after Start).
func (h *Hub) Queue() *queue.Queue { return h.queue }

func (h *Hub) healthy() error {
	if h.queue == nil {
		return errors.New("queue not open")
	}
	return nil
}

// protoLabel is the proto label of a listener kind, spelt as in every
// other metric and log line.
func protoLabel(kind string) string {
	switch kind {
	case "qmtp", "qmtps":
		return "QMTP"
	case "qmqp":
		return "QMQP"
	}
	return "SMTP"
}

func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, qmtp.ErrServerClosed) ||
		errors.Is(err, qmqp.ErrServerClosed) || errors.Is(err, smtp.ErrServerClosed)
}

// countRefused returns the servers' OnRefuse for proto: it counts refused
// connections in qmgate_connections_refused_total.
func (h *Hub) countRefused(proto string) func(reason string) {
	return func(reason string) {
		if h.metrics != nil {
			h.metrics.Refused.WithLabelValues(proto, reason).Inc()
		}
	}
}

// buildServers makes the protocol servers from the configuration. Reloadable
// parts (allow lists, relay clients, certificates, passwords) are read
// through h.state on every connection.
func (h *Hub) buildServers() {
	c := h.cfg
	h.qmtpSrv = newQMTPServer(c, h.handlers, h.log)
	h.qmtpSrv.OnRefuse = h.countRefused("QMTP")
	h.qmtpSrv.Exempt = h.trustedConnExempt(func(p *Policy) []netip.Prefix { return p.QMTPRelay })
	h.qmtpSrv.ConnContext = func(ctx context.Context, info *mail.ConnInfo) (context.Context, error) {
		st := h.state.Load()
		info.LocalHost = c.Hostname
		info.RelayClient = InPrefixes(info.RemoteIP(), st.policy.QMTPRelay) ||
			(info.TLS != nil && len(info.TLS.VerifiedChains) > 0)
		return ctx, nil
	}
	if len(c.QMTP.ListenTLS) > 0 {
		h.qmtpSrv.TLSConfig = &tls.Config{
			MinVersion: tls.VersionTLS12,
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				st := h.state.Load()
				if st.qmtpCert == nil {
					return nil, errors.New("no QMTPS certificate configured")
				}
				cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*st.qmtpCert}}
				if st.clientCAs != nil {
					cfg.ClientAuth = tls.VerifyClientCertIfGiven
					cfg.ClientCAs = st.clientCAs
				}
				return cfg, nil
			},
		}
	}
	h.qmqpSrv = newQMQPServer(c, h.handlers, h.log)
	h.qmqpSrv.OnRefuse = h.countRefused("QMQP")
	h.qmqpSrv.Exempt = h.trustedConnExempt(func(p *Policy) []netip.Prefix { return p.QMQPAllow })
	h.qmqpSrv.AllowFunc = func(info *mail.ConnInfo) bool {
		return InPrefixes(info.RemoteIP(), h.state.Load().policy.QMQPAllow)
	}
	h.qmqpSrv.ConnContext = func(ctx context.Context, info *mail.ConnInfo) (context.Context, error) {
		info.LocalHost = c.Hostname
		if p, ok := info.RemoteAddr.(*Peer); ok {
			info.RemoteInfo = p.traceInfo()
		}
		return ctx, nil
	}
	mkSMTP := func(requireAuth bool) *smtp.Server {
		s := &smtp.Server{
			Handler:           smtpHandler{h.handlers},
			OnRefuse:          h.countRefused("SMTP"),
			Hostname:          c.Hostname,
			AllowInsecureAuth: c.SMTP.AuthWithoutTLS,
			RequireAuth:       requireAuth,
			MaxMessageBytes:   c.MaxMessageBytes,
			MaxRecipients:     c.MaxRecipients,
			MaxHops:           c.MaxHops,
			ErrorLog:          h.log,
			ConnContext: func(ctx context.Context, info *mail.ConnInfo) (context.Context, error) {
				info.LocalHost = c.Hostname
				info.RelayClient = InPrefixes(info.RemoteIP(), h.state.Load().policy.SMTPRelay)
				return ctx, nil
			},
		}
		setSMTPLimits(s, c)
		// The daemon's own exemption: relay clients besides [limits]
		// exempt, read at each connection so that a reload applies.
		s.Exempt = h.trustedConnExempt(func(p *Policy) []netip.Prefix { return p.SMTPRelay })
		if c.SMTP.TLSCert != "" {
			s.TLSConfig = &tls.Config{
				MinVersion: tls.VersionTLS12,
				GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
					return h.state.Load().smtpCert, nil
				},
			}
		}
		if c.SMTP.AuthFile != "" {
			s.Auth = reloadingAuth{h}
		}
		return s
	}
	h.smtpSrv = mkSMTP(false)
	h.subSrv = mkSMTP(true)
}

// reloadingAuth checks passwords against the current password file.
type reloadingAuth struct{ h *Hub }

func (a reloadingAuth) Authenticate(ctx context.Context, user, pass string) (bool, error) {
	pf := a.h.state.Load().passwords
	if pf == nil {
		return false, nil
	}
	return pf.Authenticate(ctx, user, pass)
}

// destinationOf keys the queue's per-destination backoff: the route's
// transport URL (one dead hub holds back only its own mail), or for mx
// routes the recipient's domain.
func (h *Hub) destinationOf(sender, rcpt string) string {
	// The sender as the engine looks routes up with it (VERP expanded),
	// so a recipient sent through a route with senders is held back
	// under that route's next hop.
	rt := h.state.Load().router.Lookup(mail.ExpandVERP(sender, rcpt), rcpt)
	if rt == nil {
		return "noroute"
	}
	if rt.Via == "mx" {
		return "mx:" + mail.Domain(rcpt)
	}
	return rt.Via
}

// Reload applies a new configuration's reloadable parts: routes, rcpthosts,
// relay clients, allow lists, certificates, passwords, DKIM keys and
// rewrite rules (a key rotation is a reload). Sessions in
// progress keep going; a bad configuration is refused and the old one stays.
// Listener addresses, limits and the queue directory need a restart; a
// change to them is logged and ignored.
func (h *Hub) Reload(cfg *config.Config) error {
	st, err := buildState(cfg, h.log)
	if err != nil {
		return err
	}
	if changed := nonReloadable(h.cfg, cfg); changed != "" {
		h.log.Warn("reload: these settings need a restart and were not changed", "settings", changed)
	}
	st.policy.Limits.keep(h.state.Load().policy.Limits)
	h.wireRequeue(st.router)
	old := h.state.Swap(st)
	// The engine starts workers for the new routes on demand and lets the
	// old ones drain; close the old transports once they are idle.
	go func() {
		time.Sleep(2 * time.Minute)
		old.router.Close()
	}()
	h.log.Info("configuration reloaded", "config", cfg.Source, "routes", len(st.router.Routes))
	return nil
}

func nonReloadable(a, b *config.Config) string {
	var out []string
	eq := slices.Equal[[]string]
	if !eq(a.QMQP.Listen, b.QMQP.Listen) || !eq(a.QMTP.Listen, b.QMTP.Listen) || !eq(a.QMTP.ListenTLS, b.QMTP.ListenTLS) ||
		!eq(a.SMTP.Listen, b.SMTP.Listen) || !eq(a.SMTP.Submission, b.SMTP.Submission) || !eq(a.SMTP.Submissions, b.SMTP.Submissions) {
		out = append(out, "listen addresses")
	}
	if a.QueueDir != b.QueueDir {
		out = append(out, "queue_dir")
	}
	if a.MaxMessageBytes != b.MaxMessageBytes || a.MaxRecipients != b.MaxRecipients || a.MaxHops != b.MaxHops {
		out = append(out, "message limits")
	}
	if a.QMQP.ListenLimit != b.QMQP.ListenLimit || a.QMTP.ListenLimit != b.QMTP.ListenLimit || a.SMTP.ListenLimit != b.SMTP.ListenLimit {
		out = append(out, "connection limits and timeouts")
	}
	if a.Metrics != b.Metrics || a.Hostname != b.Hostname || a.User != b.User {
		out = append(out, "hostname, user or metrics")
	}
	if (a.SMTP.TLSCert == "") != (b.SMTP.TLSCert == "") || (a.SMTP.AuthFile == "") != (b.SMTP.AuthFile == "") {
		out = append(out, "turning STARTTLS or AUTH on or off")
	}
	return strings.Join(out, ", ")
}

// Shutdown stops accepting, lets sessions finish until ctx ends, stops the
// delivery engine (deliveries under way get their grace period) and closes
// the queue consistently.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.shutdownServers(ctx)
	if h.cancel != nil {
		h.cancel()
	}
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		h.log.Warn("shutdown deadline passed with deliveries still under way")
	}
	h.closeListeners()
	h.state.Load().router.Close()
	if h.queue != nil {
		return h.queue.Close()
	}
	return nil
}
