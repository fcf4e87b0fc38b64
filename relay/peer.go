package relay

import (
	"errors"
	"net"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/mail"
)

// Peer is the local user at the other end of the QMQP unix-domain socket,
// as the kernel reports it (SO_PEERCRED). It stands in for the connection's
// remote address (mail.ConnInfo.RemoteAddr), so the Received line, the
// acceptance log line and the policy can name who submitted.
type Peer struct {
	UID, GID, PID int
	// User is the name of UID, "" when it has none.
	User string
}

// Network implements net.Addr.
func (p *Peer) Network() string { return "unix" }

// String names the user for logs: "uid 1000 (alice)".
func (p *Peer) String() string {
	s := "uid " + strconv.Itoa(p.UID)
	if p.User != "" {
		s += " (" + p.User + ")"
	}
	return s
}

// traceInfo is what the Received line carries for the peer, in the place of
// an ident answer: "uid=1000/alice@unknown".
func (p *Peer) traceInfo() string {
	s := "uid=" + strconv.Itoa(p.UID)
	if p.User != "" {
		s += "/" + p.User
	}
	return s
}

// peerListener hands out unix-domain connections whose RemoteAddr is the
// Peer that opened them. A connection whose credentials cannot be read is
// closed: without them the policy cannot be applied.
type peerListener struct{ net.Listener }

func (l peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			return c, nil
		}
		p, err := peerCredentials(uc)
		if errors.Is(err, errors.ErrUnsupported) {
			return c, nil // the handler refuses it if a UnixPolicy is set
		}
		if err != nil {
			c.Close()
			continue
		}
		if u, err := user.LookupId(strconv.Itoa(p.UID)); err == nil {
			p.User = u.Username
		}
		return &peerConn{UnixConn: uc, peer: p}, nil
	}
}

// peerConn is a unix connection that names its peer.
type peerConn struct {
	*net.UnixConn
	peer *Peer
}

func (c *peerConn) RemoteAddr() net.Addr { return c.peer }

// UnixPolicy governs the local users of the QMQP unix-domain socket, which
// otherwise anyone who can open the socket file may use with any envelope:
// who may submit at all, and which senders each may use (the idea of
// Postfix's local_login_sender_maps).
type UnixPolicy struct {
	// Users and Groups may submit; both empty: everyone.
	Users  []string
	Groups []string
	// Senders maps a user name, or "*" for every user not named, to the
	// sender patterns that user may use: "addr@domain" (ASCII case
	// ignored), "@domain", "<>" for the null sender, "*" for any. A user
	// matched by no key may use any sender.
	Senders map[string][]string
}

var (
	statusLocalUserRefused = mail.Perm("5.7.1", "sorry, this user may not submit mail here")
	statusUnknownLocalUser = mail.Temp("4.7.1", "sorry, I cannot tell who you are")
)

// admit refuses a local user of the unix socket whom the policy does not
// name, and anyone on a unix socket whose credentials are unknown when a
// policy is set. A nil UnixPolicy admits everyone.
func (u *UnixPolicy) admit(c *mail.ConnInfo) error {
	if u == nil {
		return nil
	}
	peer, ok := c.RemoteAddr.(*Peer)
	switch {
	case ok && !u.Allowed(peer):
		return statusLocalUserRefused
	case !ok && c.LocalAddr != nil && c.LocalAddr.Network() == "unix":
		return statusUnknownLocalUser
	}
	return nil
}

// newUnixPolicy builds the policy from [qmqp] unix_allow and unix_senders;
// nil when neither is set.
func newUnixPolicy(c *config.QMQP) *UnixPolicy {
	if len(c.UnixAllow) == 0 && len(c.UnixSenders) == 0 {
		return nil
	}
	u := &UnixPolicy{Senders: c.UnixSenders}
	for _, n := range c.UnixAllow {
		if g, ok := strings.CutPrefix(n, "@"); ok {
			u.Groups = append(u.Groups, g)
		} else {
			u.Users = append(u.Users, n)
		}
	}
	return u
}

// Allowed reports whether the peer may submit: its user is named, or its
// primary or a supplementary group is.
func (u *UnixPolicy) Allowed(p *Peer) bool {
	if len(u.Users) == 0 && len(u.Groups) == 0 {
		return true
	}
	if slices.Contains(u.Users, p.User) || slices.Contains(u.Users, strconv.Itoa(p.UID)) {
		return true
	}
	if len(u.Groups) == 0 {
		return false
	}
	gids := []string{strconv.Itoa(p.GID)}
	if acct, err := user.LookupId(strconv.Itoa(p.UID)); err == nil {
		if more, err := acct.GroupIds(); err == nil {
			gids = append(gids, more...)
		}
	}
	for _, gid := range gids {
		if slices.Contains(u.Groups, gid) {
			return true
		}
		if g, err := user.LookupGroupId(gid); err == nil && slices.Contains(u.Groups, g.Name) {
			return true
		}
	}
	return false
}

// SenderAllowed reports whether the peer may use from as envelope sender.
func (u *UnixPolicy) SenderAllowed(p *Peer, from string) bool {
	return SenderMap(u.Senders).Allows(p.User, from)
}

// SenderMap maps a user (a local user of the QMQP socket, an authenticated
// SMTP user) or "*" for everyone not named to the envelope senders that
// user may use: "addr@domain", "@domain", "<>" (the null sender) or "*". A
// user not named, with no "*" entry, may use any sender (Postfix's
// local_login_sender_maps and smtpd_sender_login_maps, in one shape).
type SenderMap map[string][]string

// Allows reports whether user may use from as envelope sender.
func (m SenderMap) Allows(user, from string) bool {
	pats, ok := m[user]
	if !ok || user == "" {
		pats, ok = m["*"]
	}
	if !ok {
		return true
	}
	for _, pat := range pats {
		switch {
		case pat == "*":
			return true
		case pat == "<>":
			if from == "" {
				return true
			}
		case strings.HasPrefix(pat, "@"):
			if strings.IndexByte(from, '@') > 0 && mail.EqualFoldASCII(mail.Domain(from), pat[1:]) {
				return true
			}
		case mail.EqualFoldASCII(pat, from):
			return true
		}
	}
	return false
}
