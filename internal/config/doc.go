package config

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"

	toml "github.com/pelletier/go-toml/v2"
)

// keyDoc is the one-line description of every key, defaults included, as
// `qmgate config print -doc` shows it. Keys of [limits] apply to every
// listener's section too (qmqp.max_conns overrides limits.max_conns).
var keyDoc = map[string]string{
	"hostname":          "names this host in greetings, Received lines and bounces (default: the system's host name)",
	"user":              "the user the daemon becomes after binding its ports when started as root (required as root)",
	"queue_dir":         "the durable queue (default ./qmgate-data/queue, relative to the daemon's working directory)",
	"max_message_bytes": "largest message accepted, in bytes (default 52428800, 50 MiB)",
	"max_recipients":    "most recipients of one message on every listener (default 1000)",
	"max_hops":          "this many Received: and Delivered-To: lines make a mail loop (default 100)",
	"rcpthosts":         "domains accepted from anyone, as qmail's rcpthosts: example.com, or .example.com for subdomains",
	"default_domain":    "domain that qualifies bare local addresses (default: hostname)",
	"postmaster":        "address that receives double bounces (default postmaster@hostname)",

	"log.level":  "debug, info, warn or error (default info)",
	"log.format": "text or json (default text)",

	"limits.max_conns":        "most simultaneous connections per listener (default 1000)",
	"limits.max_conns_per_ip": "most simultaneous connections from one client address (default 50)",
	"limits.read_timeout":     "longest wait for each read from a client (default 5m)",
	"limits.write_timeout":    "longest wait for each write to a client (default 5m)",
	"limits.session_timeout":  "longest a whole connection may last (default 1h)",
	"limits.first_timeout":    "longest wait for a client's first command (SMTP HELO/EHLO) or the start of its package (QMTP, QMQP) (default 30s)",
	"limits.min_data_rate":    "slowest a client may send, in bytes a second over two minutes; slower clients are cut off (default 64)",
	"limits.max_unix_conns":   "most simultaneous connections on unix-domain sockets, a budget apart from max_conns (default 100)",

	"limits.client_messages":          "messages one client address (IPv4 address, IPv6 /64) may send, as rates such as \"100/m\", \"2000/h\" (default: no limit)",
	"limits.client_recipients":        "recipients one client address may send, as rates (default: no limit)",
	"limits.user_messages":            "messages one authenticated SMTP user may send, as rates (default: no limit)",
	"limits.user_recipients":          "recipients one authenticated SMTP user may send, as rates (default: no limit)",
	"limits.uid_messages":             "messages one local user of the QMQP unix socket may send, as rates (default: no limit)",
	"limits.uid_recipients":           "recipients one local user of the QMQP unix socket may send, as rates (default: no limit)",
	"limits.sender_domain_messages":   "messages with envelope senders of one domain, as rates (default: no limit)",
	"limits.sender_domain_recipients": "recipients of messages with envelope senders of one domain, as rates (default: no limit)",
	"limits.client_ipv4_prefix":       "IPv4 clients in one network of this many bits share the client rate limits (default 32)",
	"limits.client_ipv6_prefix":       "IPv6 clients in one network of this many bits share the client rate limits and max_conns_per_ip (default 64)",
	"limits.exempt":                   "client networks no rate limit and no max_conns_per_ip applies to (default none)",
	"limits.exempt_relay_clients":     "exempt relay clients and allowed QMQP clients over TCP from the rate limits (default false)",
	"limits.limit_trusted_conns":      "apply max_conns_per_ip to relay clients, the QMQP allow list and exempt networks too (default false)",

	"qmqp.listen":          "QMQP listen addresses, ip:port or unix:/path (default none)",
	"qmqp.allow":           "networks allowed to send over QMQP, which has no authentication (default nobody)",
	"qmqp.trust_tcpserver": "qmgate qmqpd leaves access to tcpserver's rules instead of applying allow, as qmail-qmqpd does (default false)",
	"qmqp.unix_allow":      "local users (name, or @group) who may submit over the QMQP unix socket (default: every local user)",
	"qmqp.dropin_users":    "local users, besides root and the daemon's own, who run the qmtpd/qmqpd drop-ins: the daemon logs the protocol and client they saw (default none)",
	"qmqp.unix_senders":    "per local user (or \"*\"), the envelope senders allowed over the unix socket: addr@domain, @domain, <> or * (default: any)",

	"qmtp.listen":            "QMTP listen addresses, ip:port or unix:/path (default none)",
	"qmtp.listen_tls":        "QMTPS (implicit TLS) listen addresses; need tls_cert and tls_key",
	"qmtp.relay_clients":     "networks whose QMTP clients may send to any domain (others: rcpthosts only)",
	"qmqp.proxy_from":        "load balancers (CIDR) whose PROXY protocol header naming the real client is believed on QMQP TCP listeners; a header from anyone else is refused",
	"qmqp.proxy_required":    "refuse a connection from qmqp.proxy_from that sends no PROXY header",
	"qmtp.proxy_from":        "load balancers (CIDR) whose PROXY protocol header naming the real client is believed on QMTP TCP listeners; a header from anyone else is refused",
	"qmtp.proxy_required":    "refuse a connection from qmtp.proxy_from that sends no PROXY header",
	"smtp.proxy_from":        "load balancers (CIDR) whose PROXY protocol header naming the real client is believed on SMTP TCP listeners; a header from anyone else is refused",
	"smtp.proxy_required":    "refuse a connection from smtp.proxy_from that sends no PROXY header",
	"shutdown.handoff":       "peer hubs (qmtp://host[:port] or qmtps://host:port) to hand the queue to when SIGTERM or qmgate drain drains the hub",
	"shutdown.ca_file":       "PEM roots that verify qmtps:// hand-off peers (default: the system's)",
	"shutdown.cert_file":     "client certificate (PEM) a hand-off shows to qmtps:// peers",
	"shutdown.key_file":      "private key of shutdown.cert_file",
	"shutdown.drain_timeout": "how long a drain lets deliveries run before the hand-off",
	"shutdown.ready_grace":   "how long a drain lets /readyz fail before it closes the listeners",
	"qmtp.tls_cert":          "certificate file (PEM) for QMTPS",
	"qmtp.tls_key":           "private key file (PEM) for QMTPS",
	"qmtp.client_ca":         "CA file: QMTPS clients presenting a certificate it signed may relay",

	"smtp.listen":           "SMTP listen addresses, ip:port (default none)",
	"smtp.submission":       "submission listen addresses (AUTH required before MAIL, port 587 style)",
	"smtp.submissions":      "implicit-TLS submission listen addresses (port 465 style)",
	"smtp.relay_clients":    "networks whose SMTP clients may send to any domain (others: rcpthosts only)",
	"smtp.sender_login":     "per authenticated user (or \"*\"), the envelope senders allowed: addr@domain, @domain, <> or * (default: any)",
	"smtp.tls_cert":         "certificate file (PEM) for STARTTLS and implicit TLS",
	"smtp.tls_key":          "private key file (PEM) for STARTTLS and implicit TLS",
	"smtp.auth_file":        "file of user:bcrypt-hash lines for SMTP AUTH (qmgate passwd makes them)",
	"smtp.auth_without_tls": "allow AUTH on unencrypted connections (default false)",

	"queue.lifetime":       "how long a message is retried before it bounces (default 7d)",
	"queue.delay_notice":   "after this long undelivered, the sender is told once (default 4h; 0s: never)",
	"queue.retry_min":      "first retry delay, doubled per failure (default 1m)",
	"queue.retry_max":      "longest retry delay (default 1h)",
	"queue.min_free_bytes": "free space kept on the queue's file system; below it new mail is refused for a while (default 16777216, 16 MiB; -1: off)",
	"queue.commit_linger":  "longest a queue commit waits for more writers to share its flush (default 1ms; 0s: off)",

	"delivery.concurrency":     "simultaneous deliveries per route unless the route says otherwise (default 20)",
	"delivery.resolver":        "DNS server ip:port for mx routes (default: the system's resolver)",
	"delivery.connect_timeout": "longest wait to connect to the next hop (default 60s)",
	"delivery.timeout":         "longest wait for each read or write to the next hop (default 20m)",
	"delivery.qmtp_port":       "port mx routes use for QMTP (default 209)",
	"delivery.smtp_port":       "port mx routes use for SMTP (default 25)",
	"delivery.mta_sts_port":    "port mx routes fetch MTA-STS policies from (default 443)",

	"route.domains":                    "domains this route takes: example.net, .example.net (subdomains) or *; the first matching route wins",
	"route.senders":                    "only mail from these envelope senders: *@example.net, user@example.net, example.net, .example.net or *; bounces never match; unset: any sender",
	"route.via":                        "where the mail goes: qmtp://, qmtps://, qmqp://, smtp://, smtps://, mx, maildir:DIR, mbox:DIR, discard:, https://",
	"route.concurrency":                "simultaneous deliveries on this route (default: delivery.concurrency)",
	"route.tls":                        "smtp:// routes: required (default), opportunistic or none",
	"route.username":                   "user name for SMTP AUTH at the next hop",
	"route.password":                   "password for SMTP AUTH (prefer password_file)",
	"route.password_file":              "file holding the SMTP AUTH password",
	"route.ca_file":                    "CA file that verifies the next hop's certificate instead of the system's roots (mx routes: also MTA-STS policy servers and exchangers)",
	"route.mta_sts":                    "mx routes: honour the recipient domains' MTA-STS policies, RFC 8461 (default true)",
	"route.headers":                    "extra HTTP headers for https:// routes, \"Name: value\"",
	"route.insecure_auth":              "allow SMTP AUTH with tls opportunistic or none, where the path can read the credentials (default false)",
	"route.redirect_permanent":         "https:// routes: a 3xx answer is a permanent failure (default: temporary; redirects are never followed)",
	"route.users_file":                 "maildir and mbox routes: file of valid local users, one a line; others are refused at RCPT (default: every safe name)",
	"route.max_new_mailboxes_per_hour": "maildir and mbox routes: mailboxes created per hour at most; past it, new mailboxes wait (default 20; negative: no bound)",
	"route.name":                       "the route's name in logs, metrics, queue show, fallback and qmgate oauth2 (default: first domain and transport, such as example.net-smtp)",
	"route.password_env":               "environment variable holding the SMTP AUTH password",
	"route.cert_file":                  "client certificate (PEM) for the TLS handshake with the next hop; needs key_file",
	"route.key_file":                   "private key of cert_file",
	"route.rate":                       "pace of the route's messages, such as 30/m or 2000/d; mx routes: per destination domain (default: none)",
	"route.throttle_texts":             "more phrases marking a 421/451/452 reply as the next hop's rate limit, which slows the route down",
	"route.fallback":                   "mx routes: name of the smarthost route that takes mail after fallback_after attempts or a fallback_on failure",
	"route.fallback_after":             "mx routes: failed attempts of a message before the fallback route takes it (default 3)",
	"route.fallback_on":                "mx routes: failures handed to the fallback route at once: connect-timeout, connect",
	"route.oauth2.token_url":           "OAuth2 token endpoint of an smtp or smtps route (XOAUTH2 or OAUTHBEARER as username)",
	"route.oauth2.device_auth_url":     "OAuth2 device authorization endpoint, for qmgate oauth2 login",
	"route.oauth2.client_id":           "OAuth2 client id of the application",
	"route.oauth2.client_secret_file":  "file holding the OAuth2 client secret (required for client credentials)",
	"route.oauth2.scopes":              "OAuth2 scopes requested",
	"route.oauth2.refresh_token_file":  "file holding the refresh token that qmgate oauth2 login stored (default: client credentials)",
	"route.oauth2.mechanism":           "XOAUTH2 or OAUTHBEARER (default: chosen from the server's offer)",
	"route.separator":                  "maildir and mbox routes: what splits user from extension in user-EXT (\"-\" default, or \"+\")",
	"route.folders":                    "maildir routes: deliver user-EXT into the IMAP folder .EXT when no control file matches (default true)",
	"route.programs":                   "maildir and mbox routes: let users' control files run programs, as the mail user (default false)",
	"route.srs_secret_file":            "maildir and mbox routes: SRS secrets, one a line, for forwards leaving rcpthosts",
	"route.srs_domain":                 "maildir and mbox routes: the domain of SRS-rewritten senders (default: the route's first exact domain)",

	"dkim.domain":     "DKIM signing domain (d=); mail from the hub's own clients whose From: is in it is signed",
	"dkim.selector":   "the key's selector (s=): its public key is at SELECTOR._domainkey.DOMAIN",
	"dkim.key_file":   "PEM private key (RSA 2048-4096 or Ed25519), readable by its owner only; qmgate dkim keygen makes one",
	"dkim.algorithm":  "ed25519 or rsa: refuse a key of another kind (default: any)",
	"dkim.subdomains": "also sign mail from subdomains of the domain as the domain (default false)",

	"rewrite.hosts.match":   "sender domains to rewrite: app17.example.net, *.internal or *",
	"rewrite.hosts.domain":  "the domain matching senders get",
	"rewrite.users.match":   "senders to rewrite whole, user@HOSTPATTERN such as root@* (tried before hosts)",
	"rewrite.users.address": "the address matching senders become",
	"rewrite.admin.address": "where mail for the app servers' own users goes (nullmailer's adminaddr; default off)",
	"rewrite.admin.hosts":   "the app servers whose users' mail goes to admin.address",
	"rewrite.admin.users":   "local parts sent to admin.address, e.g. root, postmaster (default: every user)",
	"rewrite.all_mail_from": "one sender for all mail, as nullmailer's allmailfrom (default off)",
	"rewrite.headers":       "also rewrite From:, Sender: and Reply-To:, not only the envelope (default false)",

	"metrics.listen": "loopback ip:port serving /metrics and /healthz (default off)",

	"nullclient.qmqp_servers": "QMQP servers qmgate sendmail tries in order, failing over when a connection fails",
	"nullclient.spool_dir":    "local queue where sendmail keeps mail no server took; qmgate serve forwards it",
	"nullclient.timeout":      "longest sendmail tries in direct mode (default 60s)",
}

