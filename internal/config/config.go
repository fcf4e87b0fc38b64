// Package config loads qmgate's TOML configuration: strictly (an unknown key or
// a bad value stops start-up with the file, the line and a clear message),
// with every default written down in one place, and with an embedded default
// that runs on a fresh machine as an ordinary user.
//
// It is not where policy lives: it only parses, defaults and validates. The
// relay turns a Config into listeners, routes and transports.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/qmgate/qmgate/internal/ratelimit"
)

// DefaultPath is where the configuration lives when neither -config nor
// $QMGATE_CONFIG names one.
const DefaultPath = "/etc/qmgate/qmgate.toml"

// DefaultMinFreeBytes is queue.min_free_bytes when the file sets none (the
// queue's own default).
const DefaultMinFreeBytes = 16 << 20

// EnvVar names the environment variable that points at the configuration.
const EnvVar = "QMGATE_CONFIG"

//go:embed default.toml
var defaultTOML []byte

// DefaultTOML returns the embedded default configuration's text.
func DefaultTOML() []byte { return append([]byte(nil), defaultTOML...) }

// Config is the whole configuration. Field comments give the defaults.
type Config struct {
	// Hostname names this host in greetings, Received lines and DSNs.
	// Default: the system's host name.
	Hostname string `toml:"hostname"`
	// User to drop privileges to after binding when started as root. Required
	// when started as root.
	User string `toml:"user"`
	// QueueDir is the durable spool. Default "./qmgate-data/queue".
	QueueDir string `toml:"queue_dir"`
	// MaxMessageBytes bounds a message as stored. Default 52428800 (50 MiB).
	MaxMessageBytes int64 `toml:"max_message_bytes"`
	// MaxRecipients bounds recipients per message on every listener.
	// Default 1000.
	MaxRecipients int `toml:"max_recipients"`
	// MaxHops: this many Received:/Delivered-To: lines make a loop. Default 100.
	MaxHops int `toml:"max_hops"`
	// RcptHosts are the domains accepted from anyone (qmail's rcpthosts:
	// exact, or ".suffix" for subdomains; case-insensitive).
	RcptHosts []string `toml:"rcpthosts"`
	// DefaultDomain qualifies bare local addresses (qmail's defaultdomain).
	// Default: Hostname.
	DefaultDomain string `toml:"default_domain"`
	// Postmaster receives double bounces. Default "postmaster@" + Hostname.
	Postmaster string `toml:"postmaster"`

	Log        Log        `toml:"log"`
	QMQP       QMQP       `toml:"qmqp"`
	QMTP       QMTP       `toml:"qmtp"`
	SMTP       SMTP       `toml:"smtp"`
	Queue      Queue      `toml:"queue"`
	Delivery   Delivery   `toml:"delivery"`
	Routes     []Route    `toml:"route"`
	Metrics    Metrics    `toml:"metrics"`
	Nullclient Nullclient `toml:"nullclient"`
	Limits     Limits     `toml:"limits"`
	DKIM       []DKIM     `toml:"dkim"`    // signing keys (identity.go)
	Rewrite    Rewrite    `toml:"rewrite"` // masquerading (identity.go)
	Shutdown   Shutdown   `toml:"shutdown"`

	// Source is the file the configuration came from ("(embedded default)"
	// for the built-in one). Not a TOML key.
	Source string `toml:"-"`
	// Origin says what named Source: "-config", "$QMGATE_CONFIG",
	// DefaultPath or "the embedded default". Set by LoadFrom.
	Origin string `toml:"-"`

	// lines maps the keys set in the file to their lines.
	lines map[string]int
}

// Log configures logging.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error. Default "info".
	Format string `toml:"format"` // text or json. Default "text".
}

// ListenLimit holds the limits every listener shares unless its own section
// overrides them.
type ListenLimit struct {
	MaxConns       int      `toml:"max_conns"`        // default 1000
	MaxConnsPerIP  int      `toml:"max_conns_per_ip"` // default 50
	ReadTimeout    Duration `toml:"read_timeout"`     // per read, default 5m
	WriteTimeout   Duration `toml:"write_timeout"`    // per write, default 5m
	SessionTimeout Duration `toml:"session_timeout"`  // whole connection, default 1h
	// FirstTimeout bounds the wait for a client's first command (SMTP
	// HELO or EHLO) or the start of its package (QMTP, QMQP), default 30s.
	FirstTimeout Duration `toml:"first_timeout"`
	// MinDataRate is the slowest a client may send, bytes a second over
	// two minutes, default 64.
	MinDataRate int64 `toml:"min_data_rate"`
	// MaxUnixConns bounds the connections on unix-domain sockets, a
	// budget apart from MaxConns, default 100.
	MaxUnixConns int `toml:"max_unix_conns"`
}

