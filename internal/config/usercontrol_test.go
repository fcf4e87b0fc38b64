package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qmgate/qmgate/relay/transport"
)

func TestUserControlSettings(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "srs")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	doc := `
rcpthosts = ["example.com"]
[[route]]
domains = [".sub.example.com", "example.com"]
via = "maildir:/m"
separator = "+"
folders = false
programs = true
srs_secret_file = "` + secret + `"
`
	c, err := Parse("t.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	r := &c.Routes[0]
	if r.Separator != "+" || r.Folders == nil || *r.Folders || !r.Programs || SRSDomain(r) != "example.com" {
		t.Fatalf("route %+v", r)
	}
	tr, err := BuildTransport(c, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	md := tr.(*transport.Maildir)
	if md.Separator != '+' || !md.NoFolders || !md.Programs || md.SRS == nil || md.SRS.Domain != "example.com" || len(md.SRS.Secrets) != 1 {
		t.Fatalf("transport %+v", md.UserControl)
	}
	out, err := c.Print()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse("printed", out); err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, out)
	}

	for _, tc := range []struct{ doc, want string }{
		{"[[route]]\ndomains=[\"*\"]\nvia=\"maildir:/m\"\nseparator=\"=\"\n", "route[0].separator"},
		{"[[route]]\ndomains=[\"*\"]\nvia=\"mx\"\nprograms=true\n", "are for maildir and mbox routes"},
		{"[[route]]\ndomains=[\"*\"]\nvia=\"mbox:/m\"\nfolders=true\n", "route[0].folders"},
		{"[[route]]\ndomains=[\"*\"]\nvia=\"maildir:/m\"\nsrs_secret_file=\"/x\"\n", "route[0].srs_domain"},
		{"[[route]]\ndomains=[\"a.example\"]\nvia=\"maildir:/m\"\nsrs_secret_file=\"/x\"\nsrs_domain=\"b.example\"\n", "route[0].srs_domain"},
		{"[[route]]\ndomains=[\"a.example\"]\nvia=\"maildir:/m\"\nsrs_domain=\"a.example\"\n", "needs srs_secret_file"},
	} {
		_, err := Parse("t.toml", []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.doc, err, tc.want)
		}
	}
}
