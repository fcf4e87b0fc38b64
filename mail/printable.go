package mail

import "strings"

// OneLine keeps s on one line for a header field, a log or a person's
// screen: control characters (CR and LF among them) and DEL become '?'.
// A clean s is returned as it is.
func OneLine(s string) string {
	if strings.IndexFunc(s, isControl) < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if isControl(r) {
			return '?'
		}
		return r
	}, s)
}

// OneWord makes s one whitespace-free token: spaces, control characters
// and DEL become '?'. A clean s is returned as it is.
func OneWord(s string) string {
	bad := func(r rune) bool { return r == ' ' || isControl(r) }
	if strings.IndexFunc(s, bad) < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if bad(r) {
			return '?'
		}
		return r
	}, s)
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
