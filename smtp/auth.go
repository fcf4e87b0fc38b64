package smtp

import (
	"bytes"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/qmgate/qmgate/internal/serve"
)

// Bounds on AUTH credentials, checked before the Authenticator sees them.
const (
	maxAuthUsername = 256
	maxAuthPassword = 1024
)

// plainServer is the SASL PLAIN mechanism (RFC 4616): one message
// "authzid NUL authcid NUL passwd". An authorization identity other than the
// user's own is refused: the server has no notion of acting for another
// user.
type plainServer struct {
	s     *session
	asked bool
}

func (p *plainServer) Next(resp []byte) ([]byte, bool, error) {
	if resp == nil && !p.asked {
		// No initial response: ask with an empty challenge ("334 ").
		p.asked = true
		return []byte{}, false, nil
	}
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 {
		return nil, false, replyError(statusAuthSyntax)
	}
	authz, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	if authz != "" && authz != user {
		return nil, false, p.s.authFailed()
	}
	return p.s.checkPassword(user, pass)
}

// loginServer is the LOGIN mechanism, which no RFC describes but every
// mail client has used (draft-murchison-sasl-login): the server asks
// "Username:" and "Password:" (base64 "VXNlcm5hbWU6", "UGFzc3dvcmQ6"). An
// initial response, "AUTH LOGIN <base64 user>", is taken as the user name.
type loginServer struct {
	s     *session
	state int // 0 start, 1 asked for the user name, 2 asked for the password
	user  string
}

var (
	challengeUsername = []byte("Username:")
	challengePassword = []byte("Password:")
)

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch {
	case l.state == 0 && resp == nil:
		l.state = 1
		return challengeUsername, false, nil
	case l.state < 2:
		l.user, l.state = string(resp), 2
		return challengePassword, false, nil
	}
	return l.s.checkPassword(l.user, string(resp))
}

// checkPassword asks the Authenticator and finishes the exchange.
func (s *session) checkPassword(user, pass string) ([]byte, bool, error) {
	if user == "" || len(user) > maxAuthUsername || len(pass) > maxAuthPassword ||
		!utf8.ValidString(user) || strings.IndexByte(user, 0) >= 0 {
		return nil, false, s.authFailed()
	}
	srv, g := s.srv(), &s.srv().auth
	g.init(srv)
	now := time.Now()
	addr := srv.authAddr(s.info.RemoteIP())
	if g.blocked(addr, serve.Pick(srv.MaxAuthFailuresPerIP, DefaultMaxAuthFailuresPerIP), now) {
		srv.logger().Warn("smtp authentication refused unchecked", "client", addrString(s.info.RemoteAddr), "reason", "too many failures from this address")
		s.sc.closeAfterReply()
		return nil, false, replyError(statusAuthAddrBlocked)
	}
	k := g.credKey(user, pass)
	if g.knownBad(k, now) {
		return nil, false, s.authFailed()
	}
	if !g.acquire(s.sc.ctx) {
		return nil, false, replyError(statusAuthTemp)
	}
	ok, err := srv.Auth.Authenticate(s.sc.ctx, user, pass)
	g.release()
	if err != nil {
		srv.logger().Warn("smtp authentication unavailable", "client", addrString(s.info.RemoteAddr), "err", err)
		return nil, false, replyError(statusAuthTemp)
	}
	if !ok {
		g.failed(addr, &k, s.authWindow(), time.Now())
		return nil, false, s.authFailedCounted()
	}
	s.info.AuthUser = user
	s.srv().logger().Info("smtp authenticated", "client", addrString(s.info.RemoteAddr), "user", user)
	return nil, true, nil
}

// authFailed counts a failed attempt, pauses, and returns the reply: 535
// 5.7.8, or at the connection's last allowed failure 421 4.7.0 and the end of
// the session. The user name is not logged: people type passwords into it.
func (s *session) authFailed() error {
	srv := s.srv()
	srv.auth.init(srv)
	srv.auth.failed(srv.authAddr(s.info.RemoteIP()), nil, s.authWindow(), time.Now())
	return s.authFailedCounted()
}

func (s *session) authWindow() time.Duration {
	return serve.Pick(s.srv().AuthFailureWindow, DefaultAuthFailureWindow)
}

// authFailedCounted is authFailed for a failure already recorded with the
// guard.
func (s *session) authFailedCounted() error {
	srv := s.srv()
	sc := s.sc
	sc.authFailures++
	srv.logger().Warn("smtp authentication failed", "client", addrString(s.info.RemoteAddr), "failures", sc.authFailures)
	if d := serve.Pick(srv.AuthFailureDelay, DefaultAuthFailureDelay); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-sc.ctx.Done():
			t.Stop()
		}
	}
	if max := serve.Pick(srv.MaxAuthFailures, DefaultMaxAuthFailures); max > 0 && sc.authFailures >= max {
		sc.closeAfterReply()
		return replyError(statusAuthTooMany)
	}
	return replyError(statusAuthFailed)
}
