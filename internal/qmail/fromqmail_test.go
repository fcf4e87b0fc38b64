package qmail

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/config"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs (run go test -update):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// convertGolden converts dir with convert, compares the result with the
// golden file name and returns it, loaded and as text: it must load as it
// is.
func convertGolden(t *testing.T, convert func(string) ([]byte, error), dir, name string) (*config.Config, []byte) {
	t.Helper()
	out, err := convert(dir)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, name, out)
	c, err := config.Parse(name, out)
	if err != nil {
		t.Fatalf("converted configuration does not load: %v\n%s", err, out)
	}
	return c, out
}

func TestFromQmailGolden(t *testing.T) {
	// The result must load as it is, and mean what it says.
	c, _ := convertGolden(t, FromQmail, "testdata/control", "control.toml")
	if c.Hostname != "mail" || c.DefaultDomain != "mail.example.com" {
		t.Errorf("hostname %q default_domain %q", c.Hostname, c.DefaultDomain)
	}
	if c.MaxMessageBytes != 10000000 || c.Delivery.Concurrency != 40 || c.Queue.Lifetime.D() != 72*time.Hour || c.Delivery.Timeout.D() != 20*time.Minute {
		t.Errorf("numbers: %+v %+v %+v", c.MaxMessageBytes, c.Delivery, c.Queue)
	}
	if got := strings.Join(c.RcptHosts, " "); got != "example.com .example.com example.org example.net" {
		t.Errorf("rcpthosts %q", got)
	}
	if got := strings.Join(c.Nullclient.QMQPServers, " "); got != "192.0.2.10:628 192.0.2.11:628 [2001:db8::10]:2628" {
		t.Errorf("qmqp_servers %q", got)
	}
	var routes []string
	for _, r := range c.Routes {
		routes = append(routes, strings.Join(r.Domains, ",")+"="+r.Via)
	}
	want := "hub.example=qmtp://qmtp.example.net .deep.partner.example=qmtp://[2001:db8::20]:2209 " +
		"local.example=mx old.example=smtp://192.0.2.99 partner.example=smtp://again.example " +
		".partner.example=smtp://relay.partner.example:2525 *=smtp://smarthost.example.net"
	if got := strings.Join(routes, " "); got != want {
		t.Errorf("routes:\n got %s\nwant %s", got, want)
	}
}

// A directory with nothing but me: qmail's defaults, the open relay refused,
// and delivery by MX.
func TestFromQmailMinimal(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "me"), []byte("mx.example.org\n"), 0o644)
	out, err := FromQmail(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("min.toml", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if c.DefaultDomain != "mx.example.org" || len(c.RcptHosts) != 0 || len(c.Routes) != 1 || c.Routes[0].Via != "mx" {
		t.Fatalf("%+v\n%s", c, out)
	}
	if !bytes.Contains(out, []byte("open relay")) {
		t.Fatalf("no comment on the missing rcpthosts:\n%s", out)
	}
}

func TestFromQmailMissingDir(t *testing.T) {
	if _, err := FromQmail(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Fatal("no error")
	}
}
