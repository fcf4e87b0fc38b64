package dkim

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"sync"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

var (
	keysOnce        sync.Once
	rsaKey, rsaKey2 *rsa.PrivateKey
	edKey           ed25519.PrivateKey
	keysErr         error
)

// testKeys generates the test keys once per run (RSA generation is slow).
func testKeys(t testing.TB) (rsa1, rsa2 *rsa.PrivateKey, ed ed25519.PrivateKey) {
	t.Helper()
	keysOnce.Do(func() {
		if rsaKey, keysErr = rsa.GenerateKey(rand.Reader, 2048); keysErr != nil {
			return
		}
		if rsaKey2, keysErr = rsa.GenerateKey(rand.Reader, 2048); keysErr != nil {
			return
		}
		_, edKey, keysErr = ed25519.GenerateKey(rand.Reader)
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	return rsaKey, rsaKey2, edKey
}

func mustSigner(t testing.TB, opt Options) *Signer {
	t.Helper()
	s, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// records maps "sel._domainkey.dom" to TXT records for a signer's keys.
func records(t testing.TB, domain string, keys ...Key) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, k := range keys {
		txt, err := TXTRecord(k.Signer.Public())
		if err != nil {
			t.Fatal(err)
		}
		m[k.Selector+"._domainkey."+domain] = txt
	}
	return m
}

// goVerify checks msg's signatures with go-msgauth and the given records;
// it returns one error (or nil) per signature.
func goVerify(t testing.TB, msg []byte, recs map[string]string) []error {
	t.Helper()
	vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(msg), &msgdkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if r, ok := recs[strings.ToLower(name)]; ok {
				return []string{r}, nil
			}
			return nil, errors.New("no record")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	for _, v := range vs {
		errs = append(errs, v.Err)
	}
	return errs
}

func signMsg(t testing.TB, s *Signer, msg []byte) ([]byte, Result) {
	t.Helper()
	res, err := s.Sign(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	return append(append([]byte{}, res.Header...), msg...), res
}

var _ crypto.Signer = ed25519.PrivateKey(nil)

const testMsg = "From: App Seventeen <root@example.net>\n" +
	"To: ops@example.org\n" +
	"Subject: nightly report,\n" +
	"  folded over two lines\n" +
	"Date: Wed, 02 Dec 2026 03:00:00 +0000\n" +
	"Message-ID: <1@app17.example.net>\n" +
	"Received: from app17 by hub\n" +
	"\n" +
	"Backup finished.   \n" +
	"\tTwo tabs\t\there.\n" +
	"\n" +
	"\n"

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
