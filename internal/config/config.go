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

// Config is the whole configuration: one field per key of qmgate.toml(5)
// (docs/man/qmgate.toml.5.md), which gives each key's meaning, default and
// whether a reload applies it; a test keeps that page and these structures
// in step. applyDefaults fills in the defaults, validate checks the values.
type Config struct {
	Hostname        string   `toml:"hostname"`
	User            string   `toml:"user"`
	QueueDir        string   `toml:"queue_dir"`
	MaxMessageBytes int64    `toml:"max_message_bytes"`
	MaxRecipients   int      `toml:"max_recipients"`
	MaxHops         int      `toml:"max_hops"`
	RcptHosts       []string `toml:"rcpthosts"`
	DefaultDomain   string   `toml:"default_domain"`
	Postmaster      string   `toml:"postmaster"`

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
	DKIM       []DKIM     `toml:"dkim"`
	Rewrite    Rewrite    `toml:"rewrite"`
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
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// ListenLimit holds the limits every listener shares unless its own section
// overrides them.
type ListenLimit struct {
	MaxConns       int      `toml:"max_conns"`
	MaxConnsPerIP  int      `toml:"max_conns_per_ip"`
	ReadTimeout    Duration `toml:"read_timeout"`
	WriteTimeout   Duration `toml:"write_timeout"`
	SessionTimeout Duration `toml:"session_timeout"`
	FirstTimeout   Duration `toml:"first_timeout"`
	MinDataRate    int64    `toml:"min_data_rate"`
	MaxUnixConns   int      `toml:"max_unix_conns"`
}

// Limits holds the connection limits every listener shares (ListenLimit)
// and the inbound rate limits of `qmgate serve`: messages and recipients a
// client may send per minute, hour or day. Each list holds rates such as
// "100/m", "2000/h", "10000/d"; all must hold. Empty lists limit nothing.
type Limits struct {
	ListenLimit
	ClientMessages         []string `toml:"client_messages"`
	ClientRecipients       []string `toml:"client_recipients"`
	UserMessages           []string `toml:"user_messages"`
	UserRecipients         []string `toml:"user_recipients"`
	UIDMessages            []string `toml:"uid_messages"`
	UIDRecipients          []string `toml:"uid_recipients"`
	SenderDomainMessages   []string `toml:"sender_domain_messages"`
	SenderDomainRecipients []string `toml:"sender_domain_recipients"`
	ClientIPv4Prefix       int      `toml:"client_ipv4_prefix"`
	ClientIPv6Prefix       int      `toml:"client_ipv6_prefix"`
	Exempt                 []string `toml:"exempt"`
	ExemptRelayClients     bool     `toml:"exempt_relay_clients"`
	LimitTrustedConns      bool     `toml:"limit_trusted_conns"`
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
	Listen         []string            `toml:"listen"`
	Allow          []string            `toml:"allow"`
	TrustTCPServer bool                `toml:"trust_tcpserver"`
	UnixAllow      []string            `toml:"unix_allow"`
	UnixSenders    map[string][]string `toml:"unix_senders"`
	DropInUsers    []string            `toml:"dropin_users"`
	ListenLimit
	ListenProxy
}

// QMTP configures the QMTP listeners.
type QMTP struct {
	Listen       []string `toml:"listen"`
	ListenTLS    []string `toml:"listen_tls"`
	RelayClients []string `toml:"relay_clients"`
	TLSCert      string   `toml:"tls_cert"`
	TLSKey       string   `toml:"tls_key"`
	ClientCA     string   `toml:"client_ca"`
	ListenLimit
	ListenProxy
}

// SMTP configures the SMTP listeners.
type SMTP struct {
	Listen         []string            `toml:"listen"`
	Submission     []string            `toml:"submission"`
	Submissions    []string            `toml:"submissions"`
	RelayClients   []string            `toml:"relay_clients"`
	SenderLogin    map[string][]string `toml:"sender_login"`
	TLSCert        string              `toml:"tls_cert"`
	TLSKey         string              `toml:"tls_key"`
	AuthFile       string              `toml:"auth_file"`
	AuthWithoutTLS bool                `toml:"auth_without_tls"`
	ListenLimit
	ListenProxy
}

// ListenProxy says which load balancers in front of a section's TCP
// listeners send a PROXY protocol header (version 1 or 2) naming the real
// client. Unix-domain listeners never take one.
type ListenProxy struct {
	ProxyFrom     []string `toml:"proxy_from"`
	ProxyRequired bool     `toml:"proxy_required"`
}

// Shutdown configures how SIGTERM takes the hub away.
type Shutdown struct {
	Handoff      []string  `toml:"handoff"`
	DrainTimeout Duration  `toml:"drain_timeout"`
	ReadyGrace   *Duration `toml:"ready_grace"`
	CAFile       string    `toml:"ca_file"`
	CertFile     string    `toml:"cert_file"`
	KeyFile      string    `toml:"key_file"`
}

// DefaultReadyGrace is shutdown.ready_grace's default: a few of a load
// balancer's health checks, which commonly come every second or two.
const DefaultReadyGrace = 2 * time.Second

// MaxReadyGrace bounds shutdown.ready_grace: a drain must not wait long
// before it starts to close.
const MaxReadyGrace = 5 * time.Minute

// Queue configures retries and bounces.
type Queue struct {
	Lifetime     Duration  `toml:"lifetime"`
	DelayNotice  *Duration `toml:"delay_notice"`
	RetryMin     Duration  `toml:"retry_min"`
	RetryMax     Duration  `toml:"retry_max"`
	MinFreeBytes int64     `toml:"min_free_bytes"`
	CommitLinger *Duration `toml:"commit_linger"`
}

// Delivery configures the delivery engine.
type Delivery struct {
	Concurrency    int      `toml:"concurrency"`
	Resolver       string   `toml:"resolver"`
	ConnectTimeout Duration `toml:"connect_timeout"`
	Timeout        Duration `toml:"timeout"`
	QMTPPort       int      `toml:"qmtp_port"`
	SMTPPort       int      `toml:"smtp_port"`
	MTASTSPort     int      `toml:"mta_sts_port"`
}

// Route sends mail for some domains through one transport.
type Route struct {
	Name    string   `toml:"name"`
	Domains []string `toml:"domains"`
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
	Hosts                  []string `toml:"-"`
	Concurrency            int      `toml:"concurrency"`
	TLS                    string   `toml:"tls"`
	Username               string   `toml:"username"`
	Password               string   `toml:"password"`
	PasswordFile           string   `toml:"password_file"`
	PasswordEnv            string   `toml:"password_env"`
	OAuth2                 *OAuth2  `toml:"oauth2"`
	CertFile               string   `toml:"cert_file"`
	KeyFile                string   `toml:"key_file"`
	Rate                   string   `toml:"rate"`
	ThrottleTexts          []string `toml:"throttle_texts"`
	Fallback               string   `toml:"fallback"`
	FallbackAfter          int      `toml:"fallback_after"`
	FallbackOn             []string `toml:"fallback_on"`
	InsecureAuth           bool     `toml:"insecure_auth"`
	CAFile                 string   `toml:"ca_file"`
	MTASTS                 *bool    `toml:"mta_sts"`
	Headers                []string `toml:"headers"`
	RedirectPermanent      bool     `toml:"redirect_permanent"`
	UsersFile              string   `toml:"users_file"`
	MaxNewMailboxesPerHour int      `toml:"max_new_mailboxes_per_hour"`
	Separator              string   `toml:"separator"`
	Folders                *bool    `toml:"folders"`
	Programs               bool     `toml:"programs"`
	SRSSecretFile          string   `toml:"srs_secret_file"`
	SRSDomain              string   `toml:"srs_domain"`

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
	Mechanism        string   `toml:"mechanism"`
}

// Metrics configures the optional metrics and health listener.
type Metrics struct {
	Listen string `toml:"listen"`
}

// Nullclient configures `qmgate sendmail` and the qmail-qmqpc drop-in.
type Nullclient struct {
	QMQPServers []string `toml:"qmqp_servers"`
	SpoolDir    string   `toml:"spool_dir"`
	Timeout     Duration `toml:"timeout"`
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
