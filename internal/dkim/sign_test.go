package dkim

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"
	"testing/iotest"
)

func dualSigner(t testing.TB) (*Signer, map[string]string) {
	r1, _, ed := testKeys(t)
	keys := []Key{{Selector: "r2026", Signer: r1}, {Selector: "e2026", Signer: ed}}
	s := mustSigner(t, Options{Domains: []Domain{{Name: "example.net", Keys: keys, Subdomains: true}}})
	return s, records(t, "example.net", keys...)
}

func TestSignDualVerifies(t *testing.T) {
	s, recs := dualSigner(t)
	for _, msg := range []string{testMsg, crlf(testMsg)} {
		out, res := signMsg(t, s, []byte(msg))
		if res.Domain != "example.net" || len(res.Selectors) != 2 || res.Skipped != "" {
			t.Fatalf("result %+v", res)
		}
		if strings.Contains(msg, "\r\n") != bytes.Contains(res.Header, []byte("\r\n")) {
			t.Errorf("signature fields do not use the message's line ends: %q", res.Header)
		}
		// go-msgauth's verifier wants the message as sent: CR LF.
		wire := bytes.ReplaceAll(bytes.ReplaceAll(out, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
		for i, err := range goVerify(t, wire, recs) {
			if err != nil {
				t.Errorf("signature %d: %v", i, err)
			}
		}
	}
}

func TestSignTags(t *testing.T) {
	s, _ := dualSigner(t)
	_, res := signMsg(t, s, []byte(testMsg))
	h := strings.ToLower(strings.Join(strings.Fields(string(res.Header)), ""))
	for _, want := range []string{"c=relaxed/relaxed", "a=rsa-sha256", "a=ed25519-sha256", "d=example.net", "s=r2026", "s=e2026",
		"h=from:from:subject:date:to:message-id"} {
		if !strings.Contains(h, want) {
			t.Errorf("signature lacks %q:\n%s", want, res.Header)
		}
	}
	for _, bad := range []string{";l=", " l=", "received"} {
		if strings.Contains(h, bad) {
			t.Errorf("signature has %q:\n%s", bad, res.Header)
		}
	}
}

func TestOversignedFromBreaksOnSecondFrom(t *testing.T) {
	s, recs := dualSigner(t)
	out, _ := signMsg(t, s, []byte(crlf(testMsg)))
	forged := bytes.Replace(out, []byte("To: "), []byte("From: boss@example.net\r\nTo: "), 1)
	for i, err := range goVerify(t, forged, recs) {
		if err == nil {
			t.Errorf("signature %d still verifies with a second From: added", i)
		}
	}
	// A trace field added in transit does not break it.
	relayed := append([]byte("Received: from hub by mx\r\n"), out...)
	for i, err := range goVerify(t, relayed, recs) {
		if err != nil {
			t.Errorf("signature %d broken by a Received line: %v", i, err)
		}
	}
}

func TestDomainChoice(t *testing.T) {
	r1, _, ed := testKeys(t)
	s := mustSigner(t, Options{Domains: []Domain{
		{Name: "example.net", Keys: []Key{{Selector: "a", Signer: ed}}, Subdomains: true},
		{Name: "Example.ORG.", Keys: []Key{{Selector: "b", Signer: r1}}},
	}})
	tests := []struct {
		from, domain, skipped string
	}{
		{"root@example.net", "example.net", ""},
		{"root@app17.example.net", "example.net", ""},
		{"\"Ops, Team\" <ops@deep.app17.EXAMPLE.net>", "example.net", ""},
		{"x@example.org", "example.org", ""},
		{"x@sub.example.org", "", "no signing key for sub.example.org"},
		{"x@example.com", "", "no signing key for example.com"},
		{"bad \"quote <x@example.net>", "example.net", ""},
		{"a@example.net, b@example.org", "", "more than one domain"},
		{"undisclosed", "", "no domain"},
	}
	for _, tt := range tests {
		_, res := signMsg(t, s, []byte("From: "+tt.from+"\nSubject: x\n\nbody\n"))
		if res.Domain != tt.domain || !strings.Contains(res.Skipped, tt.skipped) || (tt.skipped == "") != (res.Header != nil) {
			t.Errorf("From: %s: got %+v, want domain %q skipped %q", tt.from, res, tt.domain, tt.skipped)
		}
	}
	for _, msg := range []string{"Subject: x\n\nbody\n", "From: a@example.net\nFrom: b@example.net\n\nbody\n"} {
		if _, res := signMsg(t, s, []byte(msg)); res.Header != nil || res.Skipped == "" {
			t.Errorf("%q signed: %+v", msg, res)
		}
	}
}

func TestAlreadySignedNotSignedAgain(t *testing.T) {
	s, recs := dualSigner(t)
	once, _ := signMsg(t, s, []byte(crlf(testMsg)))
	// A second hub adds its Received line and passes the message again.
	again := append([]byte("Received: from hub1 by hub2\r\n"), once...)
	out, res := signMsg(t, s, again)
	if res.Header != nil || len(res.Kept) != 2 || len(res.Selectors) != 0 || !res.Signed() {
		t.Fatalf("signed again: %+v", res)
	}
	for i, err := range goVerify(t, out, recs) {
		if err != nil {
			t.Errorf("signature %d: %v", i, err)
		}
	}

	// A changed body invalidates the old signatures: sign anew.
	changed := bytes.Replace(again, []byte("Backup finished."), []byte("Backup FAILED."), 1)
	if _, res := signMsg(t, s, changed); len(res.Selectors) != 2 || len(res.Kept) != 0 {
		t.Errorf("changed body: %+v", res)
	}

	// Only one of the two keys signed before (a key added since): the other signs now.
	r1, _, ed := testKeys(t)
	only := mustSigner(t, Options{Domains: []Domain{{Name: "example.net", Keys: []Key{{Selector: "e2026", Signer: ed}}}}})
	half, _ := signMsg(t, only, []byte(crlf(testMsg)))
	if _, res := signMsg(t, s, half); len(res.Kept) != 1 || len(res.Selectors) != 1 || res.Selectors[0] != "r2026" {
		t.Errorf("half signed: %+v", res)
	}

	// Same d= and s= but another key (forged, or an old key): not ours, sign.
	_, r2, _ := testKeys(t)
	other := mustSigner(t, Options{Domains: []Domain{{Name: "example.net", Keys: []Key{{Selector: "r2026", Signer: r2}}}}})
	forged, _ := signMsg(t, other, []byte(crlf(testMsg)))
	if _, res := signMsg(t, s, forged); len(res.Selectors) != 2 {
		t.Errorf("forged signature trusted: %+v", res)
	}
	_ = r1
}

func TestStreamingInSmallPieces(t *testing.T) {
	s, recs := dualSigner(t)
	msg := []byte(crlf(testMsg))
	for _, r := range []func() *bytes.Reader{func() *bytes.Reader { return bytes.NewReader(msg) }} {
		res, err := s.Sign(iotest.OneByteReader(r()))
		if err != nil {
			t.Fatal(err)
		}
		out := append(res.Header, msg...)
		for i, err := range goVerify(t, out, recs) {
			if err != nil {
				t.Errorf("one byte at a time, signature %d: %v", i, err)
			}
		}
		// Split right inside the blank line that ends the header.
		cut := bytes.Index(msg, []byte("\r\n\r\n")) + 3
		w := s.NewWriter()
		w.Write(msg[:cut])
		w.Write(msg[cut:])
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		for i, err := range goVerify(t, append(w.Result().Header, msg...), recs) {
			if err != nil {
				t.Errorf("split in the blank line, signature %d: %v", i, err)
			}
		}
	}
}

func TestSignTo(t *testing.T) {
	s, recs := dualSigner(t)
	var out bytes.Buffer
	res, err := s.SignTo(&out, bytes.NewReader([]byte(crlf(testMsg))))
	if err != nil || !bytes.HasPrefix(out.Bytes(), res.Header) || !bytes.HasSuffix(out.Bytes(), []byte(crlf(testMsg))) {
		t.Fatalf("SignTo: %v %q", err, out.String())
	}
	for i, err := range goVerify(t, out.Bytes(), recs) {
		if err != nil {
			t.Errorf("signature %d: %v", i, err)
		}
	}
}

func TestHeaderOnlyAndOversizedHeader(t *testing.T) {
	s, recs := dualSigner(t)
	for _, msg := range []string{"From: a@example.net\r\nSubject: no body\r\n", "From: a@example.net\r\nSubject: no newline"} {
		res, err := s.Sign(strings.NewReader(msg))
		if err != nil || len(res.Selectors) != 2 {
			t.Fatalf("%q: %v %+v", msg, err, res)
		}
		wire := string(res.Header) + msg
		if !strings.HasSuffix(wire, "\r\n") {
			wire += "\r\n"
		}
		for i, err := range goVerify(t, []byte(wire+"\r\n"), recs) {
			if err != nil {
				t.Errorf("%q: signature %d: %v", msg, i, err)
			}
		}
	}

	small := mustSigner(t, Options{Domains: s.opts(), MaxHeaderBytes: 100})
	big := "From: a@example.net\nX-Long: " + strings.Repeat("x", 200) + "\n\nbody\n"
	if _, res := signMsg(t, small, []byte(big)); res.Header != nil || !strings.Contains(res.Skipped, "larger than 100 bytes") {
		t.Errorf("oversized header: %+v", res)
	}
}

// opts returns the signer's domains, for building a variant.
func (s *Signer) opts() []Domain {
	var ds []Domain
	for _, d := range s.domains {
		ds = append(ds, d.Domain)
	}
	return ds
}

func TestNewRejectsBadOptions(t *testing.T) {
	_, _, ed := testKeys(t)
	k := []Key{{Selector: "s", Signer: ed}}
	for _, opt := range []Options{
		{},
		{Domains: []Domain{{Name: "example.net"}}},
		{Domains: []Domain{{Name: "localhost", Keys: k}}},
		{Domains: []Domain{{Name: "a b.net", Keys: k}}},
		{Domains: []Domain{{Name: "example.net", Keys: k}, {Name: "EXAMPLE.net", Keys: k}}},
		{Domains: []Domain{{Name: "example.net", Keys: append(k, k...)}}},
		{Domains: []Domain{{Name: "example.net", Keys: []Key{{Selector: "bad sel", Signer: ed}}}}},
		{Domains: []Domain{{Name: "example.net", Keys: k}}, Headers: []string{"Subject:"}},
	} {
		if _, err := New(opt); err == nil {
			t.Errorf("New(%+v) accepted", opt)
		}
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Domains: []Domain{{Name: "example.net", Keys: []Key{{Selector: "s", Signer: small}}}}}); err == nil {
		t.Error("a 1024-bit RSA key accepted")
	}
	// From is added to a header list that lacks it.
	s := mustSigner(t, Options{Domains: []Domain{{Name: "example.net", Keys: k}}, Headers: []string{"Subject"}})
	if _, res := signMsg(t, s, []byte(testMsg)); !strings.Contains(string(res.Header), "h=From:From:Subject") {
		t.Errorf("header list: %s", res.Header)
	}
}