// Keys returns every configuration key in file order, dotted ("queue_dir",
// "qmtp.listen", "route.via"); the listeners' own limit keys are included
// (qmtp.max_conns).
func Keys() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("toml")
			if tag == "-" || !f.IsExported() {
				continue
			}
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if f.Anonymous && tag == "" {
				walk(ft, prefix)
				continue
			}
			key := join(prefix, tag)
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != durationType {
				walk(ft, key)
				continue
			}
			out = append(out, key)
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	return out
}

// KeyDoc returns the one-line description of a key as Keys names it.
func KeyDoc(key string) string {
	if d, ok := keyDoc[key]; ok {
		return d
	}
	if i := strings.IndexByte(key, '.'); i > 0 {
		if _, ok := keyDoc["limits"+key[i:]]; ok {
			return "this listener's own limits" + key[i:] + " (default: limits" + key[i:] + ")"
		}
	}
	return ""
}

// WriteDoc writes one line per key: the key and its description.
func WriteDoc(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, k := range Keys() {
		fmt.Fprintf(tw, "%s\t%s\n", k, KeyDoc(k))
	}
	return tw.Flush()
}

// PrintSet writes, as TOML, only the keys the file sets, with their values
// (like postconf -n): what this configuration changes from the defaults.
func (c *Config) PrintSet() ([]byte, error) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(c.shown()); err != nil {
		return nil, err
	}
	var all map[string]any
	if err := toml.Unmarshal(buf.Bytes(), &all); err != nil {
		return nil, err
	}
	set := keepSet(all, "", c.lines)
	var b bytes.Buffer
	fmt.Fprintf(&b, "# settings made in %s (qmgate config print shows every effective value)\n", c.Source)
	if len(set) == 0 {
		return b.Bytes(), nil
	}
	enc := toml.NewEncoder(&b)
	enc.SetIndentTables(true)
	if err := enc.Encode(set); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// keepSet returns the part of m whose keys appear in lines.
func keepSet(m map[string]any, prefix string, lines map[string]int) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		key := join(prefix, k)
		switch v := v.(type) {
		case map[string]any:
			if sub := keepSet(v, key, lines); len(sub) > 0 {
				out[k] = sub
			} else if _, ok := lines[key]; ok && !hasChild(lines, key) {
				out[k] = v
			}
			continue
		case []any:
			if len(v) > 0 {
				if _, ok := v[0].(map[string]any); ok {
					var tables []any
					for i, e := range v {
						tables = append(tables, keepSet(e.(map[string]any), key+"["+strconv.Itoa(i)+"]", lines))
					}
					out[k] = tables
					continue
				}
			}
		}
		if _, ok := lines[key]; ok {
			out[k] = v
		}
	}
	return out
}

func hasChild(lines map[string]int, key string) bool {
	for k := range lines {
		if strings.HasPrefix(k, key+".") || strings.HasPrefix(k, key+"[") {
			return true
		}
	}
	return false
}
