package qmail

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/qmgate/qmgate/mail"
)

// converted names the control files FromQmail carries over (and the
// compiled morercpthosts.cdb, whose source it reads instead).
var converted = map[string]bool{
	"me": true, "defaultdomain": true, "defaulthost": true,
	"rcpthosts": true, "morercpthosts": true, "morercpthosts.cdb": true,
	"qmqpservers": true, "smtproutes": true, "qmtproutes": true,
	"databytes": true, "concurrencyremote": true, "queuelifetime": true,
	"timeoutremote": true, "timeoutconnect": true,
}

// notConverted explains, for the qmail control files FromQmail knows but
// cannot carry over, why and what to do instead.
var notConverted = map[string]string{
	"locals":           "qmgate has no qmail-local; deliver local domains with a maildir: or mbox: [[route]]",
	"virtualdomains":   "qmgate has no virtual users; route each domain with a [[route]] (maildir:DIR delivers to DIR/domain/user/)",
	"badmailfrom":      "qmgate has no sender block list",
	"badrcptto":        "qmgate has no recipient block list",
	"concurrencylocal": "qmgate has no local deliveries of its own; see [delivery] concurrency",
	"bouncefrom":       "qmgate's bounces come from MAILER-DAEMON@hostname",
	"bouncehost":       "qmgate's bounces come from MAILER-DAEMON@hostname",
	"doublebouncehost": "double bounces go to postmaster (the postmaster key)",
	"doublebounceto":   "double bounces go to the postmaster key; set postmaster = \"...\" to change it",
	"envnoathost":      "qmgate qualifies bare addresses with default_domain, set above from defaulthost/me",
	"helohost":         "qmgate greets with hostname",
	"idhost":           "Message-IDs use hostname",
	"localiphost":      "qmgate has no local deliveries",
	"percenthack":      "qmgate does not rewrite the % hack; it refuses such addresses unless they stay inside rcpthosts",
	"plusdomain":       "qmgate does not rewrite addresses ending in +",
	"smtpgreeting":     "qmgate greets with hostname",
	"timeoutsmtpd":     "set [smtp] read_timeout (per read) and session_timeout instead",
	"qmqpservers.cdb":  "qmgate reads qmqpservers itself",
	"rcpthosts.cdb":    "qmgate reads rcpthosts itself",
	"defaultdelivery":  "qmgate has no local deliveries",
	"tlsserverciphers": "qmgate uses Go's TLS defaults; set [smtp] tls_cert and tls_key",
	"tlsclientciphers": "qmgate uses Go's TLS defaults",
	"servercert.pem":   "set [smtp] tls_cert and tls_key to a certificate and key in PEM files",
	"clientcert.pem":   "qmgate does not present client certificates",
	"dh1024.pem":       "Go's TLS needs no DH parameters",
	"dh512.pem":        "Go's TLS needs no DH parameters",
	"rsa512.pem":       "Go's TLS needs no RSA export keys",
	"spfbehavior":      "qmgate does no SPF checks",
	"mfcheck":          "qmgate does no sender DNS checks",
}

// FromQmail reads the qmail control directory dir and returns an equivalent
// qmgate configuration as TOML text, with a comment for every setting that
// could not be carried over or means something different in qmgate. The
// text loads with internal/config as it is; it is meant to be read and
// edited before use.
//
// What is converted (qmail's defaults where a file is missing):
//
//	me                       hostname
//	defaulthost, me,
//	  defaultdomain          default_domain: defaulthost (else me), plus
//	                         "."+defaultdomain when it has no dot, as
//	                         qmail-inject qualifies a bare user
//	rcpthosts, morercpthosts rcpthosts (same matching rules); a missing
//	                         rcpthosts, qmail's open relay, is not carried over
//	databytes                max_message_bytes (qmail's 0, no limit, is not)
//	queuelifetime            [queue] lifetime
//	concurrencyremote        [delivery] concurrency
//	timeoutremote            [delivery] timeout
//	timeoutconnect           [delivery] connect_timeout
//	qmqpservers              [nullclient] qmqp_servers
//	qmtproutes, smtproutes   [[route]] tables, in qmail-remote's lookup order
//	                         (exact domain, longest .suffix, default), QMTP
//	                         routes first; a domain without a relay is "mx"
//
// Files it knows but cannot carry over, and files it does not know, each get
// a comment.
func FromQmail(dir string) ([]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	c := &conv{dir: dir}
	c.run()
	var names []string
	for _, e := range entries {
		if e.IsDir() || converted[e.Name()] {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		if why, ok := notConverted[n]; ok {
			if why != "" {
				c.note("control/%s is not converted: %s.", n, why)
			}
			continue
		}
		if strings.HasSuffix(n, "~") || strings.HasPrefix(n, ".") {
			continue
		}
		c.note("control/%s is not a qmail file this converter knows; check it by hand.", n)
	}
	return c.render(), nil
}

// conv accumulates the converted settings.
type conv struct {
	dir string

	top, queue, delivery, nullclient []string // TOML lines per table
	routes                           []route
	notes                            []string
}

type route struct {
	pattern, via, tls, source string
}

func (c *conv) note(format string, args ...any) {
	c.notes = append(c.notes, fmt.Sprintf(format, args...))
}

func (c *conv) path(name string) string { return filepath.Join(c.dir, name) }

// line reads a one-line control file; ok is false when it is missing or
// empty. Read errors other than a missing file become notes.
func (c *conv) line(name string) (string, bool) {
	s, err := ReadControlLine(c.path(name))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.note("control/%s could not be read: %v", name, err)
		}
		return "", false
	}
	return s, s != ""
}

