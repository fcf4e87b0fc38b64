package mail

import (
	"strings"
	"unicode/utf8"
)

// Domain names are compared the way DNS compares them: ASCII letters ignore
// case and nothing else does. Unicode case folding is deliberately not used:
// strings.EqualFold("kernel.org", "\u212Aernel.org") is true (KELVIN SIGN
// folds to k), yet the second name is a different, foreign domain
// (xn--ernel-...), so folding it would turn rcpthosts into an open relay.
//
// An internationalized name may arrive as U-labels (bücher.example, with
// SMTPUTF8) or as A-labels (xn--bcher-kva.example). Both spell the same
// domain, so a comparison key turns every non-ASCII label into its A-label
// with plain RFC 3492 Punycode: no Unicode mapping or normalization, which
// could make two different domains compare equal. A label that is not valid
// UTF-8, or longer than maxLabelKey, is kept as bytes and can only match
// itself byte for byte.

// maxLabelKey bounds the labels that are Punycode-encoded (a DNS label has
// at most 63 octets); longer labels are compared as bytes.
const maxLabelKey = 255

// lowerASCII returns s with A-Z turned into a-z and every other byte kept.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// equalFoldASCII reports whether a and b are equal with ASCII letters
// compared without case.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// domainKey returns the comparison form of a domain: ASCII lower case, and
// every non-ASCII label as its lower-case A-label.
func domainKey(d string) string {
	d = lowerASCII(d)
	if isASCII(d) {
		return d
	}
	labels := strings.Split(d, ".")
	for i, l := range labels {
		if isASCII(l) || len(l) > maxLabelKey || !utf8.ValidString(l) {
			continue
		}
		labels[i] = "xn--" + punycode(l)
	}
	return strings.Join(labels, ".")
}

// DomainToASCII returns domain with every non-ASCII label turned into its A-label
// (RFC 3492 Punycode with the "xn--" prefix) and ASCII letters lower-cased,
// the form an SMTP client without SMTPUTF8 must send and the form under
// which MatchDomain compares. No Unicode mapping is done (RFC 5891 expects
// the caller to have a valid U-label already); labels that are not valid
// UTF-8 are returned unchanged.
func DomainToASCII(domain string) string { return domainKey(domain) }

// RFC 3492 section 5 parameters.
const (
	pcBase        = 36
	pcTMin        = 1
	pcTMax        = 26
	pcSkew        = 38
	pcDamp        = 700
	pcInitialBias = 72
	pcInitialN    = 128
)

// punycode encodes a valid UTF-8 label of at most maxLabelKey bytes with the
// RFC 3492 section 6.3 algorithm. The bound keeps every intermediate value
// far below overflow even with 32-bit ints (delta < 0x110000 * 256).
func punycode(label string) string {
	runes := []rune(label)
	out := make([]byte, 0, len(label)+8)
	for _, r := range runes {
		if r < 0x80 {
			out = append(out, byte(r))
		}
	}
	b := len(out)
	h := b
	if b > 0 {
		out = append(out, '-')
	}
	n := rune(pcInitialN)
	delta, bias := 0, pcInitialBias
	for h < len(runes) {
		m := rune(utf8.MaxRune + 1)
		for _, r := range runes {
			if r >= n && r < m {
				m = r
			}
		}
		delta += int(m-n) * (h + 1)
		n = m
		for _, r := range runes {
			if r < n {
				delta++
			}
			if r != n {
				continue
			}
			q := delta
			for k := pcBase; ; k += pcBase {
				t := k - bias
				if t < pcTMin {
					t = pcTMin
				} else if t > pcTMax {
					t = pcTMax
				}
				if q < t {
					break
				}
				out = append(out, punyDigit(t+(q-t)%(pcBase-t)))
				q = (q - t) / (pcBase - t)
			}
			out = append(out, punyDigit(q))
			bias = punyAdapt(delta, h+1, h == b)
			delta = 0
			h++
		}
		delta++
		n++
	}
	return string(out)
}

func punyDigit(d int) byte {
	if d < 26 {
		return byte('a' + d)
	}
	return byte('0' + d - 26)
}

func punyAdapt(delta, numPoints int, first bool) int {
	if first {
		delta /= pcDamp
	} else {
		delta /= 2
	}
	delta += delta / numPoints
	k := 0
	for delta > ((pcBase-pcTMin)*pcTMax)/2 {
		delta /= pcBase - pcTMin
		k += pcBase
	}
	return k + (pcBase-pcTMin+1)*delta/(delta+pcSkew)
}
