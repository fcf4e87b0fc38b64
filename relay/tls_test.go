package relay

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/qmgate/qmgate/internal/testpeer"
)

// testPKI is a throwaway CA with a server certificate for 127.0.0.1 and
// localhost, and a client certificate, written as PEM files.
type testPKI struct {
	CA, Cert, Key         string // server
	ClientCert, ClientKey string
	Pool                  *x509.CertPool
	ClientPair            tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	ca := testpeer.NewCA(t, "qmgate test CA", "")
	p := &testPKI{CA: ca.File, Pool: ca.Pool}
	p.Cert, p.Key, _ = ca.IssueFiles("server", "server", x509.ExtKeyUsageServerAuth, "localhost", "127.0.0.1")
	p.ClientCert, p.ClientKey, p.ClientPair = ca.IssueFiles("client", "client", x509.ExtKeyUsageClientAuth, "localhost", "127.0.0.1")
	return p
}