func (c *conv) lines(name string) ([]string, bool) {
	l, err := ReadControlLines(c.path(name))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.note("control/%s could not be read: %v", name, err)
		}
		return nil, false
	}
	return l, true
}

func (c *conv) number(name string) (int64, bool) {
	s, ok := c.line(name)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		c.note("control/%s: %q is not a number; not converted.", name, s)
		return 0, false
	}
	return v, true
}

func (c *conv) run() {
	me, haveMe := c.line("me")
	if haveMe && validHost(me) {
		c.top = append(c.top, "hostname = "+tomlString(me)+" # control/me")
	} else if haveMe {
		c.note("control/me: %q is not a host name; hostname left to the default (the system's name).", me)
		haveMe = false
	} else {
		c.note("control/me is missing: hostname left to the default (the system's host name).")
	}

	// qmail-inject: a bare user gets @defaulthost (default: me); a host
	// without a dot then gets .defaultdomain (default: me).
	dh, haveDH := c.line("defaulthost")
	src := "control/defaulthost"
	if !haveDH && haveMe {
		dh, haveDH, src = me, true, "control/me"
	}
	if haveDH && !strings.Contains(dh, ".") {
		if dd, ok := c.line("defaultdomain"); ok {
			dh, src = dh+"."+dd, src+" + control/defaultdomain"
		} else if haveMe && me != dh {
			dh, src = dh+"."+me, src+" + control/me"
		}
	}
	if haveDH && validHost(dh) {
		c.top = append(c.top, "default_domain = "+tomlString(dh)+" # "+src)
	}

	if n, ok := c.number("databytes"); ok {
		if n == 0 {
			c.note("control/databytes is 0 (no limit in qmail): qmgate keeps a limit; max_message_bytes defaults to 52428800, raise it if you must.")
		} else {
			c.top = append(c.top, fmt.Sprintf("max_message_bytes = %d # control/databytes", n))
		}
	}

	c.rcpthosts()

	if n, ok := c.number("queuelifetime"); ok {
		c.queue = append(c.queue, "lifetime = "+tomlString(duration(n))+" # control/queuelifetime")
	}
	if n, ok := c.number("concurrencyremote"); ok {
		if n == 0 {
			c.note("control/concurrencyremote is 0 (no remote deliveries): not converted.")
		} else {
			c.delivery = append(c.delivery, fmt.Sprintf("concurrency = %d # control/concurrencyremote: qmail's is one limit for all remote deliveries, qmgate's is per route", n))
		}
	}
	if n, ok := c.number("timeoutremote"); ok && n > 0 {
		c.delivery = append(c.delivery, "timeout = "+tomlString(duration(n))+" # control/timeoutremote")
	}
	if n, ok := c.number("timeoutconnect"); ok && n > 0 {
		c.delivery = append(c.delivery, "connect_timeout = "+tomlString(duration(n))+" # control/timeoutconnect")
	}

	if l, ok := c.lines("qmqpservers"); ok {
		servers, skipped := ParseQMQPServers(l)
		for _, s := range skipped {
			c.note("control/qmqpservers: %q names no server (qmail-qmqpc skips it too).", s)
		}
		if len(servers) > 0 {
			c.nullclient = append(c.nullclient, "qmqp_servers = "+tomlList(servers)+" # control/qmqpservers, in order")
		}
	}

	qmtp := c.routeFile("qmtproutes", "qmtp", 209)
	smtp := c.routeFile("smtproutes", "smtp", 25)
	for _, r := range smtp {
		if slices.ContainsFunc(qmtp, func(q route) bool { return q.pattern == r.pattern || q.pattern == "*" }) {
			c.note("control/smtproutes: the route for %q is shadowed by qmtproutes; qmgate does not fall back from QMTP to SMTP on a route.", r.pattern)
		}
	}
	c.routes = append(qmtp, smtp...)
	if !slices.ContainsFunc(c.routes, func(r route) bool { return r.pattern == "*" }) {
		c.routes = append(c.routes, route{pattern: "*", via: "mx", source: "qmail's default: deliver to the domain's MX"})
	}
}

