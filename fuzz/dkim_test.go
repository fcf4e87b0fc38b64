package fuzz

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/qmgate/qmgate/internal/dkim"
)

// tagValue returns the value of tag t in a DKIM-Signature field, folding
// whitespace removed.
func tagValue(field, t string) string {
	_, v, _ := strings.Cut(field, ":")
	for _, kv := range strings.Split(v, ";") {
		k, val, ok := strings.Cut(kv, "=")
		if ok && strings.TrimSpace(k) == t {
			return strings.Join(strings.Fields(val), "")
		}
	}
	return ""
}

// FuzzDKIMCanonical is a differential test of qmgate's DKIM relaxed
// canonicalization (RFC 6376 section 3.4) against go-msgauth's, on any
// header and body: the body hash (bh=) qmgate computes must equal the one
// go-msgauth's Signer computes for the same bytes, and go-msgauth's verifier,
// which canonicalizes the header itself, must accept qmgate's signature.
func FuzzDKIMCanonical(f *testing.F) {
	for _, s := range [][2]string{
		{"From: a@example.net\nSubject:  two  spaces \n", "x  \t y \n\n\n"},
		{"From: a@example.net\r\nSubject: folded\r\n\tover\r\n lines\r\n", "line\r\n\r\n"},
		{"FROM :a@example.net\nTo: b\nto: c\n", ""},
		{"From: a@example.net\n", "bare\rcr \r\n\r \nend"},
		{"From: a@example.net\n", " \t\n \n"},
	} {
		f.Add([]byte(s[0]), []byte(s[1]), 5)
	}
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	k := dkim.Key{Selector: "s", Signer: key}
	s, err := dkim.New(dkim.Options{Domains: []dkim.Domain{{Name: "example.net", Keys: []dkim.Key{k}}}})
	if err != nil {
		f.Fatal(err)
	}
	txt, err := dkim.TXTRecord(key.Public())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, hdr, body []byte, cut int) {
		// Only messages a hub would carry: a header that starts with
		// From: in our domain, without a blank line in it.
		if bytes.Contains(hdr, []byte("\n\n")) || bytes.Contains(hdr, []byte("\n\r\n")) || !bytes.HasSuffix(hdr, []byte("\n")) ||
			bytes.HasPrefix(hdr, []byte(" ")) || bytes.HasPrefix(hdr, []byte("\t")) {
			return
		}
		nl := "\n"
		if bytes.HasSuffix(hdr, []byte("\r\n")) {
			nl = "\r\n"
		}
		msg := append(append(append([]byte("From: x@example.net"+nl), hdr...), nl...), body...)
		if cut < 0 || cut > len(msg) {
			cut = len(msg) / 2
		}
		w := s.NewWriter()
		w.Write(msg[:cut])
		w.Write(msg[cut:])
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		res := w.Result()
		if res.Header == nil {
			return // more than one From:, say
		}
		ours := tagValue(string(res.Header), "bh")

		theirs, err := msgdkim.NewSigner(&msgdkim.SignOptions{
			Domain: "example.net", Selector: "s", Signer: key,
			HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
			BodyCanonicalization:   msgdkim.CanonicalizationRelaxed,
			HeaderKeys:             []string{"From"},
		})
		if err != nil {
			t.Fatal(err)
		}
		theirs.Write(msg)
		if err := theirs.Close(); err != nil {
			return // go-msgauth cannot read this header
		}
		if want := tagValue(theirs.Signature(), "bh"); ours != want {
			t.Fatalf("body hash %s, go-msgauth %s\n%q", ours, want, msg)
		}

		signed := append(append([]byte{}, res.Header...), msg...)
		vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(signed), &msgdkim.VerifyOptions{
			LookupTXT: func(name string) ([]string, error) {
				if strings.EqualFold(name, "s._domainkey.example.net") {
					return []string{txt}, nil
				}
				return nil, errors.New("no record")
			},
		})
		if err != nil {
			return // go-msgauth cannot read this message
		}
		if len(vs) != 1 || vs[0].Err != nil {
			t.Fatalf("go-msgauth does not verify our signature: %v\n%q", vs[0].Err, signed)
		}
	})
}
