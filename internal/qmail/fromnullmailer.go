package qmail

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/qmgate/qmgate/mail"
)

// nullmailerKnown names the files of a nullmailer configuration directory
// FromNullmailer reads; the rest get a comment.
var nullmailerKnown = map[string]bool{
	"me": true, "defaulthost": true, "defaultdomain": true, "remotes": true,
	"adminaddr": true, "allmailfrom": true, "idhost": true, "helohost": true,
	"sendtimeout": true, "queuelifetime": true, "pausetime": true, "maxpause": true,
}

// FromNullmailer reads a nullmailer configuration directory (/etc/nullmailer)
// and returns an equivalent qmgate configuration for an app server as TOML
// text: qmgate sendmail in direct mode, handing mail over QMQP to the
// remotes that speak it. Every setting with no equivalent, or with a
// different meaning, gets a comment. The text loads with internal/config as
// it is; it is meant to be read before use.
//
// What is converted (nullmailer's defaults where a file is missing):
//
//	me                       hostname
//	defaulthost, me,
//	  defaultdomain          default_domain: defaulthost (else me), plus
//	                         "."+defaultdomain when it has no dot
//	remotes (qmqp)           [nullclient] qmqp_servers, in order, --port kept
//	sendtimeout              [nullclient] timeout
//
// SMTP remotes cannot be reached by qmgate's sendmail, which speaks QMQP
// only; the result says so and carries them, commented out, as the routes
// of spool mode (a local qmgate serve relaying to them). adminaddr,
// allmailfrom, idhost and helohost have no equivalent; queuelifetime,
// pausetime and maxpause matter in spool mode only.
func FromNullmailer(dir string) ([]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	c := &nmConv{conv: conv{dir: dir}}
	c.run()
	var names []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || nullmailerKnown[n] || strings.HasSuffix(n, "~") || strings.HasPrefix(n, ".") {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c.note("%s is not a nullmailer file this converter knows; check it by hand.", n)
	}
	return c.render(), nil
}

// nmConv is a conversion from nullmailer; it shares conv's readers.
type nmConv struct {
	conv
	queue []string // spool mode's [queue] lines, commented out later
	spool []string // commented-out spool-mode lines
}

// defaultQMQPPort is QMQP's port, nullmailer's default for qmqp remotes.
const defaultQMQPPort = 628

// nmRemote is one line of nullmailer's remotes file.
type nmRemote struct {
	host, proto string
	port        int
	opts        map[string]string // without the leading "--"
	line        string
}

func (c *nmConv) run() {
	me, haveMe := c.line("me")
	if haveMe && validHost(me) {
		c.top = append(c.top, "hostname = "+tomlString(me)+" # me")
	} else if haveMe {
		c.note("me: %q is not a host name; hostname left to the default (the system's host name).", me)
		haveMe = false
	}

	dh, haveDH := c.line("defaulthost")
	src := "defaulthost"
	if !haveDH && haveMe {
		dh, haveDH, src = me, true, "me"
	}
	if haveDH && !strings.Contains(dh, ".") && dh != "localhost" {
		if dd, ok := c.line("defaultdomain"); ok {
			dh, src = dh+"."+dd, src+" + defaultdomain"
		}
	}
	if haveDH && validHost(dh) {
		c.top = append(c.top, "default_domain = "+tomlString(dh)+" # "+src)
	}

	if s, ok := c.line("adminaddr"); ok {
		c.note("adminaddr (%s) is not converted: qmgate's sendmail does not redirect mail for local users. Deliver root@ and the other local names at the hub instead (a [[route]] or an alias there).", s)
	}
	if s, ok := c.line("allmailfrom"); ok {
		c.note("allmailfrom (%s) is not converted: qmgate's sendmail keeps each message's sender (sendmail -f sets it per message).", s)
	}
	if _, ok := c.line("idhost"); ok {
		c.note("idhost is not converted: Message-IDs use hostname.")
	}
	if _, ok := c.line("helohost"); ok {
		c.note("helohost is not converted: QMQP has no greeting; a local qmgate serve greets with hostname.")
	}
	if n, ok := c.number("sendtimeout"); ok && n > 0 {
		c.nullclient = append(c.nullclient, "timeout = "+tomlString(duration(n))+" # sendtimeout")
	}
	for _, f := range []struct{ name, key string }{
		{"queuelifetime", "lifetime"}, {"pausetime", "retry_min"}, {"maxpause", "retry_max"},
	} {
		if n, ok := c.number(f.name); ok && n > 0 {
			c.queue = append(c.queue, f.key+" = "+tomlString(duration(n))+" # "+f.name)
		}
	}

	lines, ok := c.lines("remotes")
	if !ok {
		c.note("remotes is missing: nullmailer then has nowhere to send mail. Name your hubs in [nullclient] qmqp_servers.")
		return
	}
	var qmqp []string
	var smtp []nmRemote
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		r, err := parseRemote(l)
		l = redactRemote(l)
		if err != nil {
			c.note("remotes: %q: %v; not converted.", mail.OneLine(l), err)
			continue
		}
		switch r.proto {
		case "qmqp":
			for k := range r.opts {
				if k != "port" {
					c.note("remotes: %q: option --%s has no meaning for QMQP in qmgate; ignored.", mail.OneLine(l), k)
				}
			}
			qmqp = append(qmqp, net.JoinHostPort(r.host, strconv.Itoa(r.port)))
		case "smtp":
			smtp = append(smtp, r)
		}
	}
	if len(qmqp) > 0 {
		c.nullclient = append(c.nullclient, "qmqp_servers = "+tomlList(qmqp)+" # remotes (qmqp), tried in order")
	}
	if len(smtp) > 0 {
		c.note("remotes: qmgate's sendmail speaks QMQP only, so the SMTP remotes (%s) are not used as they are. Point [nullclient] qmqp_servers at a qmgate hub's QMQP listener, or use spool mode: the commented lines at the end of this file run a local qmgate serve that relays to them over SMTP.", smtpHosts(smtp))
		c.spoolRoutes(smtp)
	}
	if len(qmqp) == 0 && len(smtp) == 0 {
		c.note("remotes names no server: name your hubs in [nullclient] qmqp_servers.")
	}
	if len(smtp) == 0 && len(c.queue) > 0 {
		c.note("queuelifetime, pausetime and maxpause matter only in spool mode (a local qmgate serve): there they are [queue] %s.", strings.Join(c.queue, ", "))
	}
}

