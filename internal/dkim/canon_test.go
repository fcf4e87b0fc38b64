package dkim

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// msgauthBodyHash is go-msgauth's relaxed body hash of body, read from the
// bh= tag of its signature.
func msgauthBodyHash(t *testing.T, body []byte) string {
	t.Helper()
	_, _, ed := testKeys(t)
	s, err := msgdkim.NewSigner(&msgdkim.SignOptions{Domain: "example.net", Selector: "s", Signer: ed,
		HeaderCanonicalization: msgdkim.CanonicalizationRelaxed, BodyCanonicalization: msgdkim.CanonicalizationRelaxed})
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("From: a@example.net\r\n\r\n"))
	s.Write(body)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	sig := strings.Join(strings.Fields(s.Signature()), "")
	_, bh, _ := strings.Cut(sig, ";bh=")
	bh, _, _ = strings.Cut(bh, ";")
	return bh
}

// TestBodyHashMatchesGoMsgauth checks the relaxed body hash against
// go-msgauth's on bodies the fuzz targets seldom reach: larger than the
// buffer, long spans that go to the hash directly, thousands of empty
// lines, long runs of bare CRs, written whole and in pieces of every size.
func TestBodyHashMatchesGoMsgauth(t *testing.T) {
	bodies := map[string]string{
		"empty":            "",
		"one line":         "x",
		"text":             strings.Repeat("A line of a report,  with  double spaces\tand tabs. \r\n", 300),
		"long span":        strings.Repeat("x", 3*canonBufSize) + " end\r\n",
		"long span lf":     "start " + strings.Repeat("y", canonBufSize) + "\n" + strings.Repeat("z ", canonBufSize) + "\n",
		"empty lines":      "first\r\n" + strings.Repeat("\r\n", 5000) + "after\r\n" + strings.Repeat("\r\n \t\r\n", 3000),
		"bare crs":         "a" + strings.Repeat("\r", 40) + "b\r\r\n\r" + strings.Repeat("\n", 30) + "c \r \n",
		"trailing spaces":  strings.Repeat("line   \t \r\n", 1000) + "   ",
		"only whitespace":  " \t \r\n \r\n\t",
		"lf and crlf":      "one\ntwo\r\nthree\n\n\r\n",
		"cr at write ends": strings.Repeat("ab\r", 2000) + "\n",
		// Plain lines take plainLine's fast path; the others around them
		// do not, and a piece may end anywhere in either.
		"plain lines": strings.Repeat("A plain line, single spaces only.\r\n", 200) + strings.Repeat("lf line\n", 200) +
			"\r\n\r\n after empty lines\r\nx \r\n  two\r\nt\tab\r\nlast\r\n\r\n\r\n",
		"plain after ws": "x \r\ny\r\n \r\nz\r\n\t\r\nw\n",
	}
	for name, body := range bodies {
		want := msgauthBodyHash(t, []byte(body))
		for _, piece := range []int{len(body) + 1, 1, 2, 3, 7, 64, canonBufSize - 1, canonBufSize + 1} {
			var c bodyHash
			c.reset(sha256.New())
			b := []byte(body)
			for len(b) > 0 {
				n := min(piece, len(b))
				c.Write(b[:n])
				b = b[n:]
			}
			if got := base64.StdEncoding.EncodeToString(c.Sum()); got != want {
				t.Errorf("%s in pieces of %d: body hash %s, go-msgauth %s", name, piece, got, want)
			}
		}
	}
}

// TestCanonHeader checks the relaxed header form (RFC 6376 section 3.4.2).
func TestCanonHeader(t *testing.T) {
	for in, want := range map[string]string{
		"Subject: a  b\t c \r\n":       "subject:a b c\r\n",
		"SUBJECT :  x\r\n\t y\r\n":     "subject:x y\r\n",
		"To:\n":                        "to:\r\n",
		"From: <a@example.net>":        "from:<a@example.net>\r\n",
		"DKIM-Signature: v=1;\r\n\tb=": "dkim-signature:v=1; b=\r\n",
		"X-Odd\n":                      "x-odd:\r\n",
		"Content-Type: text/plain;\n charset=\"utf-8\"\n": "content-type:text/plain; charset=\"utf-8\"\r\n",
	} {
		if got := string(canonHeader(nil, []byte(in))); got != want {
			t.Errorf("canonHeader(%q) = %q, want %q", in, got, want)
		}
	}
	if !bytes.Equal(canonHeader([]byte("x"), []byte("A:b")), []byte("xa:b\r\n")) {
		t.Error("canonHeader does not append")
	}
}
