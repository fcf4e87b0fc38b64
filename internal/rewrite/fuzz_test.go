package rewrite

import (
	"bytes"
	"io"
	"testing"

	"github.com/qmgate/qmgate/mail"
)

// FuzzHeader checks what header rewriting promises for any input: no panic,
// no line added or removed, every field other than From:, Sender: and
// Reply-To: byte for byte as it was, and the Reader's output the same as
// Header's.
func FuzzHeader(f *testing.F) {
	for _, s := range []string{
		"From: root@app17.internal\n\nbody\n",
		"From: \"a, b\" <x@web3.internal> (c)\r\nReply-To: g: a@web3.internal, <b@x.internal>;\r\n\r\n",
		"Sender: (unterminated x@web3.internal\n",
		"From:<@route,@r2:x@web3.internal>\n\n",
		"\n\nFrom: x@web3.internal\n",
	} {
		f.Add([]byte(s))
	}
	rw, err := Compile(Rules{
		Users:   []UserRule{{Match: "root@*", Address: "ops@example.net"}},
		Hosts:   []HostRule{{Match: "*.internal", Domain: "example.net"}},
		Headers: true,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		got, ch := rw.Header(msg)
		if bytes.Count(got, []byte("\n")) != bytes.Count(msg, []byte("\n")) || bytes.Count(got, []byte("\r")) != bytes.Count(msg, []byte("\r")) {
			t.Fatalf("line ends changed:\n%q\n%q", msg, got)
		}
		if ch == nil && !bytes.Equal(got, msg) {
			t.Fatalf("changed without a change listed:\n%q\n%q", msg, got)
		}
		other := func(b []byte) [][]byte {
			var out [][]byte
			for i := 0; i < len(b); {
				e := fieldEnd(b, i)
				if e == i {
					out = append(out, b[i:]) // the blank line and the body
					break
				}
				c := bytes.IndexByte(b[i:e], ':')
				if c <= 0 || !isAddrField(b[i:i+c]) {
					out = append(out, b[i:e])
				}
				i = e
			}
			return out
		}
		a, b := other(msg), other(got)
		if len(a) != len(b) {
			t.Fatalf("fields added or lost:\n%q\n%q", msg, got)
		}
		for i := range a {
			if !bytes.Equal(a[i], b[i]) {
				t.Fatalf("field %q became %q", a[i], b[i])
			}
		}
		viaReader, err := io.ReadAll(rw.NewReader(bytes.NewReader(msg)))
		if err != nil {
			t.Fatal(err)
		}
		end := mail.HeaderEnd(msg, 0)
		want := got
		if end >= 0 {
			h, _ := rw.Header(msg[:end])
			want = append(h[:len(h):len(h)], msg[end:]...)
		}
		if !bytes.Equal(viaReader, want) {
			t.Fatalf("Reader and Header differ:\n%q\n%q", viaReader, want)
		}
	})
}

func isAddrField(name []byte) bool {
	_, ok := headerFields[string(bytes.ToLower(bytes.TrimSpace(name)))]
	return ok
}
