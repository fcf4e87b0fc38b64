package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/qmgate/qmgate/mail"
)

// Warnings returns what is legal but almost certainly a mistake: routes that
// can never match because an earlier route takes all their domains (a route
// after domains = ["*"]), and rcpthosts domains that no route delivers, so
// that mail accepted for them is refused or never leaves. Each carries the
// file and line of the key it is about.
func (c *Config) Warnings() Errors {
	var ws Errors
	warn := func(key, format string, args ...any) {
		ws = append(ws, &Error{File: c.Source, Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		if len(r.Domains) == 0 {
			continue
		}
		shadowedBy := -1
		for _, d := range r.Domains {
			j := c.firstRoute(d, i)
			if j < 0 {
				shadowedBy = -1
				break
			}
			if j > shadowedBy {
				shadowedBy = j
			}
		}
		if shadowedBy >= 0 {
			warn(fmt.Sprintf("route[%d].domains", i), "this route can never match: route[%d] (domains %s) comes first and takes all of its domains",
				shadowedBy, quoteList(c.Routes[shadowedBy].Domains))
		}
	}
	for i, h := range c.RcptHosts {
		if c.firstRoute(h, len(c.Routes)) < 0 {
			warn(fmt.Sprintf("rcpthosts[%d]", i), "no route delivers mail for %q: mail to it is refused (add a [[route]] whose domains cover it)", h)
		}
	}
	d := &decoder{lines: c.lines}
	for _, w := range ws {
		w.Line = d.line(w.Key)
	}
	return ws
}

// firstRoute returns the index of the first route before limit that takes
// every address of the pattern p (an exact domain, ".suffix" or "*") from
// every sender, or -1.
func (c *Config) firstRoute(p string, limit int) int {
	for j := 0; j < limit && j < len(c.Routes); j++ {
		// A route with senders takes only some mail: it shadows nothing.
		if len(c.Routes[j].Senders) == 0 && covers(c.Routes[j].Domains, p) {
			return j
		}
	}
	return -1
}

// covers reports whether the route patterns take every domain p stands for.
func covers(patterns []string, p string) bool {
	for _, q := range patterns {
		switch {
		case q == "*":
			return true
		case p == "*":
			continue
		case strings.HasPrefix(p, "."):
			// All subdomains of p: only a suffix pattern that p ends with.
			if strings.HasPrefix(q, ".") && strings.HasSuffix(strings.ToLower(p), strings.ToLower(q)) {
				return true
			}
		default:
			if mail.MatchDomain(q, p) {
				return true
			}
		}
	}
	return false
}

func quoteList(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// CheckFiles reports the files the configuration names (certificates, keys,
// password files, CAs) that cannot be read, each with the setting that names
// it. Load does not check them: the daemon reads them as root before it
// drops privileges, so only the daemon's own start-up is the final word.
func (c *Config) CheckFiles() Errors {
	var errs Errors
	check := func(key, path string) {
		if path == "" {
			return
		}
		f, err := os.Open(path)
		if err == nil {
			f.Close()
			return
		}
		why := "cannot be read"
		switch {
		case os.IsNotExist(err):
			why = "does not exist"
		case os.IsPermission(err):
			why = "cannot be read (permission denied)"
		}
		errs = append(errs, &Error{File: c.Source, Key: key, Msg: fmt.Sprintf("%s %s", path, why)})
	}
	check("qmtp.tls_cert", c.QMTP.TLSCert)
	check("qmtp.tls_key", c.QMTP.TLSKey)
	check("qmtp.client_ca", c.QMTP.ClientCA)
	check("smtp.tls_cert", c.SMTP.TLSCert)
	check("smtp.tls_key", c.SMTP.TLSKey)
	check("smtp.auth_file", c.SMTP.AuthFile)
	for i := range c.Routes {
		check(fmt.Sprintf("route[%d].password_file", i), c.Routes[i].PasswordFile)
		check(fmt.Sprintf("route[%d].ca_file", i), c.Routes[i].CAFile)
	}
	d := &decoder{lines: c.lines}
	for _, e := range errs {
		e.Line = d.line(e.Key)
	}
	return errs
}

// IsSet reports whether the file sets key ("queue_dir", "qmtp.listen",
// "route[0].via"), as opposed to the value being a default.
func (c *Config) IsSet(key string) bool {
	_, ok := c.lines[key]
	return ok
}
