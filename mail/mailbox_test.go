package mail

import (
	"strings"
	"testing"
)

func TestMailboxName(t *testing.T) {
	for _, tc := range []struct{ rcpt, dom, user string }{
		{"kate@example.net", "example.net", "kate"},
		{"Kate-Lists@Example.NET.", "example.net", "kate"},
		{"a.b+c=d@x", "x", "a.b+c=d"},
		{"joe@my-domain.example", "my-domain.example", "joe"}, // a domain with a hyphen
	} {
		d, u, err := MailboxName(tc.rcpt)
		if err != nil || d != tc.dom || u != tc.user {
			t.Errorf("%q: %q %q %v", tc.rcpt, d, u, err)
		}
	}
	for _, rcpt := range []string{
		"kate",                  // no domain
		"../x@example.net",      // climbs out
		"\"../x\"@example.net",  // quoted, still not a name
		"a/b@example.net",       // a path
		"-x@example.net",        // empty user before '-'
		".x@example.net",        // hidden file
		"a\nb@example.net",      // control character
		"a\x00b@example.net",    // NUL
		"\u212Aate@example.net", // KELVIN SIGN: not kate
		"kate@\u212Aexample.net",
		"kate@.example.net",
		"kate@ex/ample.net",
		strings.Repeat("a", MaxMailboxName+1) + "@x",
	} {
		if d, u, err := MailboxName(rcpt); err == nil {
			t.Errorf("%q accepted as %q/%q", rcpt, d, u)
		}
	}
}

// TestMailboxNameSep: with '+' the user is everything before the '+',
// hyphens included; a leading '-' is still refused.
func TestMailboxNameSep(t *testing.T) {
	for rcpt, user := range map[string]string{
		"first-last+lists@example.net": "first-last",
		"first-last@example.net":       "first-last",
		"joe+a+b@example.net":          "joe",
	} {
		if _, u, err := MailboxNameSep(rcpt, '+'); err != nil || u != user {
			t.Errorf("%q with '+': %q, %v; want %q", rcpt, u, err, user)
		}
	}
	for _, rcpt := range []string{"-x+y@example.net", "+y@example.net", ".x+y@example.net"} {
		if _, u, err := MailboxNameSep(rcpt, '+'); err == nil {
			t.Errorf("%q with '+' accepted as %q", rcpt, u)
		}
	}
	if _, u, err := MailboxNameSep("first-last@x", 0); err != nil || u != "first-last" {
		t.Errorf("no separator: %q, %v", u, err)
	}
}

func TestEqualFoldASCII(t *testing.T) {
	if !EqualFoldASCII("Kate@Example.NET", "kate@example.net") || EqualFoldASCII("\u212Aate", "kate") || EqualFoldASCII("kate", "kat") {
		t.Fatal("EqualFoldASCII")
	}
}
