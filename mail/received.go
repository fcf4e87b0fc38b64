package mail

import (
	"cmp"
	"crypto/tls"
	"net"
	"net/netip"
	"time"
)

// ConnInfo is what a protocol server knows about the connection a message came
// in on. Policy uses it (client address, TLS, authenticated user) and the
// Received line is built from it.
type ConnInfo struct {
	// Proto is the protocol word of the Received line: "QMTP", "QMQP", "SMTP",
	// "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA" (RFC 3848), "QMTPS".
	Proto      string
	RemoteAddr net.Addr
	LocalAddr  net.Addr
	// RemoteHost is the client's name when known (TCPREMOTEHOST, or a
	// verified reverse lookup); empty means unknown.
	RemoteHost string
	// RemoteInfo is the ident/user information (TCPREMOTEINFO); usually empty.
	RemoteInfo string
	// LocalHost is the name this server calls itself in the "by" clause
	// (TCPLOCALHOST or the configured hostname).
	LocalHost string
	// Helo is the SMTP HELO/EHLO argument, empty for QMTP and QMQP.
	Helo string
	// AuthUser is the SMTP AUTH identity, empty when not authenticated.
	AuthUser string
	// TLS is the TLS state when the connection is encrypted, otherwise nil.
	TLS *tls.ConnectionState
	// RelayClient is set by policy for clients allowed to relay anywhere.
	RelayClient bool
}

// RemoteIP returns the client's IP address, or the zero Addr for unix sockets
// and unknown peers.
func (c *ConnInfo) RemoteIP() netip.Addr { return addrIP(c.RemoteAddr) }

// LocalIP returns the local IP address of the connection, if any.
func (c *ConnInfo) LocalIP() netip.Addr { return addrIP(c.LocalAddr) }

// Client names the client for logs, in one form for every protocol: its IP
// address; for a unix-socket client whose address says who it is (the
// daemon's peer credentials: "uid 1000 (alice)"), that; for other
// unix-socket clients "local user (unknown uid)"; "unknown" when nothing
// is known.
func (c *ConnInfo) Client() string {
	if c == nil {
		return "unknown"
	}
	if ip := c.RemoteIP(); ip.IsValid() {
		return ip.String()
	}
	switch c.RemoteAddr.(type) {
	case *net.UnixAddr:
		return "local user (unknown uid)"
	case nil:
		if c.LocalAddr != nil && c.LocalAddr.Network() == "unix" {
			return "local user (unknown uid)"
		}
		return "unknown"
	}
	if s := c.RemoteAddr.String(); s != "" && s != "@" {
		return s
	}
	return "unknown"
}

func addrIP(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	case nil:
		return netip.Addr{}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// Received returns qmail's Received line for this connection, with its
// trailing LF (qmail's received.c, as qmail-qmtpd and qmail-qmqpd write it):
//
//	Received: from HOST (HELO helo) (info@IP)
//	  by LOCAL with PROTO; 26 Sep 1995 04:46:54 -0000
//
// The HELO part appears only when Helo is set and differs from the host
// ignoring ASCII case, as qmail-smtpd compares them; the info@ part only when
// RemoteInfo is set. Unknown values are "unknown", and
// every byte outside qmail's safe set becomes '?', so no header injection is
// possible whatever the client sent.
func (c *ConnInfo) Received(now time.Time) string {
	b := make([]byte, 0, 160)
	b = append(b, "Received: from "...)
	host := cmp.Or(c.RemoteHost, "unknown")
	b = appendSafe(b, host)
	if c.Helo != "" && !equalFoldASCII(c.Helo, host) {
		b = append(b, " (HELO "...)
		b = appendSafe(b, c.Helo)
		b = append(b, ')')
	}
	b = append(b, " ("...)
	if c.RemoteInfo != "" {
		b = appendSafe(b, c.RemoteInfo)
		b = append(b, '@')
	}
	ip := "unknown"
	if a := c.RemoteIP(); a.IsValid() {
		ip = a.String()
	}
	b = appendSafe(b, ip)
	b = append(b, ")\n  by "...)
	local := c.LocalHost
	if local == "" {
		if a := c.LocalIP(); a.IsValid() {
			local = a.String()
		} else {
			local = "unknown"
		}
	}
	b = appendSafe(b, local)
	b = append(b, " with "...)
	b = appendSafe(b, cmp.Or(c.Proto, "unknown"))
	b = append(b, "; "...)
	b = AppendDate822(b, now)
	b = append(b, '\n')
	return string(b)
}

// MaxReceivedField bounds each client-supplied part of the Received line
// (host, HELO, ident info); longer values are cut, so a hostile HELO cannot
// make the header line unbounded.
const MaxReceivedField = 256

// appendSafe appends s with every byte outside [A-Za-z0-9.@%+/=:-[]] replaced
// by '?', as qmail's received.c (with notqmail's '[' and ']') does.
func appendSafe(b []byte, s string) []byte {
	if len(s) > MaxReceivedField {
		s = s[:MaxReceivedField]
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '@', c == '%', c == '+', c == '/', c == '=', c == ':', c == '-', c == '[', c == ']':
		default:
			c = '?'
		}
		b = append(b, c)
	}
	return b
}

// AppendDate822 appends qmail's date822fmt form of t: "26 Sep 1995 04:46:54
// -0000" — no weekday, a one- or two-digit day, always UTC written as -0000.
func AppendDate822(b []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(b, "2 Jan 2006 15:04:05 -0000")
}
