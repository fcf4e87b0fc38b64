package testpeer

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// TestCA: a certificate verifies against the CA's pool for each of its
// names and no other, and its files load as a key pair.
func TestCA(t *testing.T) {
	ca := NewCA(t, "test CA", "")
	pair := ca.Issue("mx.example.test", x509.ExtKeyUsageServerAuth, "mx.example.test", "127.0.0.1")
	for name, want := range map[string]bool{"mx.example.test": true, "127.0.0.1": true, "other.example.test": false} {
		_, err := pair.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool})
		if (err == nil) != want {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	certFile, keyFile, _ := ca.IssueFiles("client", "client", x509.ExtKeyUsageClientAuth, "localhost")
	loaded, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loaded.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	other := NewCA(t, "another CA", "")
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{DNSName: "mx.example.test", Roots: other.Pool}); err == nil {
		t.Error("verified against another CA")
	}
}
