package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qmgate/qmgate/internal/dkim"
)

func TestDkimKeygen(t *testing.T) {
	dir := t.TempDir()
	for _, algo := range []string{"ed25519", "rsa"} {
		path := filepath.Join(dir, algo+".key")
		var out, errb strings.Builder
		code := run([]string{"qmgate", "dkim", "keygen", "-domain", "Example.NET", "-selector", "s" + algo, "-algo", algo, "-out", path}, nil, &out, &errb)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", algo, code, errb.String())
		}
		if !strings.HasPrefix(out.String(), "s"+algo+"._domainkey.example.net. IN TXT ( \"v=DKIM1; k="+algo+"; p=") {
			t.Errorf("%s: record %q", algo, out.String())
		}
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: key file: %v %v", algo, err, st)
		}
		if k, err := dkim.LoadKey("s1", path); err != nil || k.Algo() != algo {
			t.Errorf("%s: %v", algo, err)
		}
		// Never over an existing key.
		if code := run([]string{"qmgate", "dkim", "keygen", "-domain", "example.net", "-selector", "s1", "-out", path}, nil, &out, &errb); code == 0 {
			t.Errorf("%s: replaced an existing key", algo)
		}
	}
	for _, args := range [][]string{{"dkim"}, {"dkim", "keygen"}, {"dkim", "keygen", "-domain", "example.net"},
		{"dkim", "keygen", "-domain", "localhost", "-selector", "s"}, {"dkim", "keygen", "-domain", "example.net", "-selector", "s", "-algo", "dsa", "-out", filepath.Join(dir, "x")},
		{"dkim", "keygen", "-domain", "example.net", "-selector", "s", "-bits", "1024", "-out", filepath.Join(dir, "y")}} {
		var out, errb strings.Builder
		if code := run(append([]string{"qmgate"}, args...), nil, &out, &errb); code == 0 || errb.Len() == 0 {
			t.Errorf("%v: exit %d, %q", args, code, errb.String())
		}
	}
}