// Limits holds the connection limits every listener shares (ListenLimit)
// and the inbound rate limits of `qmgate serve`: messages and recipients a
// client may send per minute, hour or day. Each list holds rates such as
// "100/m", "2000/h", "10000/d"; all must hold. Empty lists limit nothing.
type Limits struct {
	ListenLimit
	// Per client address: IPv4 per ClientIPv4Prefix (default /32), IPv6 per
	// ClientIPv6Prefix (default /64), on every TCP listener.
	ClientMessages   []string `toml:"client_messages"`
	ClientRecipients []string `toml:"client_recipients"`
	// Per authenticated SMTP user.
	UserMessages   []string `toml:"user_messages"`
	UserRecipients []string `toml:"user_recipients"`
	// Per local user (uid) of the QMQP unix-domain socket.
	UIDMessages   []string `toml:"uid_messages"`
	UIDRecipients []string `toml:"uid_recipients"`
	// Per envelope sender domain (the null sender and bare names: none).
	SenderDomainMessages   []string `toml:"sender_domain_messages"`
	SenderDomainRecipients []string `toml:"sender_domain_recipients"`
	// ClientIPv4Prefix and ClientIPv6Prefix group client addresses into
	// networks for the client limits. Defaults 32 and 64.
	ClientIPv4Prefix int `toml:"client_ipv4_prefix"`
	ClientIPv6Prefix int `toml:"client_ipv6_prefix"`
	// Exempt lists client networks no rate limit applies to.
	Exempt []string `toml:"exempt"`
	// ExemptRelayClients exempts relay clients (QMTP and SMTP
	// relay_clients, a verified QMTPS client certificate) and QMQP clients
	// on the allow list from every rate limit. Default false: the app
	// servers that send through the hub are what the limits protect
	// against when one is compromised.
	ExemptRelayClients bool `toml:"exempt_relay_clients"`
	// LimitTrustedConns applies max_conns_per_ip to trusted clients too:
	// QMTP and SMTP relay_clients, the QMQP allow list and Exempt. Default
	// false: like Postfix's mynetworks, trusted networks count towards
	// max_conns only, so a fleet of app servers behind one NAT address is
	// not turned away.
	LimitTrustedConns bool `toml:"limit_trusted_conns"`
}

// RateKeys lists the rate-limit keys of [limits] with their values, in a
// fixed order, for validation and for the builder.
func (l *Limits) RateKeys() []struct {
	Key   string
	Rates []string
} {
	return []struct {
		Key   string
		Rates []string
	}{
		{"client_messages", l.ClientMessages}, {"client_recipients", l.ClientRecipients},
		{"user_messages", l.UserMessages}, {"user_recipients", l.UserRecipients},
		{"uid_messages", l.UIDMessages}, {"uid_recipients", l.UIDRecipients},
		{"sender_domain_messages", l.SenderDomainMessages}, {"sender_domain_recipients", l.SenderDomainRecipients},
	}
}

// QMQP configures the QMQP listener (nullclients hand their mail over here).
type QMQP struct {
	// Listen addresses: "host:port" or "unix:/path". Empty: no listener.
	Listen []string `toml:"listen"`
	// Allow lists the client networks (CIDR or single addresses). QMQP has no
	// authentication: empty means nobody (unix-socket clients are governed by
	// the socket's file permissions).
	Allow []string `toml:"allow"`
	// TrustTCPServer makes the qmqpd drop-in leave access to tcpserver's
	// rules (qmail-qmqpd's way) instead of applying Allow as serve does.
	TrustTCPServer bool `toml:"trust_tcpserver"`
	// UnixAllow names the local users, and "@group" the groups, who may
	// submit over the unix-domain socket. Empty: every local user.
	UnixAllow []string `toml:"unix_allow"`
	// UnixSenders restricts the envelope senders a local user of the unix
	// socket may use: user name (or "*" for everyone not named) to
	// patterns: "addr@domain", "@domain", "<>" (the null sender) or "*".
	// Users not named, with no "*" entry, may use any sender.
	UnixSenders map[string][]string `toml:"unix_senders"`
	// DropInUsers names the local users, besides root and the daemon's
	// own user, who run the tcpserver drop-ins (qmgate qmtpd, qmqpd) that
	// hand their mail to the daemon's unix socket: the daemon's logs then
	// name the protocol and client the drop-in saw, from its Received
	// line, instead of QMQP from the local user.
	DropInUsers []string `toml:"dropin_users"`
	ListenLimit
	ListenProxy
}

// QMTP configures the QMTP listeners.
type QMTP struct {
	Listen []string `toml:"listen"`
	// ListenTLS are implicit-TLS (QMTPS) listeners; they need TLSCert/TLSKey.
	ListenTLS []string `toml:"listen_tls"`
	// RelayClients may send to any destination (CIDR); everyone else only to
	// rcpthosts.
	RelayClients []string `toml:"relay_clients"`
	TLSCert      string   `toml:"tls_cert"`
	TLSKey       string   `toml:"tls_key"`
	// ClientCA, when set, makes QMTPS ask for client certificates signed by
	// it; a client presenting one may relay.
	ClientCA string `toml:"client_ca"`
	ListenLimit
	ListenProxy
}

// SMTP configures the SMTP listeners.
type SMTP struct {
	Listen []string `toml:"listen"`
	// Submission listeners require AUTH before MAIL (port 587 style).
	Submission []string `toml:"submission"`
	// Submissions listeners are implicit TLS and require AUTH (port 465).
	Submissions  []string `toml:"submissions"`
	RelayClients []string `toml:"relay_clients"`
	// SenderLogin holds authenticated users to envelope senders: user
	// name (or "*" for everyone not named) to patterns, as
	// qmqp.unix_senders. Empty: any sender.
	SenderLogin map[string][]string `toml:"sender_login"`
	TLSCert     string              `toml:"tls_cert"`
	TLSKey      string              `toml:"tls_key"`
	// AuthFile holds "user:bcrypt-hash" lines (qmgate passwd makes them).
	AuthFile string `toml:"auth_file"`
	// AuthWithoutTLS allows AUTH on unencrypted connections. Default false.
	AuthWithoutTLS bool `toml:"auth_without_tls"`
	ListenLimit
	ListenProxy
}

