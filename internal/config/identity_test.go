package config

import (
	"strings"
	"testing"
)

func TestIdentitySections(t *testing.T) {
	good := `
[[dkim]]
domain = "example.net"
selector = "a"
key_file = "/k/a"
algorithm = "ed25519"
subdomains = true
[[dkim]]
domain = "Example.NET"
selector = "b"
key_file = "/k/b"
subdomains = true
[rewrite]
hosts = [{match = "*.internal", domain = "example.net"}]
users = [{match = "root@*", address = "ops@example.net"}]
admin = {address = "ops@example.net", hosts = ["*.internal"], users = ["root"]}
headers = true
`
	c, err := Parse("good.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.DKIM) != 2 || !c.Rewrite.Enabled() || len(c.Rewrite.Rules().Hosts) != 1 || c.Rewrite.Rules().Admin.Address != "ops@example.net" {
		t.Fatalf("parsed: %+v %+v", c.DKIM, c.Rewrite)
	}
	for _, tc := range []struct{ doc, key string }{
		{"[[dkim]]\ndomain = \"example.net\"\nselector = \"a\"\nkey_file = \"/k\"\nalgorithm = \"dsa\"\n", "dkim[0].algorithm"},
		{"[[dkim]]\ndomain = \"example.net\"\nselector = \"a\"\n", "dkim[0].key_file"},
		{"[[dkim]]\ndomain = \"localhost\"\nselector = \"a\"\nkey_file = \"/k\"\n", "dkim[0].domain"},
		{"[[dkim]]\ndomain = \"example.net\"\nselector = \"a\"\nkey_file = \"/k\"\n[[dkim]]\ndomain = \"example.net\"\nselector = \"a\"\nkey_file = \"/j\"\n", "dkim[1].selector"},
		{"[[dkim]]\ndomain = \"example.net\"\nselector = \"a\"\nkey_file = \"/k\"\n[[dkim]]\ndomain = \"example.net\"\nselector = \"b\"\nkey_file = \"/j\"\nsubdomains = true\n", "dkim[1].subdomains"},
		{"[rewrite]\nusers = [{match = \"root\", address = \"ops@example.net\"}]\n", "rewrite"},
		{"[rewrite]\nall_mail_from = \"not an address\"\n", "rewrite"},
	} {
		_, err := Parse("bad.toml", []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.key+":") {
			t.Errorf("%q: error %v, want one for %s", tc.doc, err, tc.key)
		}
	}
}
