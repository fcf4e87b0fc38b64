package qmail

import (
	"net"
	"net/netip"
	"strconv"

	"github.com/qmgate/qmgate/mail"
)

// Env is what a qmail daemon learns from its environment under tcpserver
// (or inetd with tcp-environ-style wrappers): who is connected, and the
// per-connection policy tcprules set.
type Env struct {
	// Conn describes the connection from TCPREMOTEIP, TCPREMOTEPORT,
	// TCPREMOTEHOST, TCPREMOTEINFO, TCPLOCALIP, TCPLOCALPORT and
	// TCPLOCALHOST. Missing values stay empty; the Received line shows them
	// as "unknown", as qmail does.
	Conn mail.ConnInfo
	// RelayClient is $RELAYCLIENT; RelaySet tells an empty value (the
	// usual one: relaying allowed, nothing appended) from none.
	RelayClient string
	RelaySet    bool
	// DataBytes is $DATABYTES when set and a number (0: no limit).
	DataBytes    int64
	DataBytesSet bool
}

// ReadEnv reads the environment through lookup (os.LookupEnv). proto is the
// Received line's protocol word ("QMTP", "QMQP").
func ReadEnv(proto string, lookup func(string) (string, bool)) Env {
	get := func(k string) string { v, _ := lookup(k); return v }
	e := Env{Conn: mail.ConnInfo{
		Proto:      proto,
		RemoteHost: get("TCPREMOTEHOST"),
		RemoteInfo: get("TCPREMOTEINFO"),
		LocalHost:  get("TCPLOCALHOST"),
	}}
	if a := tcpAddr(get("TCPREMOTEIP"), get("TCPREMOTEPORT")); a != nil {
		e.Conn.RemoteAddr = a
	}
	if a := tcpAddr(get("TCPLOCALIP"), get("TCPLOCALPORT")); a != nil {
		e.Conn.LocalAddr = a
	}
	e.RelayClient, e.RelaySet = lookup("RELAYCLIENT")
	e.Conn.RelayClient = e.RelaySet
	if v, ok := lookup("DATABYTES"); ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			e.DataBytes, e.DataBytesSet = n, true
		}
	}
	return e
}

func tcpAddr(ip, port string) net.Addr {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return nil
	}
	p, _ := strconv.Atoi(port)
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(a.Unmap(), uint16(p)))
}
