package dotqmail

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"strings"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// SRS rewrites the sender of forwarded mail with the Sender Rewriting
// Scheme, so that the next hop's SPF check sees the forwarder's domain, and
// reverses the rewritten addresses when bounces come back. It follows the
// conventions of libsrs2 and of Postfix's srsd helpers:
//
//	SRS0=HHHH=TT=orig.domain=orig-local@forwarder.domain
//	SRS1=HHHH=first.forwarder==HHHH=TT=orig.domain=orig-local@forwarder.domain
//
// HHHH is the start of the base64 HMAC-SHA1, keyed with the secret, of the
// other fields in lower case; TT is the day of issue, modulo 1024, in two
// base32 letters. An address already in SRS0 form is wrapped as SRS1
// pointing at the forwarder that made it, so the address does not grow at
// every hop; an SRS1 address is re-signed with the same first forwarder.
type SRS struct {
	// Secrets are the keys: the first signs, all verify, so a secret can
	// be rotated by putting the new one first (ReadSecrets reads them).
	Secrets [][]byte
	// Domain is the forwarder's domain, used after the '@' of rewritten
	// addresses. Senders in this domain are not rewritten.
	Domain string
	// MaxAge is how long a rewritten address can be reversed;
	// DefaultSRSMaxAge when zero or less. It is counted in whole days.
	MaxAge time.Duration
	// HashLength is the number of hash characters written and required;
	// DefaultSRSHashLength when zero or less.
	HashLength int
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Defaults of SRS, as libsrs2's.
const (
	DefaultSRSMaxAge     = 21 * 24 * time.Hour
	DefaultSRSHashLength = 4
	// MaxSecretFileBytes bounds a secrets file.
	MaxSecretFileBytes = 64 << 10
)

// Errors of SRS.Reverse. All but ErrNotSRS mean the address must be
// refused permanently: it was not made here, or not recently.
var (
	ErrNotSRS     = errors.New("not an SRS address")
	ErrSRSFormat  = errors.New("malformed SRS address")
	ErrSRSHash    = errors.New("the SRS address has a wrong hash (forged or from another forwarder)")
	ErrSRSExpired = errors.New("the SRS address has expired")
)

const srsBase32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

// ReadSecrets reads an SRS secrets file: one secret a line, blank lines
// and trailing white space ignored, the first line the signing secret.
func ReadSecrets(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSecretFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxSecretFileBytes {
		return nil, errors.New("SRS secrets file too large")
	}
	var out [][]byte
	for _, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimRight(line, " \t\r")
		if len(line) > 0 {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("SRS secrets file holds no secret")
	}
	return out, nil
}

func (s *SRS) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *SRS) hashLen() int { return orDefault(s.HashLength, DefaultSRSHashLength) }
func (s *SRS) maxDays() int { return int(orDefault(s.MaxAge, DefaultSRSMaxAge) / (24 * time.Hour)) }

// hash is the base64 HMAC-SHA1 of the lower-cased parts, cut to the hash
// length.
func (s *SRS) hash(secret []byte, parts ...string) string {
	m := hmac.New(sha1.New, secret)
	for _, p := range parts {
		io.WriteString(m, strings.ToLower(p))
	}
	return base64.StdEncoding.EncodeToString(m.Sum(nil))[:s.hashLen()]
}

// verify checks h against every secret, ignoring case as libsrs2 does
// (some relays change the case of local parts), in constant time.
func (s *SRS) verify(h string, parts ...string) bool {
	if len(h) != s.hashLen() {
		return false
	}
	got := []byte(strings.ToLower(h))
	ok := false
	for _, sec := range s.Secrets {
		if hmac.Equal(got, []byte(strings.ToLower(s.hash(sec, parts...)))) {
			ok = true
		}
	}
	return ok
}

func (s *SRS) timestamp() string {
	days := s.now().Unix() / 86400
	return string([]byte{srsBase32[(days>>5)&31], srsBase32[days&31]})
}

