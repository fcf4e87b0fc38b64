package mail

import "testing"

func TestOneLineOneWord(t *testing.T) {
	for _, c := range []struct{ in, line, word string }{
		{"", "", ""},
		{"plain", "plain", "plain"},
		{"a b", "a b", "a?b"},
		{"x\r\nBcc: y", "x??Bcc: y", "x??Bcc:?y"},
		{"tab\there\x7f", "tab?here?", "tab?here?"},
		{"ünïcode ok", "ünïcode ok", "ünïcode?ok"},
	} {
		if got := OneLine(c.in); got != c.line {
			t.Errorf("OneLine(%q) = %q, want %q", c.in, got, c.line)
		}
		if got := OneWord(c.in); got != c.word {
			t.Errorf("OneWord(%q) = %q, want %q", c.in, got, c.word)
		}
	}
}
