package dkim

import (
	"bytes"
	"testing"

	"github.com/qmgate/qmgate/mail"
)

// FuzzWriter feeds any bytes, in two pieces split anywhere, through the
// Writer: no panic, no error, and a signature it makes verifies over exactly
// the bytes it would send.
func FuzzWriter(f *testing.F) {
	for _, s := range []string{testMsg, crlf(testMsg), "From: a@example.net\n", "From: a@x.example.net\r\n\r\n\r\n", "\n\n", "From: <a@example.net\nTo: b\n\nx"} {
		f.Add([]byte(s), 7)
	}
	_, _, ed := testKeys(f)
	keys := []Key{{Selector: "e", Signer: ed}}
	s := mustSigner(f, Options{Domains: []Domain{{Name: "example.net", Keys: keys, Subdomains: true}}, MaxHeaderBytes: 4096})
	recs := records(f, "example.net", keys...)
	f.Fuzz(func(t *testing.T, msg []byte, cut int) {
		if cut < 0 || cut > len(msg) {
			cut = len(msg) / 2
		}
		w := s.NewWriter()
		w.Write(msg[:cut])
		w.Write(msg[cut:])
		if err := w.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		res := w.Result()
		if res.Header == nil {
			if res.Skipped == "" {
				t.Fatalf("neither signed nor a reason: %+v", res)
			}
			return
		}
		if !bytes.Contains(msg, []byte("\n")) || bytes.ContainsRune(msg, '\r') && !bytes.Contains(msg, []byte("\r\n")) {
			return // not a message a hub accepts (no line end, or bare CRs)
		}
		out := append(append([]byte{}, res.Header...), msg...)
		if mail.HeaderEnd(msg, 0) < 0 {
			// All header: go-msgauth's verifier wants the blank line after it.
			if !bytes.HasSuffix(out, []byte("\n")) {
				out = append(out, '\n')
			}
			out = append(out, '\n')
		}
		for i, err := range goVerify(t, out, recs) {
			if err != nil {
				t.Fatalf("signature %d does not verify: %v\n%q", i, err, out)
			}
		}
	})
}
