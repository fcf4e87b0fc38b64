package config

import (
	"fmt"
	"net/url"
	"strings"
)

// CheckHandoffPeer checks a hand-off peer's URL: qmtp://host[:port], or
// qmtps://host:port (QMTPS has no registered port).
func CheckHandoffPeer(p string) error {
	u, err := url.Parse(p)
	if err != nil || (u.Scheme != "qmtp" && u.Scheme != "qmtps") || u.Host == "" || u.Hostname() == "" ||
		strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil || strings.Contains(p, " ") {
		return fmt.Errorf("%q: want qmtp://host[:port] or qmtps://host:port", p)
	}
	if u.Scheme == "qmtps" && u.Port() == "" {
		return fmt.Errorf("%q: qmtps:// needs a port: QMTPS has no registered one", p)
	}
	return nil
}