// srsPrefix reports whether local starts with tag ("SRS0" or "SRS1", any
// case) and one of libsrs2's separators '=', '-', '+'.
func srsPrefix(local, tag string) bool {
	return len(local) > 5 && strings.EqualFold(local[:4], tag) && strings.IndexByte("=-+", local[4]) >= 0
}

// IsSRS reports whether addr looks like an SRS address.
func IsSRS(addr string) bool {
	local, _ := mail.Split(addr)
	return srsPrefix(local, "SRS0") || srsPrefix(local, "SRS1")
}

// Forward returns the sender to use when forwarding mail from sender
// (Plan.ForwardSender) to another site: the SRS address, or sender itself
// for a bounce (empty or #@[]), an address without a domain, or one in
// Domain. The caller leaves senders in its other local domains alone too,
// and forwards within the site need no rewriting.
func (s *SRS) Forward(sender string) (string, error) {
	if len(s.Secrets) == 0 || s.Domain == "" {
		return "", errors.New("SRS needs a secret and a domain")
	}
	local, domain := mail.Split(sender)
	if mail.IsBounceSender(sender) || domain == "" || strings.EqualFold(strings.TrimSuffix(domain, "."), s.Domain) {
		return sender, nil
	}
	secret := s.Secrets[0]
	var out string
	switch {
	case srsPrefix(local, "SRS0"):
		// Wrap: the bounce goes to the forwarder that made the SRS0.
		tail := local[4:]
		out = "SRS1=" + s.hash(secret, domain, tail) + "=" + domain + "=" + tail
	case srsPrefix(local, "SRS1"):
		// Re-sign with the same first forwarder.
		f := strings.SplitN(local[5:], "=", 3)
		if len(f) < 3 || f[1] == "" {
			return "", ErrSRSFormat
		}
		first, tail := f[1], f[2]
		out = "SRS1=" + s.hash(secret, first, tail) + "=" + first + "=" + tail
	default:
		ts := s.timestamp()
		out = "SRS0=" + s.hash(secret, ts, domain, local) + "=" + ts + "=" + domain + "=" + local
	}
	out += "@" + s.Domain
	if !mail.ValidAddress(out) {
		return "", errors.New("the SRS address would be too long")
	}
	return out, nil
}

// Reverse turns an SRS address that came back (as the recipient of a
// bounce) into the address it stands for: the original sender for SRS0,
// the first forwarder's SRS0 address for SRS1. The hash must be right with
// one of the secrets and an SRS0 address must not be older than MaxAge.
// The domain after the '@' is not looked at: the caller reverses only
// recipients in its SRS domain.
func (s *SRS) Reverse(addr string) (string, error) {
	local, _ := mail.Split(addr)
	switch {
	case srsPrefix(local, "SRS0"):
		f := strings.SplitN(local[5:], "=", 4)
		if len(f) < 4 || len(f[1]) != 2 || f[2] == "" || f[3] == "" {
			return "", ErrSRSFormat
		}
		h, ts, domain, user := f[0], f[1], f[2], f[3]
		if !s.verify(h, ts, domain, user) {
			return "", ErrSRSHash
		}
		if !s.fresh(ts) {
			return "", ErrSRSExpired
		}
		return user + "@" + domain, nil
	case srsPrefix(local, "SRS1"):
		f := strings.SplitN(local[5:], "=", 3)
		if len(f) < 3 || f[1] == "" || f[2] == "" {
			return "", ErrSRSFormat
		}
		h, first, tail := f[0], f[1], f[2]
		if !s.verify(h, first, tail) {
			return "", ErrSRSHash
		}
		return "SRS0" + tail + "@" + first, nil
	}
	return "", ErrNotSRS
}

// fresh reports whether the two-letter day stamp is at most MaxAge old.
func (s *SRS) fresh(ts string) bool {
	t := 0
	for i := 0; i < 2; i++ {
		j := strings.IndexByte(srsBase32, upper(ts[i]))
		if j < 0 {
			return false
		}
		t = t<<5 | j
	}
	now := int(s.now().Unix()/86400) & 1023
	age := (now - t + 1024) % 1024
	return age <= s.maxDays()
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}