func smtpHosts(rs []nmRemote) string {
	var hs []string
	for _, r := range rs {
		hs = append(hs, net.JoinHostPort(r.host, strconv.Itoa(r.port)))
	}
	return strings.Join(hs, ", ")
}

// spoolRoutes writes the spool-mode configuration for SMTP remotes as
// comments. A qmgate route has one next hop, so the first remote becomes
// the route and the others get a note.
func (c *nmConv) spoolRoutes(rs []nmRemote) {
	r := rs[0]
	s := []string{
		"# Spool mode, nullmailer's way: sendmail hands mail to a local daemon",
		"# (systemctl enable --now qmgate), which relays it with retries. Add",
		"#   spool_dir = \"/var/spool/qmgate\"",
		"# to [nullclient] above, then remove the \"# \" from these lines:",
		"# [qmqp]",
		"# listen = [\"unix:/run/qmgate/qmqp.sock\"]",
	}
	if len(c.queue) > 0 {
		s = append(s, "# [queue]")
		for _, l := range c.queue {
			s = append(s, "# "+l)
		}
	}
	scheme, tls := "smtp", "opportunistic"
	switch {
	case r.opts["ssl"] != "" || r.opts["smtps"] != "":
		scheme, tls = "smtps", ""
	case r.opts["starttls"] != "":
		tls = ""
	}
	s = append(s, "# [[route]] # remotes: "+mail.OneLine(r.line),
		"# domains = [\"*\"]",
		"# via = "+tomlString(scheme+"://"+net.JoinHostPort(r.host, strconv.Itoa(r.port))))
	if tls != "" {
		s = append(s, "# tls = \"opportunistic\" # nullmailer without --starttls or --ssl sends in the clear")
	}
	if u := r.opts["user"]; u != "" {
		s = append(s, "# username = "+tomlString(u))
	}
	if r.opts["pass"] != "" {
		s = append(s, "# password_file = \"/etc/qmgate/smarthost.pass\" # holds the --pass of remotes; keep it out of this file")
	}
	if ca := r.opts["x509cafile"]; ca != "" {
		s = append(s, "# ca_file = "+tomlString(ca))
	}
	if r.opts["insecure"] != "" {
		c.note("remotes: --insecure (no certificate check) has no equivalent; qmgate checks the smarthost's certificate (set ca_file for a private CA, or tls = \"opportunistic\").")
	}
	if len(rs) > 1 {
		c.note("remotes: a qmgate route has one smarthost; the other SMTP remotes (%s) are not carried over.", smtpHosts(rs[1:]))
	}
	c.spool = s
}

// redactRemote hides the password of a remotes line, which the result
// quotes in comments.
func redactRemote(line string) string {
	f := strings.Fields(line)
	for i, o := range f {
		if k, _, ok := strings.Cut(strings.TrimLeft(o, "-"), "="); ok && strings.EqualFold(k, "pass") {
			f[i] = o[:strings.IndexByte(o, '=')+1] + "(hidden)"
		}
	}
	return strings.Join(f, " ")
}

// parseRemote reads "host [protocol] [--option[=value]...]". The protocol is
// smtp (the default) or qmqp; options may be written without "--", as
// nullmailer before 1.10 took them.
func parseRemote(line string) (nmRemote, error) {
	f := strings.Fields(line)
	r := nmRemote{host: f[0], proto: "smtp", opts: map[string]string{}, line: redactRemote(line)}
	rest := f[1:]
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") && !strings.Contains(rest[0], "=") {
		r.proto = strings.ToLower(rest[0])
		rest = rest[1:]
	}
	if r.proto != "smtp" && r.proto != "qmqp" {
		return r, fmt.Errorf("unknown protocol %q (want smtp or qmqp)", r.proto)
	}
	if !validHost(r.host) {
		return r, fmt.Errorf("%q is not a host name", r.host)
	}
	r.port = defaultQMQPPort
	if r.proto == "smtp" {
		r.port = 25
	}
	for _, o := range rest {
		k, v, hasV := strings.Cut(strings.TrimLeft(o, "-"), "=")
		if !hasV {
			v = "yes"
		}
		r.opts[strings.ToLower(k)] = v
	}
	if p, ok := r.opts["port"]; ok {
		var err error
		if r.port, err = parsePort(p); err != nil {
			return r, err
		}
	}
	if r.opts["ssl"] != "" && r.opts["port"] == "" && r.proto == "smtp" {
		r.port = 465
	}
	return r, nil
}

func (c *nmConv) render() []byte {
	var b bytes.Buffer
	writePreamble(&b, c.notes, c.top,
		"qmgate configuration for an app server, converted from the nullmailer directory "+c.dir+" by `qmgate config from-nullmailer`. Review it, then check it with `qmgate config check -config FILE`.",
		"qmgate sendmail hands each message straight to the first QMQP server that takes a connection (direct mode) and exits 75 when none does; no daemon runs.")
	writeTable(&b, "[nullclient]", c.nullclient)
	writeTable(&b, "", c.spool)
	return b.Bytes()
}
