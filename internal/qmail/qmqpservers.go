package qmail

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// QMQPPort is QMQP's port (qmail CHANGES 19980420), the port qmail-qmqpc
// always uses.
const QMQPPort = 628

// ParseQMQPServers turns the entries of control/qmqpservers (as returned by
// ParseControlLines) into "host:port" server names, in file order, the order
// qmail-qmqpc tries them in. skipped holds the lines that name no server:
// qmail-qmqpc skips them silently, callers may warn.
//
// A line is read the way qmail-qmqpc reads it, with extensions that no
// qmail file uses, so every file qmail accepts means the same here:
//
//	192.0.2.1                  qmail: port 628
//	192.0.2.1 hub one          qmail: text after the address is ignored
//	192.0.2.1:2628             extension: a port
//	hub.example.net[:port]     extension: a host name
//	2001:db8::1                extension: IPv6, port 628
//	[2001:db8::1]:2628         extension: IPv6 with a port
//	fe80::1%eth0               extension: link-local with a zone (s/qmail)
//
// For addresses, only the first word of a line counts, as in qmail; a host
// name (which qmail would skip) must be the whole line. A dotted quad followed directly by
// other text ("192.0.2.1,x") is still that address, as in qmail; a quad
// followed by ':' and a number is the port extension, which qmail would have
// read as the address on port 628.
func ParseQMQPServers(lines []string) (servers, skipped []string) {
	for _, line := range lines {
		if s, ok := parseQMQPServer(line); ok {
			servers = append(servers, s)
		} else {
			skipped = append(skipped, line)
		}
	}
	return servers, skipped
}

func parseQMQPServer(line string) (string, bool) {
	word := strings.TrimSpace(line)
	alone := true // the word is the whole line
	if i := strings.IndexAny(word, " \t"); i >= 0 {
		word, alone = word[:i], false
	}
	if word == "" {
		return "", false
	}
	def := strconv.Itoa(QMQPPort)
	bare := word
	if len(word) > 2 && word[0] == '[' && word[len(word)-1] == ']' {
		bare = word[1 : len(word)-1]
	}
	if a, err := netip.ParseAddr(bare); err == nil {
		return joinAddr(a, def)
	}
	if host, port, err := net.SplitHostPort(word); err == nil && validPort(port) {
		if a, err := netip.ParseAddr(host); err == nil {
			return joinAddr(a, port)
		}
		if alone && validHostName(host) {
			return net.JoinHostPort(host, port), true
		}
		return "", false
	}
	// qmail's ip_scan: a leading dotted quad, whatever follows.
	end := 0
	for end < len(word) && (word[end] == '.' || word[end] >= '0' && word[end] <= '9') {
		end++
	}
	if parts := strings.SplitN(word[:end], ".", 5); len(parts) >= 4 {
		if a, err := netip.ParseAddr(strings.Join(parts[:4], ".")); err == nil && a.Is4() {
			return net.JoinHostPort(a.String(), def), true
		}
	}
	if alone && end < len(word) && validHostName(word) {
		return net.JoinHostPort(word, def), true
	}
	return "", false
}

// joinAddr makes host:port of an address. netip accepts any text as an
// IPv6 zone ("::%[" parses), and a zone holding a bracket gives a name that
// no dialer can split again: such a line names no server.
func joinAddr(a netip.Addr, port string) (string, bool) {
	if strings.ContainsAny(a.Zone(), "[]") {
		return "", false
	}
	return net.JoinHostPort(a.String(), port), true
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n <= 65535 && p[0] != '+'
}

// validHostName accepts DNS names: letters, digits, hyphens and dots, with
// at least one letter (an all-digit name is a broken address, not a host).
func validHostName(h string) bool {
	if h == "" || len(h) > 253 || h[0] == '.' || h[0] == '-' {
		return false
	}
	letter := false
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			letter = true
		case c >= '0' && c <= '9', c == '-', c == '.':
		default:
			return false
		}
	}
	return letter
}
