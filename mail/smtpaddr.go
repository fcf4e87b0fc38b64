package mail

import "strings"

// QuoteSMTP renders a raw address as an RFC 5321 mailbox for MAIL FROM and
// RCPT TO (without the angle brackets). QMTP and QMQP addresses are raw bytes
// (qmtp.txt, "Recipient and sender addresses"): a local part that is not a dot-string, such as
// "Hate.The Quoting" or "\Backslashes!", is sent as a quoted-string with '"' and
// '\' escaped. Bytes of 0x80 and above pass as they are (SMTPUTF8). Not
// every raw address has an SMTP form: check QuotableSMTP first.
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

// QuotableSMTP reports whether QuoteSMTP(addr) is a valid RFC 5321 (with
// RFC 6531 UTF-8) mailbox that can go into MAIL FROM or RCPT TO as it is.
// QMTP and QMQP addresses are arbitrary bytes, and QuoteSMTP cannot express
// every byte: control characters (CR, LF, NUL, TAB, DEL) have no
// representation even inside a quoted-string, and the domain is never
// quoted, so a domain holding a space or '>' would end the address early and
// smuggle parameters into the command. A sender for which this is false
// must not be sent; a recipient gets a permanent failure (StatusBadRecipient
// fits). The empty address (the null sender) is quotable as "<>"; an
// address without '@' (such as "postmaster") is quotable if its local part
// is.
func QuotableSMTP(addr string) bool {
	if addr == "" {
		return true
	}
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	if strings.IndexByte(addr, '@') < 0 {
		return true
	}
	_, domain := Split(addr)
	return validSMTPDomain(domain)
}

// validSMTPDomain reports whether d is an RFC 5321 Domain (dot-separated
// labels of letters, digits, inner hyphens and UTF-8; no trailing root dot,
// which the grammar does not allow) or an address-literal "[...]" with
// dcontent inside.
func validSMTPDomain(d string) bool {
	if len(d) >= 2 && d[0] == '[' && d[len(d)-1] == ']' {
		for i := 1; i < len(d)-1; i++ {
			if c := d[i]; c < 33 || c > 126 || c == '[' || c == ']' || c == '\\' {
				return false
			}
		}
		return len(d) > 2
	}
	if d == "" {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c >= 0x80:
			default:
				return false
			}
		}
	}
	return true
}
