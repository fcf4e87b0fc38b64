package mail

import (
	"strings"
	"testing"
)

func TestSplitDomain(t *testing.T) {
	tests := []struct{ addr, local, domain, lower string }{
		{"user@example.org", "user", "example.org", "example.org"},
		{"User@Example.ORG", "User", "Example.ORG", "example.org"},
		{"postmaster", "postmaster", "", ""},
		{"", "", "", ""},
		{"@x", "", "x", "x"},
		{"a@b@c", "a@b", "c", "c"},
		{"user@", "user", "", ""},
		{"#@[]", "#", "[]", "[]"},
		// Only ASCII folds: KELVIN SIGN stays, it is another domain.
		{"u@\u212Aernel.org", "u", "\u212Aernel.org", "\u212Aernel.org"},
		{"u@BÜCHER.example", "u", "BÜCHER.example", "bÜcher.example"},
	}
	for _, tt := range tests {
		l, d := Split(tt.addr)
		if l != tt.local || d != tt.domain {
			t.Errorf("Split(%q) = %q, %q", tt.addr, l, d)
		}
		if got := Domain(tt.addr); got != tt.lower {
			t.Errorf("Domain(%q) = %q, want %q", tt.addr, got, tt.lower)
		}
	}
}

func TestValidAddress(t *testing.T) {
	if !ValidAddress("") || !ValidAddress("a@b") || !ValidAddress(strings.Repeat("a", 999)) {
		t.Error("good address refused")
	}
	if ValidAddress(strings.Repeat("a", 1000)) || ValidAddress("a\x00@b") {
		t.Error("bad address accepted")
	}
}

func TestIsBounceSender(t *testing.T) {
	for s, want := range map[string]bool{"": true, "#@[]": true, "a@b": false, "#@[]x": false, "MAILER-DAEMON": false} {
		if IsBounceSender(s) != want {
			t.Errorf("IsBounceSender(%q) = %v", s, !want)
		}
	}
}

func TestVERP(t *testing.T) {
	tests := []struct {
		sender, rcpt, expanded, bounce string
		verp                           bool
	}{
		// qmail-send(8)'s VERP example.
		{"owner-@list.example-@[]", "user@example.org", "owner-user=example.org@list.example", "owner-@list.example", true},
		{"owner-@list.example-@[]", "User@Example.ORG", "owner-User=Example.ORG@list.example", "owner-@list.example", true},
		// ezmlm's form.
		{"list-return-42-@lists.example-@[]", "a@b.c", "list-return-42-a=b.c@lists.example", "list-return-42-@lists.example", true},
		// The last '@' on both sides, like qmail-send's senderadd().
		{"a@b@c-@[]", "x@y@z", "a@bx@y=z@c", "a@b@c", true},
		{"@host-@[]", "u@d", "u=d@host", "@host", true},
		// A recipient without '@' (qmail would leave -@[] on the wire).
		{"pre@host-@[]", "postmaster", "prepostmaster@host", "pre@host", true},
		{"pre@host-@[]", "user@", "preuser=@host", "pre@host", true},
		// Not VERP.
		{"plain@example.org", "u@d", "plain@example.org", "plain@example.org", false},
		{"", "u@d", "", "", false},
		{"#@[]", "u@d", "#@[]", "#@[]", false},
		{"-@[]", "u@d", "-@[]", "-@[]", false},
		{"x-@[]", "u@d", "x-@[]", "x-@[]", false},
		{"pre@host-@[]x", "u@d", "pre@host-@[]x", "pre@host-@[]x", false},
	}
	for _, tt := range tests {
		if got := IsVERP(tt.sender); got != tt.verp {
			t.Errorf("IsVERP(%q) = %v", tt.sender, got)
		}
		if got := ExpandVERP(tt.sender, tt.rcpt); got != tt.expanded {
			t.Errorf("ExpandVERP(%q, %q) = %q, want %q", tt.sender, tt.rcpt, got, tt.expanded)
		}
		if got := BounceAddress(tt.sender); got != tt.bounce {
			t.Errorf("BounceAddress(%q) = %q, want %q", tt.sender, got, tt.bounce)
		}
		if strings.HasSuffix(ExpandVERP(tt.sender, tt.rcpt), "-@[]") && tt.verp {
			t.Errorf("ExpandVERP(%q) leaks -@[]", tt.sender)
		}
	}
}

