package testpeer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a throwaway certificate authority for a test: P-256 keys, and
// certificates valid from an hour ago for a day.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// File is the CA certificate as a PEM file, for a ca_file setting.
	File string
	// Pool holds the CA certificate, for a client's RootCAs.
	Pool *x509.CertPool

	t   testing.TB
	dir string
}

// NewCA makes a CA named name. Its files go in dir, readable by every
// user (a daemon under test may run as another one); "" means a
// directory of the test's own.
func NewCA(t testing.TB, name, dir string) *CA {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: serial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{Cert: cert, Key: key, Pool: x509.NewCertPool(), t: t, dir: dir}
	ca.Pool.AddCert(cert)
	ca.File = writePEM(t, dir, "ca.pem", "CERTIFICATE", der)
	return ca
}

// Issue returns a certificate with common name cn for the given use
// (x509.ExtKeyUsageServerAuth or ClientAuth), valid for names: IP
// addresses and DNS names.
func (ca *CA) Issue(cn string, usage x509.ExtKeyUsage, names ...string) tls.Certificate {
	ca.t.Helper()
	_, key := ca.issue(cn, usage, names)
	return key
}

// IssueFiles is Issue that also writes the certificate and its key as the
// PEM files base.pem and base.key in the CA's directory.
func (ca *CA) IssueFiles(base, cn string, usage x509.ExtKeyUsage, names ...string) (certFile, keyFile string, pair tls.Certificate) {
	ca.t.Helper()
	der, pair := ca.issue(cn, usage, names)
	kb, err := x509.MarshalECPrivateKey(pair.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		ca.t.Fatal(err)
	}
	certFile = writePEM(ca.t, ca.dir, base+".pem", "CERTIFICATE", der)
	keyFile = writePEM(ca.t, ca.dir, base+".key", "EC PRIVATE KEY", kb)
	return certFile, keyFile, pair
}

func (ca *CA) issue(cn string, usage x509.ExtKeyUsage, names []string) ([]byte, tls.Certificate) {
	t := ca.t
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: serial(t), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return der, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// serial returns a random serial number, so that two certificates of a
// test never share one.
func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// writePEM writes one PEM block to dir/name, readable by every user.
func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
