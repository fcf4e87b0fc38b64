package inject

import (
	"net/mail"
	"strings"
)

// ParseAddressList returns the addresses of an RFC 5322 address list (a To:,
// Cc: or Bcc: value, or a command-line argument), in order, as raw envelope
// addresses: angle brackets and comments gone, a quoted local part unquoted
// (`"john smith"@x` is john smith@x, as QMQP carries it).
//
// It is lenient the way sendmail must be with what programs write: groups
// ("team: a@x, b@y;", "undisclosed-recipients:;"), comments, display names
// with or without quotes, a missing closing '>', bare local names ("root",
// qualified later) and stray separators all work. Each mailbox is parsed by
// net/mail first and by hand when net/mail refuses it. A piece that holds no
// address at all (a display name alone) is dropped.
func ParseAddressList(s string) []string {
	var out []string
	for _, piece := range splitList(s) {
		if a, ok := mailboxAddress(piece); ok {
			out = append(out, a)
		}
	}
	return out
}

// splitList splits an address list into mailboxes at top-level commas and
// semicolons, dropping group names ("name:"), and keeping quoted strings,
// comments and <...> intact.
func splitList(s string) []string {
	var pieces []string
	var cur strings.Builder
	depth := 0 // comment nesting
	quoted, angle := false, false
	flush := func() {
		if p := strings.TrimSpace(cur.String()); p != "" {
			pieces = append(pieces, p)
		}
		cur.Reset()
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted:
			cur.WriteByte(c)
			if c == '\\' && i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			} else if c == '"' {
				quoted = false
			}
			continue
		case depth > 0:
			cur.WriteByte(c)
			switch c {
			case '\\':
				if i+1 < len(s) {
					i++
					cur.WriteByte(s[i])
				}
			case '(':
				depth++
			case ')':
				depth--
			}
			continue
		}
		switch c {
		case '"':
			quoted = true
		case '(':
			depth++
		case '<':
			angle = true
		case '>':
			angle = false
		case ',', ';':
			if !angle {
				flush()
				continue
			}
		case ':':
			if !angle {
				// A group's display name ends here; its members follow.
				cur.Reset()
				continue
			}
		}
		cur.WriteByte(c)
	}
	flush()
	return pieces
}

// mailboxAddress extracts the address of one mailbox.
func mailboxAddress(piece string) (string, bool) {
	if a, err := mail.ParseAddress(piece); err == nil {
		return a.Address, true
	}
	spec := piece
	if i := topLevelIndex(piece, '<'); i >= 0 {
		spec = piece[i+1:]
		if j := strings.IndexByte(spec, '>'); j >= 0 {
			spec = spec[:j]
		}
		// An obsolete source route "@a,@b:user@c" keeps only user@c.
		if strings.HasPrefix(spec, "@") {
			if k := strings.LastIndexByte(spec, ':'); k >= 0 {
				spec = spec[k+1:]
			}
		}
	} else {
		spec = stripComments(spec)
	}
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return "", false
	}
	if a, err := mail.ParseAddress("<" + spec + ">"); err == nil {
		return a.Address, true
	}
	if !strings.ContainsAny(spec, " \t") {
		a := strings.Trim(spec, "<>")
		return a, a != ""
	}
	// "John Doe john@x" and the like: the word with an '@'.
	for _, w := range strings.Fields(spec) {
		if a := strings.Trim(w, "<>"); strings.Contains(a, "@") {
			return a, true
		}
	}
	return "", false
}

// topLevelIndex is strings.IndexByte outside quoted strings and comments.
func topLevelIndex(s string, b byte) int {
	depth, quoted := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			i++
		case quoted:
			if c == '"' {
				quoted = false
			}
		case c == '"' && depth == 0:
			quoted = true
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0 && c == b:
			return i
		}
	}
	return -1
}

// stripComments removes (comments), nested ones included, outside quoted
// strings.
func stripComments(s string) string {
	var b strings.Builder
	depth, quoted := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if depth == 0 && !quoted {
			switch c {
			case '(':
				depth++
				b.WriteByte(' ')
				continue
			case '"':
				quoted = true
			}
			b.WriteByte(c)
			continue
		}
		if quoted {
			b.WriteByte(c)
			if c == '\\' && i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			} else if c == '"' {
				quoted = false
			}
			continue
		}
		switch c {
		case '\\':
			i++
		case '(':
			depth++
		case ')':
			depth--
		}
	}
	return b.String()
}
