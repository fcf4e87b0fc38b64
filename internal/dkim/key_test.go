package dkim

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeygenRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		algo string
		bits int
	}{{"ed25519", 0}, {"rsa", 0}, {"rsa", 3072}} {
		priv, txt, err := Keygen(tt.algo, tt.bits)
		if err != nil {
			t.Fatal(err)
		}
		k, err := ParseKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := TXTRecord(k.Public()); got != txt {
			t.Errorf("%s: record %q does not match the key's %q", tt.algo, txt, got)
		}
		if !strings.HasPrefix(txt, "v=DKIM1; k="+tt.algo+"; p=") {
			t.Errorf("%s: record %q", tt.algo, txt)
		}
		p, _ := base64.StdEncoding.DecodeString(txt[strings.Index(txt, "p=")+2:])
		switch tt.algo {
		case "ed25519":
			if len(p) != ed25519.PublicKeySize { // RFC 8463 section 4: the raw key
				t.Errorf("ed25519 p= holds %d bytes", len(p))
			}
		case "rsa":
			pub, err := x509.ParsePKIXPublicKey(p)
			want := tt.bits
			if want == 0 {
				want = DefaultRSABits
			}
			if err != nil || pub.(*rsa.PublicKey).N.BitLen() != want {
				t.Errorf("rsa p=: %v", err)
			}
		}
		for _, l := range strings.Split(ZoneLine("s1", "example.net.", txt), "\"") {
			if len(l) > 255 {
				t.Errorf("zone line has a string of %d bytes", len(l))
			}
		}
	}
	for _, bad := range []struct {
		algo string
		bits int
	}{{"dsa", 0}, {"rsa", 1024}, {"rsa", 8192}} {
		if _, _, err := Keygen(bad.algo, bad.bits); err == nil {
			t.Errorf("Keygen(%s, %d) accepted", bad.algo, bad.bits)
		}
	}
}

func TestZoneLine(t *testing.T) {
	got := ZoneLine("s1", "example.net", "v=DKIM1; k=ed25519; p=AAAA")
	want := `s1._domainkey.example.net. IN TXT ( "v=DKIM1; k=ed25519; p=AAAA" )`
	if got != want {
		t.Errorf("got %s", got)
	}
}

func TestLoadKeyPermissions(t *testing.T) {
	dir := t.TempDir()
	priv, _, err := Keygen("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "k.pem")
	if err := WriteKeyFile(path, priv); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", st.Mode())
	}
	if err := WriteKeyFile(path, priv); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("WriteKeyFile replaced a key: %v", err)
	}
	k, err := LoadKey("s1", path)
	if err != nil || k.Algo() != "ed25519" || k.Selector != "s1" {
		t.Fatalf("LoadKey: %v %+v", err, k)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660} {
		os.Chmod(path, mode)
		_, err := LoadKey("s1", path)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	os.Chmod(path, 0o600)
	if _, err := LoadKey("bad selector", path); err == nil {
		t.Error("bad selector accepted")
	}
	if _, err := LoadKey("s1", filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := LoadKey("s1", dir); err == nil {
		t.Error("directory accepted")
	}
}

func TestParseKeyFormats(t *testing.T) {
	r, _, _ := testKeys(t)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(r)})
	if k, err := ParseKey(pkcs1); err != nil || k.(*rsa.PrivateKey).N.Cmp(r.N) != 0 {
		t.Errorf("PKCS #1: %v", err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weak := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(small)})
	if _, err := ParseKey(weak); err == nil || !strings.Contains(err.Error(), "1024 bits") {
		t.Errorf("1024-bit key: %v", err)
	}
	for _, bad := range []string{"", "not pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"} {
		if _, err := ParseKey([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