func TestMatchDomain(t *testing.T) {
	tests := []struct {
		pattern, domain string
		want            bool
	}{
		{"example.com", "example.com", true},
		{"example.com", "EXAMPLE.Com", true},
		{"EXAMPLE.COM", "example.com", true},
		{"example.com", "example.com.", true}, // the DNS root
		{"example.com.", "example.com", true},
		{"example.com", "example.com..", false},
		{"example.com", "mail.example.com", false}, // exact only
		{"example.com", "badexample.com", false},
		{"example.com", "example.com.evil.org", false},
		{"example.com", "example.co", false},
		{".example.com", "mail.example.com", true},
		{".example.com", "a.b.example.com", true},
		{".example.com", "MAIL.Example.COM.", true},
		{".example.com", "example.com", false}, // qmail: suffixes start at a '.'
		{".example.com", ".example.com", false},
		{".example.com", "badexample.com", false},
		{".example.com", "example.com.evil.org", false},
		{"*", "anything.org", true},
		{"*", "", true},
		{"", "", false},
		{"", "example.com", false},
		{".", "example.com", false},
		{".", "example.com..", false},
		{"example.com", "", false},
		{"[192.0.2.1]", "[192.0.2.1]", true},
		{"[192.0.2.1]", "[192.0.2.10]", false},
		{"[IPv6:2001:db8::1]", "[ipv6:2001:DB8::1]", true},
		// Only ASCII folds (see idna.go).
		{"kernel.org", "\u212Aernel.org", false},
		{".kernel.org", "a.\u212Aernel.org", false},
		{"example.se", "example.\u017Fe", false}, // LATIN SMALL LETTER LONG S folds to s
		{"example.com", "ｅxample.com", false},    // fullwidth e
		{"example.com", "example\u3002com", false},
		// U-labels and A-labels of the same name match each other.
		{"bücher.example", "bücher.example", true},
		{"bücher.example", "xn--bcher-kva.example", true},
		{"bücher.example", "XN--BCHER-KVA.EXAMPLE", true},
		{"xn--bcher-kva.example", "bücher.example", true},
		{"xn--bcher-kva.example", "BÜCHER.example", false}, // Ü is not ü
		{".bücher.example", "mail.xn--bcher-kva.example", true},
		{".xn--bcher-kva.example", "mail.bücher.example", true},
		{"bücher.example", "xn--bcher-kva.example.evil", false},
		{"bücher.example", "bucher.example", false},
		{"bücher.example", "büchers.example", false},
		{"münchen.example", "xn--mnchen-3ya.example", true},
		{"example.com", "\xff\xfe.example.com", false},
		{".example.com", "\xff.example.com", true}, // a subdomain, however odd
		{"\xff.example", "\xfe.example", false},    // bad UTF-8 compares as bytes
		{"\xff.example", "\xff.example", true},
	}
	for _, tt := range tests {
		if got := MatchDomain(tt.pattern, tt.domain); got != tt.want {
			t.Errorf("MatchDomain(%q, %q) = %v, want %v", tt.pattern, tt.domain, got, tt.want)
		}
	}
	if (HostList{}).Match("example.com") || HostList(nil).Match("") {
		t.Error("empty list matches")
	}
	h := HostList{"a.example", ".b.example"}
	if !h.Match("A.example") || !h.Match("x.b.example") || h.Match("b.example") || h.Match("c.example") {
		t.Error("HostList.Match")
	}
}

func TestPunycode(t *testing.T) {
	// Vectors from Python's punycode codec and RFC 3492 7.1.
	for in, want := range map[string]string{
		"bücher":                         "bcher-kva",
		"münchen":                        "mnchen-3ya",
		"españa":                         "espaa-rta",
		"日本":                             "wgv71a",
		"ü":                              "tda",
		"Ü":                              "wca",
		"a-ü":                            "a--yka",
		"\U0010ffff\U0010ffff\U0010ffff": "dn32gaa",
		// RFC 3492 7.1 (A) Arabic (Egyptian).
		"\u0644\u064A\u0647\u0645\u0627\u0628\u062A\u0643\u0644\u0645\u0648\u0634\u0639\u0631\u0628\u064A\u061F": "egbpdaj6bu4bxfgehfvwxn",
		// RFC 3492 7.1 (B) Chinese (simplified).
		"\u4ED6\u4EEC\u4E3A\u4EC0\u4E48\u4E0D\u8BF4\u4E2D\u6587": "ihqwcrb4cv8a8dqg056pqjye",
		// RFC 3492 7.1 (L) 3<nen>B<gumi><kinpachi><sensei>.
		"3\u5E74B\u7D44\u91D1\u516B\u5148\u751F": "3B-ww4c5e180e575a65lsy2b",
	} {
		if got, ok := aLabel(in); !ok || got != "xn--"+want {
			t.Errorf("aLabel(%q) = %q, %v, want %q", in, got, ok, "xn--"+want)
		}
	}
	for in, want := range map[string]string{
		"example.com":            "example.com",
		"Mail.Bücher.Example.":   "mail.xn--bcher-kva.example.",
		"\xff.example":           "\xff.example",
		"user.XN--BCHER-KVA.org": "user.xn--bcher-kva.org",
		"":                       "",
	} {
		if got := DomainToASCII(in); got != want {
			t.Errorf("DomainToASCII(%q) = %q, want %q", in, got, want)
		}
	}
	long := strings.Repeat("ü", 200) // over maxLabelKey bytes: kept as bytes
	if DomainToASCII(long) != long {
		t.Error("overlong label converted")
	}
}

