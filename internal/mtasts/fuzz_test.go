package mtasts

import "testing"

// FuzzParse: any policy file parses or is refused, never panics, and what
// parses is complete.
func FuzzParse(f *testing.F) {
	f.Add([]byte(enforce))
	f.Add([]byte("version: STSv1\nmode: none\nmax_age: 0\n"))
	f.Add([]byte("version: STSv1\r\nmode: testing\r\nmx: *.example\r\nmax_age: 31557600\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		if p.Mode != ModeEnforce && p.Mode != ModeTesting && p.Mode != ModeNone || p.MaxAge < 0 || p.MaxAge > MaxMaxAge ||
			p.Mode != ModeNone && len(p.MX) == 0 {
			t.Fatalf("Parse(%q) = %+v", b, p)
		}
		p.Allows("mx.example")
	})
}
