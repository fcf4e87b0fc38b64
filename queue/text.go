package queue

import "strings"

// wordSafe makes s one whitespace-free printable token.
func wordSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