// TestRecipientAllowed: rcpthosts against the classic relay tricks. A
// destination outside rcpthosts must never be allowed, whatever form the
// address takes; our own domains must be.
func TestRecipientAllowed(t *testing.T) {
	h := HostList{"ourdomain.example", ".ourdomain.example", "[192.0.2.25]", "bücher.example"}
	tests := []struct {
		addr string
		want bool
	}{
		// Plain.
		{"user@ourdomain.example", true},
		{"user@mail.ourdomain.example", true},
		{"User@OurDomain.EXAMPLE", true},
		{"user@ourdomain.example.", true},
		{"user@other.example", false},
		{"user@ourdomain.example.other.example", false},
		{"user@notourdomain.example", false},
		{"user@ourdomain.examplex", false},
		{"user@other.example.", false},
		{"user@other.example..", false},
		{"user@ourdomain.example..", false},
		// No '@', empty parts.
		{"user", false},
		{"", false},
		{"@ourdomain.example", false},
		{"user@", false},
		// The '%' hack.
		{"user%other.example@ourdomain.example", false},
		{"user%other.example.@ourdomain.example", false},
		{"user%OTHER.example@ourdomain.example", false},
		{"user%other.example%ourdomain.example@ourdomain.example", false},
		{"user%@ourdomain.example", false},
		{"user%mail.ourdomain.example@ourdomain.example", true},
		{"user%ourdomain.example%ourdomain.example@ourdomain.example", true},
		// UUCP bang paths.
		{"other.example!user@ourdomain.example", false},
		{"ourdomain.example!user@ourdomain.example", false},
		{"a!b!user@ourdomain.example", false},
		// Quoted local part holding '@', raw and after go-smtp unquoting.
		{`"user@other.example"@ourdomain.example`, false},
		{"user@other.example@ourdomain.example", false},
		{`"user%other.example"@ourdomain.example`, false},
		{"user@ourdomain.example@ourdomain.example", true},
		{"user@other.example\\@ourdomain.example", false},
		// Source routes, in both directions.
		{"@ourdomain.example:user@other.example", false},
		{"@other.example:user@ourdomain.example", false},
		{"@ourdomain.example,@ourdomain.example:user@other.example", false},
		{"user:x@ourdomain.example", false},
		// Address literals: only when listed.
		{"user@[192.0.2.25]", true},
		{"user@[192.0.2.1]", false},
		{"user@[127.0.0.1]", false},
		{"user@[IPv6:::1]", false},
		{"user%other.example@[192.0.2.25]", false},
		// Domains that look like ours but are not.
		{"user@ourdomain.example:25", false},
		{"user@ourdomain.example>", false},
		{"user@ourdomain.example other.example", false},
		{"user@ourdomain.example\x00", false},
		{"user@ourdomain.example\r\n", false},
		{"user@ourdomain.example/other", false},
		// Unicode tricks: only ASCII folds, no mapping.
		{"user@\u212Aernel.example", false},
		{"user@ourdomain.e\u0078ample", true},  // plain x, written escaped
		{"user@ourdom\u0430in.example", false}, // Cyrillic a
		{"user@ourdomain\u3002example", false}, // ideographic full stop
		{"user@ｏurdomain.example", false},      // fullwidth o
		// IDN: U-label and A-label of our own domain.
		{"user@bücher.example", true},
		{"user@xn--bcher-kva.example", true},
		{"user@XN--BCHER-KVA.EXAMPLE", true},
		{"user@xn--bcher-kva.example.evil.example", false},
		{"user@bucher.example", false},
		{"user@b\u00fccher.example", true},
		{"user@bu\u0308cher.example", false}, // decomposed: another label
		{"user%xn--bcher-kva.example@ourdomain.example", true},
	}
	for _, tt := range tests {
		if got := h.RecipientAllowed(tt.addr); got != tt.want {
			t.Errorf("RecipientAllowed(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
	var none HostList
	for _, a := range []string{"user@ourdomain.example", "user@other.example", "user"} {
		if none.RecipientAllowed(a) {
			t.Errorf("empty rcpthosts allowed %q", a)
		}
	}
	if !(HostList{"*"}).RecipientAllowed("user@anywhere.example") {
		t.Error(`"*" does not allow everything`)
	}
}
