//go:build linux

package reliability

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"

	"github.com/qmgate/qmgate/internal/testpeer"
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
	ca := testpeer.NewCA(t, "qmgate reliability CA", dir)
	p := &testPKI{CA: ca.File, Pool: ca.Pool}
	p.Cert, p.Key, _ = ca.IssueFiles("server", "server", x509.ExtKeyUsageServerAuth, "localhost")
	p.ClientCert, p.ClientKey, p.Client = ca.IssueFiles("client", "client", x509.ExtKeyUsageClientAuth, "localhost")
	p.Stranger = testpeer.NewCA(t, "some other CA", "").Issue("stranger", x509.ExtKeyUsageClientAuth, "localhost")
	return p
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
