package mail

import "testing"

func TestQuoteSMTP(t *testing.T) {
	tests := []struct {
		addr, want string
		quotable   bool
	}{
		{"", "", true},
		{"user@example.org", "user@example.org", true},
		{"first.last@example.org", "first.last@example.org", true},
		{"a+tag@example.org", "a+tag@example.org", true},
		{"!#$%&'*+-/=?^_`{|}~@example.org", "!#$%&'*+-/=?^_`{|}~@example.org", true},
		{"postmaster", "postmaster", true},
		// The QMTP specification's examples (qmtp.txt).
		{"Hate.The Quoting@silverton.berkeley.edu", `"Hate.The Quoting"@silverton.berkeley.edu`, true},
		{`\Backslashes!@silverton.berkeley.EDU`, `"\\Backslashes!"@silverton.berkeley.EDU`, true},
		// Not a dot-string: quoted, with '"' and '\' escaped.
		{`say"hi"@example.org`, `"say\"hi\""@example.org`, true},
		{".lead@example.org", `".lead"@example.org`, true},
		{"trail.@example.org", `"trail."@example.org`, true},
		{"dou..ble@example.org", `"dou..ble"@example.org`, true},
		{"@example.org", `""@example.org`, true},
		{"a(b)@example.org", `"a(b)"@example.org`, true},
		{"a,b@example.org", `"a,b"@example.org`, true},
		{"a<b>@example.org", `"a<b>"@example.org`, true},
		{"a[b]@example.org", `"a[b]"@example.org`, true},
		{"a:b;c@example.org", `"a:b;c"@example.org`, true},
		{"user@other.example@ourdomain.example", `"user@other.example"@ourdomain.example`, true},
		{"two words", `"two words"`, true},
		// UTF-8 (RFC 6531): atext, no quoting.
		{"jörg@bücher.example", "jörg@bücher.example", true},
		{"用户@例子.广告", "用户@例子.广告", true},
		{"jö rg@example.org", `"jö rg"@example.org`, true},
		// Address literals.
		{"user@[192.0.2.1]", "user@[192.0.2.1]", true},
		{"user@[IPv6:2001:db8::1]", "user@[IPv6:2001:db8::1]", true},
		// Not sendable at all: control bytes and broken domains.
		{"a\r\nRCPT TO:<x@evil.example>@example.org", "", false},
		{"a\x00b@example.org", "", false},
		{"a\tb@example.org", "", false},
		{"a\x7fb@example.org", "", false},
		{"user@example.org> NOTIFY=NEVER", "", false},
		{"user@example.org>", "", false},
		{"user@exa mple.org", "", false},
		{"user@", "", false},
		{"user@.example.org", "", false},
		{"user@example..org", "", false},
		{"user@example.org.", "", false},
		{"user@-example.org", "", false},
		{"user@example-.org", "", false},
		{"user@exa_mple.org", "", false},
		{"user@[]", "", false},
		{"user@[1.2.3.4", "", false},
		{"user@[a]b]", "", false},
		{"user@[a\\]", "", false},
		{"user@[a b]", "", false},
		{"#@[]", "", false},
	}
	for _, tt := range tests {
		if got := QuotableSMTP(tt.addr); got != tt.quotable {
			t.Errorf("QuotableSMTP(%q) = %v, want %v", tt.addr, got, tt.quotable)
		}
		if tt.quotable {
			if got := QuoteSMTP(tt.addr); got != tt.want {
				t.Errorf("QuoteSMTP(%q) = %s, want %s", tt.addr, got, tt.want)
			}
		}
	}
}

// TestQuoteSMTPInverse: go-smtp's server unquotes a quoted local part by
// dropping the backslashes; QuoteSMTP must be its inverse.
func TestQuoteSMTPInverse(t *testing.T) {
	for _, local := range []string{`a"b`, `a\b`, `\\`, `"`, `a b`, `x@y`, `.`, `..`, `a.b`, ``, `ü`} {
		q := QuoteSMTP(local + "@example.org")
		l, d := Split(q)
		if d != "example.org" {
			t.Fatalf("domain of %q", q)
		}
		if l != local && (len(l) < 2 || l[0] != '"' || l[len(l)-1] != '"' || unquote(l[1:len(l)-1]) != local) {
			t.Errorf("QuoteSMTP(%q@...) = %q does not unquote back", local, q)
		}
	}
}

func unquote(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b = append(b, s[i])
	}
	return string(b)
}
