package inject

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func FuzzParseAddressList(f *testing.F) {
	for _, s := range []string{"a@x, b@y", `"a, b" <c@d>`, "g: a@x;", "(((", `"\`, "<@a:b@c>", "root"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, a := range ParseAddressList(s) {
			if a == "" {
				t.Fatalf("%q gave an empty address", s)
			}
		}
	})
}

// FuzzCompose: whatever comes in, the spooled text has the size reported,
// ends in a newline, has no CR LF of the input left, and the header is
// separated from the body.
func FuzzCompose(f *testing.F) {
	for _, s := range []string{"Subject: x\r\n\r\nbody\r\n", "no header", "To: a@b\n", "From x\nFrom: y\n\n", ".\n", "a: b\n c\n\n\r"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, in string, t_ bool) {
		c := testComposer()
		c.MaxMessageBytes = 1 << 20
		m, err := c.Compose(&Options{ExtractRecipients: t_, Recipients: []string{"a@x"}}, strings.NewReader(in))
		if err != nil {
			if ExitOf(err) == ExitTempFail {
				t.Fatalf("temporary failure on input: %v", err)
			}
			return
		}
		defer m.Close()
		text, _ := io.ReadAll(m.Reader())
		if int64(len(text)) != m.Size || len(text) == 0 || text[len(text)-1] != '\n' {
			t.Fatalf("size %d, text %q", m.Size, text)
		}
		// CR LF became LF; one is left only where CR CR LF came in (qmail's
		// rule: CR CR LF is CR LF), or CR CR at the end.
		if bytes.Contains(text, []byte("\r\n")) && !strings.Contains(in, "\r\r") {
			t.Fatalf("CR LF left in %q", text)
		}
		if !bytes.Contains(text, []byte("\n\n")) {
			t.Fatalf("no header/body separator in %q", text)
		}
	})
}
