package rewrite

import "strings"

// Change is one rewritten address.
type Change struct {
	Field string // "sender", "recipient", "From:", "Sender:" or "Reply-To:"
	Old   string
	New   string
}

// Changes lists what one message had rewritten.
type Changes []Change

// MaxCommentBytes bounds the text Comment returns.
const MaxCommentBytes = 400

// Comment renders the changes for the Received line's comment, e.g.
// "rewritten: sender root@app17.internal to ops@example.net". Bytes that
// could end the comment or the line, or that are not printable ASCII, become
// '?'; a long list is cut with "...". It returns "" when nothing changed.
func (c Changes) Comment() string {
	if len(c) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("rewritten:")
	for i, x := range c {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(" " + x.Field + " " + safe(x.Old) + " to " + safe(x.New))
		if b.Len() > MaxCommentBytes {
			s := b.String()[:MaxCommentBytes-3]
			return s + "..."
		}
	}
	return b.String()
}

func safe(s string) string {
	if s == "" {
		s = "<>"
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x21 || c > 0x7e || c == '(' || c == ')' || c == '\\' {
			b[i] = '?'
		}
	}
	return string(b)
}