func (c *conv) rcpthosts() {
	l, ok := c.lines("rcpthosts")
	if !ok {
		c.note("control/rcpthosts is missing: qmail then accepts mail for every domain from anyone (an open relay). qmgate does not; list the domains you accept in rcpthosts.")
		c.top = append(c.top, "rcpthosts = []")
		return
	}
	more, haveMore := c.lines("morercpthosts")
	if !haveMore {
		if _, err := os.Stat(c.path("morercpthosts.cdb")); err == nil {
			c.note("control/morercpthosts.cdb exists but its source control/morercpthosts does not: its domains are not converted.")
		}
	}
	seen := map[string]bool{}
	var hosts []string
	add := func(file string, list []string) {
		for _, h := range list {
			h = strings.TrimSpace(h)
			key := strings.ToLower(h)
			switch {
			case seen[key]:
			case h == "" || h == "*" || h == "." || strings.ContainsAny(h, " \t@") || !utf8.ValidString(h):
				c.note("control/%s: %q is not a domain or .suffix; not converted.", file, h)
			default:
				seen[key] = true
				hosts = append(hosts, h)
			}
		}
	}
	add("rcpthosts", l)
	add("morercpthosts", more)
	var b strings.Builder
	b.WriteString("rcpthosts = [ # control/rcpthosts")
	if len(more) > 0 {
		b.WriteString(" + control/morercpthosts")
	}
	for _, h := range hosts {
		b.WriteString("\n  " + tomlString(h) + ",")
	}
	if len(hosts) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("]")
	c.top = append(c.top, b.String())
}

// routeFile parses smtproutes or qmtproutes ("domain:relay[:port]") into
// routes in qmail-remote's lookup order: exact domains, then .suffix
// entries longest first, then the default (empty domain).
func (c *conv) routeFile(name, scheme string, port int) []route {
	l, ok := c.lines(name)
	if !ok {
		return nil
	}
	var exact, suffix, def []route
	seen := map[string]bool{}
	for _, line := range l {
		dom, rest, found := strings.Cut(line, ":")
		if !found {
			c.note("control/%s: %q has no ':'; not converted.", name, line)
			continue
		}
		dom = strings.TrimSpace(dom)
		if dom != "" && (strings.ContainsAny(dom, " \t@*") || dom == ".") {
			c.note("control/%s: %q: %q is not a domain or .suffix; not converted.", name, line, dom)
			continue
		}
		if extra := strings.Fields(rest); len(extra) > 1 {
			// Some patches put SMTP AUTH credentials here. Half a route
			// (the relay without its login) would only bounce mail.
			c.note("control/%s: the route for %q has text after the relay; not converted (write a [[route]] with username and password_file by hand).", name, dom)
			continue
		}
		rest = strings.TrimSpace(rest)
		r := route{pattern: dom, source: "control/" + name + ": " + line}
		if dom == "" {
			r.pattern = "*"
		}
		key := strings.ToLower(r.pattern)
		if seen[key] {
			// qmail's constmap finds the entry added last.
			c.note("control/%s: %q repeats a domain; qmail uses the last entry, so does this file.", name, dom)
			drop := func(list []route) []route {
				out := list[:0]
				for _, x := range list {
					if strings.ToLower(x.pattern) != key {
						out = append(out, x)
					}
				}
				return out
			}
			exact, suffix, def = drop(exact), drop(suffix), drop(def)
		}
		seen[key] = true
		if rest == "" {
			r.via = "mx"
		} else {
			host, p, err := splitRelay(rest, port)
			if err != nil {
				c.note("control/%s: %q: %v; not converted.", name, line, err)
				continue
			}
			r.via = scheme + "://" + net.JoinHostPort(host, strconv.Itoa(p))
			if p == port {
				r.via = scheme + "://" + bracket(host)
			}
			if scheme == "smtp" {
				// qmail-remote never used TLS; requiring it would stop mail
				// to relays that cannot do it.
				r.tls = "opportunistic"
			}
		}
		switch {
		case dom == "":
			def = append(def, r)
		case dom[0] == '.':
			suffix = append(suffix, r)
		default:
			exact = append(exact, r)
		}
	}
	sort.SliceStable(suffix, func(i, j int) bool { return len(suffix[i].pattern) > len(suffix[j].pattern) })
	return append(append(exact, suffix...), def...)
}

