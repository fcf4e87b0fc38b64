package mail

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
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

// LowerASCII returns s with A-Z turned into a-z and every other byte kept:
// the case folding of mail domains and of qmail's user names.
func LowerASCII(s string) string {
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

// aLabel returns the A-label of one valid UTF-8 label: "xn--" and its
// RFC 3492 Punycode, through x/net/idna's Punycode profile, which does the
// raw conversion with no Unicode mapping or normalization (see above). It
// reports false where the conversion fails; the label is then kept as bytes.
func aLabel(label string) (string, bool) {
	a, err := idna.Punycode.ToASCII(label)
	if err != nil || !strings.HasPrefix(a, "xn--") {
		return "", false
	}
	return a, true
}

// domainKey returns the comparison form of a domain: ASCII lower case, and
// every non-ASCII label as its lower-case A-label.
func domainKey(d string) string {
	d = LowerASCII(d)
	if isASCII(d) {
		return d
	}
	labels := strings.Split(d, ".")
	for i, l := range labels {
		if isASCII(l) || len(l) > maxLabelKey || !utf8.ValidString(l) {
			continue
		}
		if a, ok := aLabel(l); ok {
			labels[i] = a
		}
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
