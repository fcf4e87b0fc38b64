// Package mtasts finds and caches a recipient domain's MTA-STS policy (RFC
// 8461) for delivery to its MX hosts: the _mta-sts TXT record, the policy
// file fetched over verified HTTPS, and a cache on disk that outlives
// restarts and DNS or HTTPS failures for the policy's max_age.
//
// It decides nothing about delivery: the caller asks Cache.Policy for a
// domain and Policy.Allows for each MX host, and then, in enforce mode,
// delivers only to allowed hosts with verified TLS. It knows nothing of the
// queue, SMTP or configuration files.
package mtasts

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode is a policy's mode (RFC 8461 section 5).
type Mode string

const (
	ModeEnforce Mode = "enforce" // deliver only to matching MX hosts, with verified TLS
	ModeTesting Mode = "testing" // deliver as without a policy; report what enforce would refuse
	ModeNone    Mode = "none"    // no policy
)

// MaxMaxAge is the largest max_age a policy may give (RFC 8461 section 3.2:
// 31557600 seconds, about a year).
const MaxMaxAge = 31557600 * time.Second

// Policy is one domain's MTA-STS policy. The zero Policy, like one in mode
// none, is no policy: it allows every MX host.
type Policy struct {
	Mode   Mode
	MX     []string // patterns: "mx1.example.net" or "*.example.net"
	MaxAge time.Duration

	// Set by Cache:
	Domain  string    // the recipient domain
	ID      string    // the id of the TXT record the policy was fetched under
	Fetched time.Time // when it was fetched
	Expires time.Time // Fetched plus MaxAge
}

// Active reports whether the policy constrains delivery at all (enforce or
// testing).
func (p Policy) Active() bool { return p.Mode == ModeEnforce || p.Mode == ModeTesting }

// Allows reports whether delivery to mxHost is within the policy: always
// for no policy or mode none, else when a pattern matches the host (RFC 8461
// section 4.1: a "*." pattern stands for exactly one left-most label). In
// testing mode the caller delivers anyway and logs a host that is not
// allowed.
func (p Policy) Allows(mxHost string) bool {
	if !p.Active() {
		return true
	}
	h := strings.ToLower(strings.TrimSuffix(mxHost, "."))
	for _, m := range p.MX {
		m = strings.ToLower(strings.TrimSuffix(m, "."))
		if rest, ok := strings.CutPrefix(m, "*."); ok {
			i := strings.IndexByte(h, '.')
			if i > 0 && h[i+1:] == rest {
				return true
			}
			continue
		}
		if h == m {
			return true
		}
	}
	return false
}

// Parse reads a policy file (RFC 8461 section 3.2): "key: value" lines
// ended by CR LF or LF. version must be STSv1, mode one of the three, max_age
// a number of seconds up to MaxMaxAge, and at least one mx unless the mode is
// none. Unknown keys are ignored; of a repeated key other than mx the first
// counts.
func Parse(b []byte) (Policy, error) {
	var p Policy
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 1024), len(b)+1)
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return Policy{}, fmt.Errorf("policy line %q is not key: value", trunc(line))
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if k != "mx" && seen[k] {
			continue
		}
		seen[k] = true
		switch k {
		case "version":
			if v != "STSv1" {
				return Policy{}, fmt.Errorf("policy version %q is not STSv1", trunc(v))
			}
		case "mode":
			switch Mode(v) {
			case ModeEnforce, ModeTesting, ModeNone:
				p.Mode = Mode(v)
			default:
				return Policy{}, fmt.Errorf("policy mode %q is not enforce, testing or none", trunc(v))
			}
		case "max_age":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || len(v) > 10 || time.Duration(n)*time.Second > MaxMaxAge {
				return Policy{}, fmt.Errorf("policy max_age %q is not a number of seconds up to %d", trunc(v), int64(MaxMaxAge/time.Second))
			}
			p.MaxAge = time.Duration(n) * time.Second
		case "mx":
			if !validMX(v) {
				return Policy{}, fmt.Errorf("policy mx %q is not a host name or *.domain", trunc(v))
			}
			p.MX = append(p.MX, v)
		}
	}
	if err := sc.Err(); err != nil {
		return Policy{}, err
	}
	switch {
	case !seen["version"]:
		return Policy{}, errors.New("policy has no version")
	case p.Mode == "":
		return Policy{}, errors.New("policy has no mode")
	case !seen["max_age"]:
		return Policy{}, errors.New("policy has no max_age")
	case len(p.MX) == 0 && p.Mode != ModeNone:
		return Policy{}, errors.New("policy names no mx")
	}
	return p, nil
}

func validMX(v string) bool {
	v = strings.TrimPrefix(v, "*.")
	return isHostname(v)
}

func isHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// parseTXT reads the _mta-sts TXT records (RFC 8461 section 3.1): those that
// start with "v=STSv1;" count; exactly one must, and its id is 1 to 32
// letters and digits. It returns "" when there is no usable record.
func parseTXT(recs []string) (string, error) {
	var found []string
	for _, r := range recs {
		if strings.HasPrefix(r, "v=STSv1;") || r == "v=STSv1" {
			found = append(found, r)
		}
	}
	if len(found) == 0 {
		return "", nil
	}
	if len(found) > 1 {
		return "", errors.New("more than one v=STSv1 TXT record")
	}
	id := ""
	for _, f := range strings.Split(found[0], ";")[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok {
			if strings.TrimSpace(f) == "" {
				continue
			}
			return "", fmt.Errorf("TXT record field %q is not key=value", trunc(f))
		}
		if strings.TrimSpace(k) == "id" && id == "" {
			id = strings.TrimSpace(v)
		}
	}
	if id == "" || len(id) > 32 || strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) >= 0 {
		return "", fmt.Errorf("TXT record id %q is not 1 to 32 letters and digits", trunc(id))
	}
	return id, nil
}