// splitRelay reads "host", "host:port", "[ip]" or "[ip]:port".
func splitRelay(s string, defPort int) (string, int, error) {
	host, portStr := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, fmt.Errorf("unclosed '[' in %q", s)
		}
		host, portStr = s[1:end], s[end+1:]
		if portStr != "" {
			if portStr[0] != ':' {
				return "", 0, fmt.Errorf("junk after ']' in %q", s)
			}
			portStr = portStr[1:]
		}
		if _, err := netip.ParseAddr(host); err != nil {
			return "", 0, fmt.Errorf("%q is not an IP address", host)
		}
	} else if h, p, ok := strings.Cut(s, ":"); ok {
		host, portStr = h, p
	}
	if _, err := netip.ParseAddr(host); err != nil && !validHost(host) {
		return "", 0, fmt.Errorf("%q is not a host name", host)
	}
	if portStr == "" {
		return host, defPort, nil
	}
	port, err := parsePort(portStr)
	return host, port, err
}

// parsePort reads a TCP port number, 1 to 65535.
func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p <= 0 || p > 65535 {
		return 0, fmt.Errorf("%q is not a port", s)
	}
	return p, nil
}

func bracket(host string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]"
	}
	return host
}

// validHost accepts host names and IP addresses as they may appear in me,
// defaulthost and route files.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if h == "" || len(h) > 253 || h[0] == '.' || h[0] == '-' || h[len(h)-1] == '.' {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return true
}

func duration(seconds int64) string {
	return (time.Duration(seconds) * time.Second).String()
}

// tomlString renders s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		case r == utf8.RuneError:
			b.WriteString("\\uFFFD")
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func tomlList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = tomlString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// comment renders text as TOML comment lines of at most about 78 columns.
func comment(b *bytes.Buffer, text string) {
	line := "#"
	for _, w := range strings.Fields(text) {
		if len(line)+1+len(w) > 78 && line != "#" {
			b.WriteString(line + "\n")
			line = "#  "
		}
		line += " " + w
	}
	b.WriteString(line + "\n")
}

// writePreamble writes what opens a converted configuration: the intro as
// comments, the settings that were not carried over, then the top-level
// keys.
func writePreamble(b *bytes.Buffer, notes, top []string, intro ...string) {
	for _, s := range intro {
		comment(b, s)
	}
	if len(notes) > 0 {
		b.WriteString("#\n# Not carried over:\n")
		for _, n := range notes {
			comment(b, "- "+n)
		}
	}
	b.WriteString("\n")
	for _, l := range top {
		b.WriteString(l + "\n")
	}
}

// writeTable writes lines after a blank line and the header ("" for none),
// if there are any.
func writeTable(b *bytes.Buffer, header string, lines []string) {
	if len(lines) == 0 {
		return
	}
	b.WriteString("\n")
	if header != "" {
		b.WriteString(header + "\n")
	}
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
}

func (c *conv) render() []byte {
	var b bytes.Buffer
	writePreamble(&b, c.notes, c.top,
		"qmgate configuration converted from the qmail control directory "+c.dir+" by `qmgate config from-qmail`. Review it, then check it with `qmgate config check -config FILE`.",
		"Listeners are not part of qmail's control files (tcpserver runs qmail's daemons): add [smtp], [qmtp] and [qmqp] listen addresses, relay_clients and allow lists, and queue_dir.")
	writeTable(&b, "[queue]", c.queue)
	writeTable(&b, "[delivery]", c.delivery)
	writeTable(&b, "[nullclient]", c.nullclient)
	for _, r := range c.routes {
		b.WriteString("\n[[route]] # " + mail.OneLine(r.source) + "\n")
		b.WriteString("domains = [" + tomlString(r.pattern) + "]\n")
		b.WriteString("via = " + tomlString(r.via) + "\n")
		if r.tls != "" {
			b.WriteString("tls = " + tomlString(r.tls) + " # qmail-remote sends without TLS\n")
		}
	}
	return b.Bytes()
}
