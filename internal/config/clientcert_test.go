package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// certPair makes a key and a certificate signed by parent (self-signed when
// parent is nil) and returns them with the PEM files written to dir.
func certPair(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	signer, signerKey := parent, parentKey
	if parent == nil {
		signer, signerKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	cf, kf := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return cert, key, cf, kf
}

// TestClientCertificate: an smtp:// (STARTTLS) and an smtps:// (implicit
// TLS) route with cert_file/key_file deliver to a smarthost that requires a
// client certificate from its CA; without them the handshake fails and the
// mail waits.
func TestClientCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, caFile, _ := certPair(t, dir, "ca", nil, nil, &x509.Certificate{SerialNumber: big.NewInt(1),
		Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature})
	_, _, srvCert, srvKey := certPair(t, dir, "server", ca, caKey, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature})
	_, _, cliCert, cliKey := certPair(t, dir, "client", ca, caKey, &x509.Certificate{SerialNumber: big.NewInt(3),
		Subject:     pkix.Name{CommonName: "hub.example"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature})
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	tc := &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}

	for _, implicit := range []bool{false, true} {
		h := &oauthHost{open: true}
		srv := gosmtp.NewServer(h)
		srv.Domain = "smarthost.example"
		srv.TLSConfig = tc
		srv.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		scheme := "smtp"
		if implicit {
			ln, scheme = tls.NewListener(ln, tc), "smtps"
		}
		done := make(chan struct{})
		go func() { srv.Serve(ln); close(done) }()
		for _, withCert := range []bool{true, false} {
			route := `[[route]]
domains = ["*"]
via = "` + scheme + "://" + ln.Addr().String() + `"
ca_file = "` + caFile + `"
`
			if withCert {
				route += `cert_file = "` + cliCert + `"
key_file = "` + cliKey + `"
`
			}
			cfg, err := Parse("t.toml", []byte("queue_dir = \""+dir+"/queue\"\n"+route))
			if err != nil {
				t.Fatal(err)
			}
			tr, err := BuildTransport(cfg, &cfg.Routes[0], slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			r := deliverOne(t, tr, "x@example.com")
			tr.Close()
			if r.Status.IsAccept() != withCert || (!withCert && r.Status.IsPermanent()) {
				t.Errorf("%s, client certificate %v: %v", scheme, withCert, r.Status)
			}
		}
		srv.Close()
		<-done
	}
}