// ListenProxy says which load balancers in front of a section's TCP
// listeners send a PROXY protocol header (version 1 or 2) naming the real
// client. Unix-domain listeners never take one.
type ListenProxy struct {
	// ProxyFrom are the balancers' networks (CIDR or single addresses):
	// only they may send a header; anyone else who does is refused.
	ProxyFrom []string `toml:"proxy_from"`
	// ProxyRequired refuses a connection from ProxyFrom without a header.
	ProxyRequired bool `toml:"proxy_required"`
}

// Shutdown configures how SIGTERM takes the hub away.
type Shutdown struct {
	// Handoff names peer hubs ("qmtp://host[:port]"): when set, SIGTERM
	// drains the hub (stops accepting, tries deliveries for DrainTimeout)
	// and hands what is left to the first peer that answers.
	Handoff []string `toml:"handoff"`
	// DrainTimeout bounds the deliveries tried before the hand-off.
	// Default 30s.
	DrainTimeout Duration `toml:"drain_timeout"`
	// ReadyGrace is how long a drain lets /readyz fail before it closes
	// the listeners, so that a load balancer stops sending first. Default
	// 2s; "0s": close at once.
	ReadyGrace *Duration `toml:"ready_grace"`
	// CAFile verifies qmtps:// hand-off peers (PEM); empty: the system's
	// roots. CertFile and KeyFile are the client certificate a hand-off
	// shows to qmtps:// peers that trust hubs by certificate.
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// DefaultReadyGrace is shutdown.ready_grace's default: a few of a load
// balancer's health checks, which commonly come every second or two.
const DefaultReadyGrace = 2 * time.Second

// MaxReadyGrace bounds shutdown.ready_grace: a drain must not wait long
// before it starts to close.
const MaxReadyGrace = 5 * time.Minute

// Queue configures retries and bounces.
type Queue struct {
	Lifetime    Duration  `toml:"lifetime"`     // default 168h (7 days)
	DelayNotice *Duration `toml:"delay_notice"` // default 4h; "0s" disables
	RetryMin    Duration  `toml:"retry_min"`    // backoff floor, default 1m
	RetryMax    Duration  `toml:"retry_max"`    // backoff cap, default 1h
	// MinFreeBytes is the free space kept on the queue's file system: below
	// it new mail gets a temporary refusal, so deliveries can still be
	// recorded. Default 16 MiB; -1 turns the reserve off.
	MinFreeBytes int64 `toml:"min_free_bytes"`
	// CommitLinger caps how long after a flush the group committer may hold
	// the next batch open for writers already on their way (queue/doc.go,
	// "Group commit"). Default 1ms; "0s" turns the hold off.
	CommitLinger *Duration `toml:"commit_linger"`
}

// Delivery configures the delivery engine.
type Delivery struct {
	// Concurrency is the default per-route limit on simultaneous deliveries.
	// Default 20.
	Concurrency int `toml:"concurrency"`
	// Resolver is a DNS server "host:port" for mx routes; empty uses the
	// system resolver. Tests point it at a local fake.
	Resolver string `toml:"resolver"`
	// ConnectTimeout bounds outgoing connects. Default 60s.
	ConnectTimeout Duration `toml:"connect_timeout"`
	// Timeout bounds each outgoing read or write. Default 20m (qmail-remote).
	Timeout Duration `toml:"timeout"`
	// QMTPPort and SMTPPort are the ports mx routes use (209 and 25); tests
	// move them.
	QMTPPort int `toml:"qmtp_port"`
	SMTPPort int `toml:"smtp_port"`
	// MTASTSPort is the port mx routes fetch MTA-STS policies from (443,
	// RFC 8461 section 3.3); tests move it.
	MTASTSPort int `toml:"mta_sts_port"`
}

// Route sends mail for some domains through one transport.
type Route struct {
	// Name names the route in logs, metrics, `queue stat`, fallback and
	// `qmgate oauth2`: letters, digits, '.', '_' and '-'. Default: derived
	// from the first domain and the transport (DefaultRouteName), so it
	// does not change when routes are reordered.
	Name string `toml:"name"`
	// Domains: exact ("example.net"), suffix (".example.net") or "*".
	Domains []string `toml:"domains"`
	// Senders, when set, limits the route to mail from these envelope
	// senders: "*@example.net", "user@example.net", "example.net",
	// ".example.net" or "*" (see ValidSenderPattern).
	Senders []string `toml:"senders"`
	// Via is the transport URL: qmtp://H[:P], qmtps://H[:P], qmqp://H[:P][,H[:P]...],
	// smtp://H[:P], smtps://H[:P], mx, maildir:DIR, mbox:DIR, discard:,
	// https://URL, http://URL (loopback only). In the file it may be a
	// list of such URLs, next hops tried in order (the first healthy one
	// takes the mail); Via is then the first and Hosts all of them.
	ViaValue any `toml:"via"`
	// Via is the (first) transport URL; set by Load from the via key.
	Via string `toml:"-"`
	// Hosts are all next hops of via, in order; set by Load.
	Hosts []string `toml:"-"`
	// Concurrency overrides [delivery] concurrency for this route.
	Concurrency int `toml:"concurrency"`
	// TLS for smtp:// routes: "required" (default), "opportunistic", "none".
	TLS string `toml:"tls"`
	// Username and Password (or PasswordFile) for SMTP AUTH at a smarthost.
	// Credentials go only over verified TLS (tls "required", the default).
	Username     string `toml:"username"`
	Password     string `toml:"password"`
	PasswordFile string `toml:"password_file"`
	// PasswordEnv names an environment variable holding the password.
	PasswordEnv string `toml:"password_env"`
	// OAuth2 authenticates to an smtp or smtps smarthost with XOAUTH2 or
	// OAUTHBEARER instead of a password.
	OAuth2 *OAuth2 `toml:"oauth2"`
	// CertFile and KeyFile are a client certificate presented in the TLS
	// handshake (STARTTLS or smtps), for smarthosts that authenticate by
	// certificate.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// Rate paces the route's deliveries ("30/m", "2000/d"); for mx routes
	// each destination domain is paced separately. Mail beyond it waits in
	// the queue, in arrival order, with no attempt counted. Empty: no pace.
	Rate string `toml:"rate"`
	// ThrottleTexts are extra phrases (case-insensitive) that mark a 4xx
	// reply as the next hop's rate limit, which slows the route down.
	ThrottleTexts []string `toml:"throttle_texts"`
	// Fallback names a route (a smarthost) that takes an mx route's mail
	// after FallbackAfter failed attempts (default 3), or at once for the
	// failures FallbackOn names ("connect-timeout", "connect").
	Fallback      string   `toml:"fallback"`
	FallbackAfter int      `toml:"fallback_after"`
	FallbackOn    []string `toml:"fallback_on"`
	// InsecureAuth allows credentials with tls "opportunistic" or "none"
	// (a smarthost on loopback, say): whoever is on the path can read them.
	InsecureAuth bool `toml:"insecure_auth"`
	// CAFile verifies the next hop's certificate instead of the system roots.
	// For mx routes it is also the trust store of MTA-STS: policy servers
	// and the exchangers of enforce-mode domains.
	CAFile string `toml:"ca_file"`
	// MTASTS, for mx routes, applies the recipient domains' MTA-STS
	// policies (RFC 8461). Default true; other routes ignore it.
	MTASTS *bool `toml:"mta_sts"`
	// Headers are extra HTTP headers for webhook routes ("Name: value").
	Headers []string `toml:"headers"`
	// RedirectPermanent makes a webhook's 3xx answer a permanent failure;
	// by default it is temporary. Redirects are never followed.
	RedirectPermanent bool `toml:"redirect_permanent"`
	// UsersFile, for maildir and mbox routes, lists the valid local users,
	// one a line ("#" starts a comment); others are refused at RCPT.
	// Empty: every safe name is a user. Reloaded with the configuration.
	UsersFile string `toml:"users_file"`
	// MaxNewMailboxesPerHour bounds how many mailboxes a maildir or mbox
	// route creates per hour; past it, deliveries to new mailboxes wait.
	// Default 20; negative means no bound.
	MaxNewMailboxesPerHour int `toml:"max_new_mailboxes_per_hour"`
	// Separator, for maildir and mbox routes, splits the user from the
	// address extension that the user's control files (.qmail-EXT) look
	// at: "-" (default, qmail) or "+".
	Separator string `toml:"separator"`
	// Folders, for maildir routes, delivers user-EXT into the user's IMAP
	// folder .EXT (Maildir++) when no control file matches. Default on.
	Folders *bool `toml:"folders"`
	// Programs lets the users' control files run programs ("|command"
	// lines) as the daemon's mail user, never as root. Default off.
	Programs bool `toml:"programs"`
	// SRSSecretFile turns on the Sender Rewriting Scheme for forwards
	// leaving rcpthosts: one secret a line, the first signs, all verify.
	SRSSecretFile string `toml:"srs_secret_file"`
	// SRSDomain is the domain of rewritten senders, where bounces come
	// back; it must be one of the route's exact domains. Default: the
	// route's first exact domain.
	SRSDomain string `toml:"srs_domain"`

	// Parsed is Via parsed; set by Load.
	Parsed *url.URL `toml:"-"`
	viaErr string
}

// OAuth2 is a route's OAuth2 client (see internal/oauthtoken): client
// credentials when RefreshTokenFile is empty, else the refresh token grant.
// The mailbox is the route's username.
type OAuth2 struct {
	TokenURL         string   `toml:"token_url"`
	DeviceAuthURL    string   `toml:"device_auth_url"`
	ClientID         string   `toml:"client_id"`
	ClientSecretFile string   `toml:"client_secret_file"`
	Scopes           []string `toml:"scopes"`
	RefreshTokenFile string   `toml:"refresh_token_file"`
	// Mechanism fixes XOAUTH2 or OAUTHBEARER; empty chooses from the offer.
	Mechanism string `toml:"mechanism"`
}

// Metrics configures the optional metrics and health listener.
type Metrics struct {
	// Listen is a loopback "host:port" for /metrics and /healthz. Empty: off.
	Listen string `toml:"listen"`
}

// Nullclient configures `qmgate sendmail` and the qmail-qmqpc drop-in.
type Nullclient struct {
	// QMQPServers are tried in order, failing over only when a connect fails.
	QMQPServers []string `toml:"qmqp_servers"`
	// SpoolDir, when set, makes sendmail commit mail that no server accepts
	// right away to this local queue, which `qmgate serve` forwards.
	SpoolDir string `toml:"spool_dir"`
	// Timeout bounds sendmail's whole attempt in direct mode. Default 60s.
	Timeout Duration `toml:"timeout"`
}

// Duration is a time.Duration written as "90s", "5m", "168h" or "7d" in TOML.
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// String writes the duration as a person would: "7d", "4h", "1m30s", "1ms".
func (d Duration) String() string {
	v := time.Duration(d)
	if v == 0 {
		return "0s"
	}
	var days string
	if v >= 24*time.Hour {
		days = strconv.FormatInt(int64(v/(24*time.Hour)), 10) + "d"
		v %= 24 * time.Hour
		if v == 0 {
			return days
		}
	}
	s := v.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return days + s
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Error is a configuration error with its place in the file.
type Error struct {
	File string
	Line int    // 0 when unknown
	Key  string // dotted key path, when known
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is a list of configuration errors, reported together.
type Errors []*Error

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// Embedded is the Source of the embedded default configuration.
const Embedded = "(embedded default)"

// Find picks the configuration file as Locate does and says what named it:
// "-config", "$QMGATE_CONFIG", DefaultPath, or "the embedded default" (path
// "").
func Find(flagValue string) (path, origin string) {
	if flagValue != "" {
		return flagValue, "-config"
	}
	if v := os.Getenv(EnvVar); v != "" {
		return v, "$" + EnvVar
	}
	if _, err := os.Stat(DefaultPath); err == nil {
		return DefaultPath, DefaultPath
	}
	return "", "the embedded default"
}

// LoadFrom is Load for a file Find picked: the configuration's Origin is
// set, and a file that cannot be read is reported with what named it.
func LoadFrom(path, origin string) (*Config, error) {
	if path != "" {
		if _, err := os.Stat(path); err != nil {
			why := "cannot be read"
			switch {
			case os.IsNotExist(err):
				why = "does not exist"
			case os.IsPermission(err):
				why = "cannot be read: permission denied"
			}
			return nil, &Error{File: path, Msg: fmt.Sprintf("configuration file %s (named by %s)", why, origin)}
		}
	}
	c, err := Load(path)
	if err != nil {
		return nil, err
	}
	c.Origin = origin
	return c, nil
}

// Locate picks the configuration file as every subcommand does: the flag,
// then $QMGATE_CONFIG, then DefaultPath if it exists, then "" (the embedded
// default).
func Locate(flagValue string) string {
	path, _ := Find(flagValue)
	return path
}

// Load reads and validates the file at path, or the embedded default when
// path is "".
func Load(path string) (*Config, error) {
	if path == "" {
		c, err := Parse(Embedded, defaultTOML)
		if c != nil {
			c.Origin = "the embedded default"
		}
		return c, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &Error{File: path, Msg: "cannot read the configuration file: " + err.Error()}
	}
	return Parse(path, data)
}

// Parse decodes, defaults and validates a configuration document. name is
// used in error messages.
func Parse(name string, data []byte) (*Config, error) {
	c := &Config{}
	var errs Errors
	if err := decodeStrict(name, data, c); err != nil {
		de, ok := err.(Errors)
		if !ok || len(de) == 1 && de[0].Key == "" {
			return nil, err // a syntax error: nothing else can be read
		}
		errs = de
	}
	c.Source = name
	c.lines = keyLines(data)
	c.applyDefaults()
	// Every error at once: the values' own checks too, except about a key
	// whose value could not be read at all.
	for _, e := range c.validate() {
		if !reported(errs, e.Key) {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		locate(name, data, errs)
		sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
		return nil, errs
	}
	return c, nil
}

// reported reports whether errs holds an error about key, or about a key
// that contains it or that it contains.
func reported(errs Errors, key string) bool {
	for _, e := range errs {
		if e.Key == key || strings.HasPrefix(key, e.Key+".") || strings.HasPrefix(key, e.Key+"[") ||
			strings.HasPrefix(e.Key, key+".") || strings.HasPrefix(e.Key, key+"[") {
			return true
		}
	}
	return false
}

func (c *Config) applyDefaults() {
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
		if c.Hostname == "" {
			c.Hostname = "localhost"
		}
	}
	// On an app server the local daemon forwards what sendmail spools, so
	// the spool is the daemon's queue.
	setDef(&c.QueueDir, c.Nullclient.SpoolDir)
	setDef(&c.QueueDir, "./qmgate-data/queue")
	setDef(&c.MaxMessageBytes, 50<<20)
	setDef(&c.MaxRecipients, 1000)
	setDef(&c.MaxHops, 100)
	setDef(&c.DefaultDomain, c.Hostname)
	setDef(&c.Postmaster, "postmaster@"+c.Hostname)
	setDef(&c.Log.Level, "info")
	setDef(&c.Log.Format, "text")

	setDef(&c.Limits.MaxConns, 1000)
	setDef(&c.Limits.MaxConnsPerIP, 50)
	setDur(&c.Limits.ReadTimeout, 5*time.Minute)
	setDur(&c.Limits.WriteTimeout, 5*time.Minute)
	setDur(&c.Limits.SessionTimeout, time.Hour)
	setDur(&c.Limits.FirstTimeout, 30*time.Second)
	setDef(&c.Limits.MinDataRate, 64)
	setDef(&c.Limits.MaxUnixConns, 100)
	setDef(&c.Limits.ClientIPv4Prefix, 32)
	setDef(&c.Limits.ClientIPv6Prefix, 64)
	for _, l := range []*ListenLimit{&c.QMQP.ListenLimit, &c.QMTP.ListenLimit, &c.SMTP.ListenLimit} {
		setDef(&l.MaxConns, c.Limits.MaxConns)
		setDef(&l.MaxConnsPerIP, c.Limits.MaxConnsPerIP)
		setDef(&l.ReadTimeout, c.Limits.ReadTimeout)
		setDef(&l.WriteTimeout, c.Limits.WriteTimeout)
		setDef(&l.SessionTimeout, c.Limits.SessionTimeout)
		setDef(&l.FirstTimeout, c.Limits.FirstTimeout)
		setDef(&l.MinDataRate, c.Limits.MinDataRate)
		setDef(&l.MaxUnixConns, c.Limits.MaxUnixConns)
	}

	setDur(&c.Queue.Lifetime, 7*24*time.Hour)
	setDur(&c.Shutdown.DrainTimeout, 30*time.Second)
	setPtr(&c.Shutdown.ReadyGrace, Duration(DefaultReadyGrace))
	setPtr(&c.Queue.DelayNotice, Duration(4*time.Hour))
	setPtr(&c.Queue.CommitLinger, Duration(time.Millisecond))
	setDef(&c.Queue.MinFreeBytes, DefaultMinFreeBytes)
	setDur(&c.Queue.RetryMin, time.Minute)
	setDur(&c.Queue.RetryMax, time.Hour)

	setDef(&c.Delivery.Concurrency, 20)
	setDur(&c.Delivery.ConnectTimeout, 60*time.Second)
	setDur(&c.Delivery.Timeout, 20*time.Minute)
	setDef(&c.Delivery.QMTPPort, 209)
	setDef(&c.Delivery.SMTPPort, 25)
	setDef(&c.Delivery.MTASTSPort, 443)
	for i := range c.Routes {
		r := &c.Routes[i]
		setDef(&r.Concurrency, c.Delivery.Concurrency)
		setPtr(&r.MTASTS, true)
		r.setVia()
		if r.Fallback != "" {
			setDef(&r.FallbackAfter, 3)
		}
		if strings.HasPrefix(r.Via, "smtp") {
			setDef(&r.TLS, "required")
		}
	}
	nameRoutes(c.Routes)
	setDur(&c.Nullclient.Timeout, 60*time.Second)
}

func (c *Config) validate() Errors {
	var errs Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if strings.ContainsAny(c.Hostname, " \t\r\n") {
		bad("hostname", "must not contain white space")
	}
	if c.MaxMessageBytes < 0 {
		bad("max_message_bytes", "must not be negative")
	}
	if c.MaxRecipients < 0 {
		bad("max_recipients", "must not be negative")
	}
	for i, h := range c.RcptHosts {
		if h == "*" {
			bad(fmt.Sprintf("rcpthosts[%d]", i), `"*" would make an open relay; list your domains`)
		} else if h == "" || strings.ContainsAny(h, " @\t") {
			bad(fmt.Sprintf("rcpthosts[%d]", i), "%q is not a domain or .suffix", h)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q: use debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q: use text or json", c.Log.Format)
	}
	// each reports every entry of the list at key that check refuses.
	each := func(key string, list []string, check func(string) error) {
		for i, s := range list {
			if err := check(s); err != nil {
				bad(fmt.Sprintf("%s[%d]", key, i), "%v", err)
			}
		}
	}
	checkNets := func(key string, nets []string) {
		each(key, nets, func(s string) error { _, err := ParsePrefix(s); return err })
	}
	each("qmqp.listen", c.QMQP.Listen, checkListenAddr)
	each("qmtp.listen", c.QMTP.Listen, checkListenAddr)
	each("qmtp.listen_tls", c.QMTP.ListenTLS, checkListenAddr)
	each("smtp.listen", c.SMTP.Listen, checkListenAddr)
	each("smtp.submission", c.SMTP.Submission, checkListenAddr)
	each("smtp.submissions", c.SMTP.Submissions, checkListenAddr)
	checkNets("qmqp.allow", c.QMQP.Allow)
	for i, u := range c.QMQP.UnixAllow {
		if strings.TrimPrefix(u, "@") == "" || strings.ContainsAny(u, " \t:") {
			bad(fmt.Sprintf("qmqp.unix_allow[%d]", i), "%q: want a user name or @group", u)
		}
	}
	for key, m := range map[string]map[string][]string{"qmqp.unix_senders": c.QMQP.UnixSenders, "smtp.sender_login": c.SMTP.SenderLogin} {
		for u, pats := range m {
			if u == "" || strings.ContainsAny(u, " \t:") {
				bad(key, "%q: want a user name or *", u)
			}
			for i, p := range pats {
				if p == "" || strings.ContainsAny(p, " \t") || (p != "*" && p != "<>" && !strings.Contains(p, "@")) {
					bad(fmt.Sprintf("%s.%s[%d]", key, u, i), "%q: want addr@domain, @domain, <> or *", p)
				}
			}
		}
	}
	for _, rk := range c.Limits.RateKeys() {
		each("limits."+rk.Key, rk.Rates, func(s string) error { _, err := ratelimit.ParseRate(s); return err })
	}
	for _, l := range []struct {
		sect string
		l    *ListenLimit
	}{{"limits", &c.Limits.ListenLimit}, {"qmqp", &c.QMQP.ListenLimit}, {"qmtp", &c.QMTP.ListenLimit}, {"smtp", &c.SMTP.ListenLimit}} {
		if l.l.FirstTimeout < 0 {
			bad(l.sect+".first_timeout", "must not be negative")
		}
		if l.l.MinDataRate < 0 {
			bad(l.sect+".min_data_rate", "must not be negative")
		}
		if l.l.MaxUnixConns < 0 {
			bad(l.sect+".max_unix_conns", "must not be negative")
		}
	}
	if n := c.Limits.ClientIPv4Prefix; n < 1 || n > 32 {
		bad("limits.client_ipv4_prefix", "%d: want 1 to 32", n)
	}
	if n := c.Limits.ClientIPv6Prefix; n < 1 || n > 128 {
		bad("limits.client_ipv6_prefix", "%d: want 1 to 128", n)
	}
	checkNets("limits.exempt", c.Limits.Exempt)
	checkNets("qmtp.relay_clients", c.QMTP.RelayClients)
	checkNets("smtp.relay_clients", c.SMTP.RelayClients)
	checkNets("qmqp.proxy_from", c.QMQP.ProxyFrom)
	each("shutdown.handoff", c.Shutdown.Handoff, CheckHandoffPeer)
	if (c.Shutdown.CertFile == "") != (c.Shutdown.KeyFile == "") {
		bad("shutdown.cert_file", "cert_file and key_file go together")
	}
	if g := c.Shutdown.ReadyGrace; g != nil && (*g < 0 || g.D() > MaxReadyGrace) {
		bad("shutdown.ready_grace", "must be between 0s and %v", MaxReadyGrace)
	}
	checkNets("qmtp.proxy_from", c.QMTP.ProxyFrom)
	checkNets("smtp.proxy_from", c.SMTP.ProxyFrom)
	if len(c.QMTP.ListenTLS) > 0 && (c.QMTP.TLSCert == "" || c.QMTP.TLSKey == "") {
		bad("qmtp.listen_tls", "needs qmtp.tls_cert and qmtp.tls_key")
	}
	if (c.QMTP.TLSCert == "") != (c.QMTP.TLSKey == "") {
		bad("qmtp.tls_cert", "tls_cert and tls_key go together")
	}
	if (c.SMTP.TLSCert == "") != (c.SMTP.TLSKey == "") {
		bad("smtp.tls_cert", "tls_cert and tls_key go together")
	}
	if len(c.SMTP.Submissions) > 0 && c.SMTP.TLSCert == "" {
		bad("smtp.submissions", "needs smtp.tls_cert and smtp.tls_key")
	}
	if (len(c.SMTP.Submission) > 0 || len(c.SMTP.Submissions) > 0) && c.SMTP.AuthFile == "" {
		bad("smtp.submission", "submission listeners require AUTH: set smtp.auth_file")
	}
	if d := c.Queue.CommitLinger.D(); d < 0 || d > time.Second {
		bad("queue.commit_linger", "%v: want 0s (off) up to 1s", d)
	}
	if c.Queue.RetryMin > c.Queue.RetryMax {
		bad("queue.retry_min", "greater than queue.retry_max")
	}
	if p := c.Delivery.MTASTSPort; p < 1 || p > 65535 {
		bad("delivery.mta_sts_port", "%d: want a port, 1 to 65535", p)
	}
	if c.Delivery.Resolver != "" {
		if _, err := netip.ParseAddrPort(c.Delivery.Resolver); err != nil {
			bad("delivery.resolver", "%q: want ip:port", c.Delivery.Resolver)
		}
	}
	if c.Metrics.Listen != "" {
		if ap, err := netip.ParseAddrPort(c.Metrics.Listen); err != nil || !ap.Addr().IsLoopback() {
			bad("metrics.listen", "%q: want a loopback ip:port", c.Metrics.Listen)
		}
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		key := fmt.Sprintf("route[%d]", i)
		if len(r.Domains) == 0 {
			bad(key+".domains", "a route needs at least one domain pattern")
		}
		for j, d := range r.Domains {
			if d == "" || strings.ContainsAny(d, " @\t") || (strings.Contains(d, "*") && d != "*") {
				bad(fmt.Sprintf("%s.domains[%d]", key, j), "%q: want example.net, .example.net or *", d)
			}
		}
		for j, p := range r.Senders {
			if err := ValidSenderPattern(p); err != nil {
				bad(fmt.Sprintf("%s.senders[%d]", key, j), "%q: %v", p, err)
			}
		}
		if r.viaErr != "" {
			bad(key+".via", "%s", r.viaErr)
		}
		u, err := ParseVia(r.Via)
		if err != nil {
			bad(key+".via", "%v", err)
		}
		r.Parsed = u
		for j, h := range r.Hosts[min(1, len(r.Hosts)):] {
			if hu, err := ParseVia(h); err != nil {
				bad(fmt.Sprintf("%s.via[%d]", key, j+1), "%v", err)
			} else if !failoverScheme(hu.Scheme) {
				bad(fmt.Sprintf("%s.via[%d]", key, j+1), "%q: a list of next hops takes qmtp, qmtps, smtp and smtps URLs (qmqp has its own: qmqp://H1,H2)", h)
			}
		}
		if len(r.Hosts) > 1 && u != nil && !failoverScheme(u.Scheme) {
			bad(key+".via[0]", "%q: a list of next hops takes qmtp, qmtps, smtp and smtps URLs (qmqp has its own: qmqp://H1,H2)", r.Hosts[0])
		}
		switch r.TLS {
		case "", "required", "opportunistic", "none":
		default:
			bad(key+".tls", "%q: use required, opportunistic or none", r.TLS)
		}
		if r.Concurrency < 1 {
			bad(key+".concurrency", "must be at least 1")
		}
		validateUserControl(r, key, bad)
		if n := b2i(r.Password != "") + b2i(r.PasswordFile != "") + b2i(r.PasswordEnv != ""); n > 1 {
			bad(key+".password", "set one of password, password_file and password_env")
		}
		errs = append(errs, validateSmarthost(c, i)...)
		if r.Username != "" && r.Via == "mx" {
			bad(key+".username", "mx routes send no credentials: every exchanger of every domain would get them")
		} else if r.Username != "" && (r.TLS == "opportunistic" || r.TLS == "none") && !r.InsecureAuth {
			bad(key+".username", "credentials need verified TLS (tls = \"required\"); set insecure_auth = true to send them over %s TLS anyway", map[string]string{"opportunistic": "unverified", "none": "no"}[r.TLS])
		}
	}
	if c.User != "" {
		if _, err := user.Lookup(c.User); err != nil {
			bad("user", "no such user %q", c.User)
		}
	}
	if sd := c.Nullclient.SpoolDir; sd != "" && filepath.Clean(sd) != filepath.Clean(c.QueueDir) {
		bad("nullclient.spool_dir", "must be the local daemon's queue_dir (%s), which forwards what sendmail spools; leave queue_dir unset to use spool_dir", c.QueueDir)
	}
	for i, s := range c.Nullclient.QMQPServers {
		if s == "" {
			bad(fmt.Sprintf("nullclient.qmqp_servers[%d]", i), "empty server")
		}
	}
	c.validateIdentity(bad)
	return errs
}

// ParseVia parses and checks a route's transport URL.
func ParseVia(via string) (*url.URL, error) {
	if via == "mx" {
		return &url.URL{Scheme: "mx"}, nil
	}
	if via == "" {
		return nil, errors.New("missing via (transport URL)")
	}
	u, err := url.Parse(via)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", via)
	}
	switch u.Scheme {
	case "qmtp", "qmtps", "smtp", "smtps":
		if u.Host == "" || strings.Contains(u.Host, ",") {
			return nil, fmt.Errorf("%q: want %s://host[:port]", via, u.Scheme)
		}
	case "qmqp":
		if u.Host == "" {
			return nil, fmt.Errorf("%q: want qmqp://host[:port][,host[:port]...]", via)
		}
	case "maildir", "mbox":
		if u.Opaque == "" && u.Path == "" {
			return nil, fmt.Errorf("%q: want %s:DIR", via, u.Scheme)
		}
	case "discard":
	case "https":
		if u.Host == "" {
			return nil, fmt.Errorf("%q: want https://host/path", via)
		}
	case "http":
		h := u.Hostname()
		ip, err := netip.ParseAddr(h)
		if h != "localhost" && (err != nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("%q: plain http is allowed only to loopback; use https", via)
		}
	default:
		return nil, fmt.Errorf("%q: unknown transport %q (want qmtp, qmtps, qmqp, smtp, smtps, mx, maildir, mbox, discard, https)", via, u.Scheme)
	}
	return u, nil
}

// Dir returns the directory of a maildir: or mbox: URL, absolute or relative.
func Dir(u *url.URL) string {
	if u.Opaque != "" {
		return filepath.Clean(u.Opaque)
	}
	return filepath.Clean(u.Path)
}

// ParsePrefix parses "10.0.0.0/8", "::1/128" or a single address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q is not a network (want CIDR such as 10.0.0.0/8)", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or network", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// Prefixes parses a list checked by validate.
func Prefixes(list []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if p, err := ParsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func checkListenAddr(a string) error {
	if strings.HasPrefix(a, "unix:") {
		if len(a) == len("unix:") {
			return errors.New("unix: needs a path")
		}
		return nil
	}
	if _, err := netip.ParseAddrPort(a); err != nil {
		return fmt.Errorf("%q: want ip:port or unix:/path", a)
	}
	return nil
}

// setDef sets *p to v when the file left it at its zero value.
func setDef[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

func setDur(p *Duration, v time.Duration) { setDef(p, Duration(v)) }

// setPtr sets *p to point to v when the file did not set it (a pointer
// field, whose zero value is a setting of its own).
func setPtr[T any](p **T, v T) {
	if *p == nil {
		*p = &v
	}
}

// validateUserControl checks a route's settings for user control files.
func validateUserControl(r *Route, key string, bad func(field, format string, args ...any)) {
	local := r.Parsed != nil && (r.Parsed.Scheme == "maildir" || r.Parsed.Scheme == "mbox")
	switch r.Separator {
	case "", "-", "+":
	default:
		bad(key+".separator", "%q: use \"-\" or \"+\"", r.Separator)
	}
	if !local && (r.Separator != "" || r.Folders != nil || r.Programs || r.SRSSecretFile != "" || r.SRSDomain != "") {
		bad(key, "separator, folders, programs and srs_* are for maildir and mbox routes")
		return
	}
	if r.Folders != nil && *r.Folders && r.Parsed != nil && r.Parsed.Scheme == "mbox" {
		bad(key+".folders", "mbox routes have no IMAP folders")
	}
	if r.SRSDomain != "" && r.SRSSecretFile == "" {
		bad(key+".srs_domain", "needs srs_secret_file")
	}
	if r.SRSSecretFile != "" && SRSDomain(r) == "" {
		bad(key+".srs_domain", "set it to one of the route's exact domains: SRS bounces must come back to this route")
	}
}

// SRSDomain is the route's SRS domain: srs_domain if it is one of the
// route's exact domains, else the first exact domain; "" when none fits.
func SRSDomain(r *Route) string {
	for _, d := range r.Domains {
		if d == "*" || strings.HasPrefix(d, ".") {
			continue
		}
		if r.SRSDomain == "" || strings.EqualFold(r.SRSDomain, d) {
			return strings.ToLower(d)
		}
	}
	return ""
}
