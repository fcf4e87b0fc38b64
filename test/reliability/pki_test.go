//go:build linux

package reliability

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qmgate/qmgate/smtp"
)

// testPKI is a throwaway CA, a server certificate for "localhost" and a
// client certificate, as PEM files readable by the daemon's user.
type testPKI struct {
	CA, Cert, Key         string
	ClientCert, ClientKey string
	Pool                  *x509.CertPool
	Client                tls.Certificate
	// Stranger is a client certificate from another CA.
	Stranger tls.Certificate
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	dir, err := os.MkdirTemp(workRoot, "pki-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	p := &testPKI{Pool: x509.NewCertPool()}
	ca, caKey, caDER := makeCA(t, "qmgate reliability CA")
	p.Pool.AddCert(ca)
	p.CA = writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)
	var srv tls.Certificate
	p.Cert, p.Key, srv = issue(t, dir, "server", ca, caKey, x509.ExtKeyUsageServerAuth)
	_ = srv
	p.ClientCert, p.ClientKey, p.Client = issue(t, dir, "client", ca, caKey, x509.ExtKeyUsageClientAuth)
	other, otherKey, _ := makeCA(t, "some other CA")
	_, _, p.Stranger = issue(t, dir, "stranger", other, otherKey, x509.ExtKeyUsageClientAuth)
	return p
}

func makeCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key, der
}

func issue(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage) (string, string, tls.Certificate) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	c := writePEM(t, dir, name+".pem", "CERTIFICATE", der)
	k := writePEM(t, dir, name+".key", "EC PRIVATE KEY", kb)
	pair, err := tls.LoadX509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return c, k, pair
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// clientTLS is a client configuration trusting the test CA.
func (p *testPKI) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: p.Pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// passwordFile writes a qmgate password file with one user.
func passwordFile(t *testing.T, user, pass string) string {
	t.Helper()
	hash, err := smtp.HashPassword(pass)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(workRoot, "passwd-")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(user + ":" + hash + "\n")
	f.Close()
	os.Chmod(f.Name(), 0o644)
	return f.Name()
}
