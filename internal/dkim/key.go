package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Key sizes for RSA keys. RFC 8301 section 3.2: verifiers must accept
// 1024 to 4096 bits; signers should use at least 2048.
const (
	MinRSABits     = 2048 // smallest RSA key loaded or generated
	MaxRSABits     = 4096 // largest RSA key loaded or generated
	DefaultRSABits = 2048

	// MaxKeyFileBytes bounds a key file read from disk.
	MaxKeyFileBytes = 64 << 10
)

// Key algorithms, as written in the k= tag of the DNS record and on the
// keygen command line.
const (
	AlgoRSA     = "rsa"
	AlgoEd25519 = "ed25519"
)

// Key is one signing key with its selector: the DNS record is published at
// Selector._domainkey.DOMAIN.
type Key struct {
	Selector string
	Signer   crypto.Signer // *rsa.PrivateKey or ed25519.PrivateKey
}

// Algo returns the key's algorithm, "rsa" or "ed25519".
func (k Key) Algo() string { return keyAlgo(k.Signer.Public()) }

func keyAlgo(pub crypto.PublicKey) string {
	switch pub.(type) {
	case *rsa.PublicKey:
		return AlgoRSA
	case ed25519.PublicKey:
		return AlgoEd25519
	}
	return ""
}

// LoadKey reads a PEM private key file for selector. It refuses a file that
// its group or other users may read or write: a DKIM key lets anyone who holds
// it send mail in the domain's name.
func LoadKey(selector, path string) (Key, error) {
	if err := checkSelector(selector); err != nil {
		return Key{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return Key{}, fmt.Errorf("dkim key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Key{}, fmt.Errorf("dkim key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Key{}, fmt.Errorf("dkim key %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return Key{}, fmt.Errorf("dkim key %s: mode %04o lets other users read or change it; it must be readable by its owner only (chmod 600 %s)", path, perm, path)
	}
	if st.Size() > MaxKeyFileBytes {
		return Key{}, fmt.Errorf("dkim key %s: larger than %d bytes, not a key file", path, MaxKeyFileBytes)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return Key{}, fmt.Errorf("dkim key %s: %w", path, err)
	}
	s, err := ParseKey(b)
	if err != nil {
		return Key{}, fmt.Errorf("dkim key %s: %w", path, err)
	}
	return Key{Selector: selector, Signer: s}, nil
}

// ParseKey parses a PEM private key: PKCS #8 ("PRIVATE KEY", RSA or Ed25519,
// as written by Keygen and by openssl genpkey) or PKCS #1 ("RSA PRIVATE KEY",
// as written by opendkim-genkey).
func ParseKey(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM private key found")
	}
	var k any
	var err error
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("bad private key: %w", err)
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		if n := k.N.BitLen(); n < MinRSABits || n > MaxRSABits {
			return nil, fmt.Errorf("RSA key of %d bits; DKIM keys must have %d to %d bits", n, MinRSABits, MaxRSABits)
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, errors.New("unsupported key type (DKIM keys are RSA or Ed25519)")
}

// Keygen makes a new private key, PEM-encoded as PKCS #8, and the value of
// the DNS TXT record that publishes its public half. algo is "ed25519" or
// "rsa"; bits applies to RSA only (0 means DefaultRSABits).
func Keygen(algo string, bits int) (privPEM []byte, txtRecord string, err error) {
	var priv crypto.Signer
	switch algo {
	case AlgoEd25519:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case AlgoRSA:
		if bits == 0 {
			bits = DefaultRSABits
		}
		if bits < MinRSABits || bits > MaxRSABits {
			return nil, "", fmt.Errorf("RSA key size %d: must be %d to %d bits", bits, MinRSABits, MaxRSABits)
		}
		priv, err = rsa.GenerateKey(rand.Reader, bits)
	default:
		return nil, "", fmt.Errorf("unknown key algorithm %q (use ed25519 or rsa)", algo)
	}
	if err != nil {
		return nil, "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, "", err
	}
	txt, err := TXTRecord(priv.Public())
	if err != nil {
		return nil, "", err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), txt, nil
}

// TXTRecord returns the DNS TXT record value that publishes pub (RFC 6376
// section 3.6.1): for RSA, p= holds the DER SubjectPublicKeyInfo; for
// Ed25519, the raw 32-byte key (RFC 8463 section 4).
func TXTRecord(pub crypto.PublicKey) (string, error) {
	var p []byte
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", err
		}
		p = der
	case ed25519.PublicKey:
		p = pub
	default:
		return "", errors.New("unsupported key type (DKIM keys are RSA or Ed25519)")
	}
	return "v=DKIM1; k=" + keyAlgo(pub) + "; p=" + base64.StdEncoding.EncodeToString(p), nil
}

// ZoneLine renders the TXT record for selector and domain as a zone-file
// line, split into character-strings of at most 255 bytes (RFC 1035 section
// 3.3.14), which an RSA key's record needs.
func ZoneLine(selector, domain, txt string) string {
	var b strings.Builder
	b.WriteString(selector + "._domainkey." + strings.TrimSuffix(domain, ".") + ". IN TXT (")
	for len(txt) > 0 {
		n := min(len(txt), 255)
		b.WriteString(" \"" + txt[:n] + "\"")
		txt = txt[n:]
	}
	b.WriteString(" )")
	return b.String()
}

// WriteKeyFile writes a private key to path with mode 0600, refusing to
// replace an existing file.
func WriteKeyFile(path string, privPEM []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; not replacing a key", path)
		}
		return err
	}
	if _, err := f.Write(privPEM); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// checkSelector accepts a selector that is a DNS name (RFC 6376 section 3.1:
// sub-domain syntax), e.g. "mail" or "2026a.eu".
func checkSelector(s string) error {
	if !isDNSName(s) {
		return fmt.Errorf("dkim selector %q: must be a DNS name (letters, digits, hyphens, dots)", s)
	}
	return nil
}

func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
