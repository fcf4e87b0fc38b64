package mail

import "strings"

// QuoteSMTP renders a raw address as an RFC 5321 mailbox for MAIL FROM and
// RCPT TO (without the angle brackets). QMTP and QMQP addresses are raw bytes
// (PROTOCOLS.md 8.9): a local part that is not a dot-string, such as
// "Hate.The Quoting" or "\Backslashes!", is sent as a quoted-string with '"' and
// '\' escaped. Bytes of 0x80 and above pass as they are (SMTPUTF8).
func QuoteSMTP(addr string) string {
	if addr == "" {
		return ""
	}
	local, domain := Split(addr)
	if strings.IndexByte(addr, '@') < 0 {
		local, domain = addr, ""
	}
	if !isDotString(local) {
		var b strings.Builder
		b.Grow(len(local) + 4)
		b.WriteByte('"')
		for i := 0; i < len(local); i++ {
			c := local[i]
			if c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
		b.WriteByte('"')
		local = b.String()
	}
	if domain == "" && strings.IndexByte(addr, '@') < 0 {
		return local
	}
	return local + "@" + domain
}

// isDotString reports whether s is an RFC 5321 Dot-string: atoms of atext
// separated by single dots, with UTF-8 bytes allowed (RFC 6531).
func isDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	prevDot := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if prevDot {
				return false
			}
			prevDot = true
			continue
		}
		prevDot = false
		if !isAtext(c) {
			return false
		}
	}
	return true
}

func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}
