package qmail

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/config"
)

func TestFromNullmailerGolden(t *testing.T) {
	c, out := convertGolden(t, FromNullmailer, "testdata/nullmailer", "nullmailer.toml")
	if c.Hostname != "app1" || c.DefaultDomain != "app1.example.com" {
		t.Errorf("hostname %q default_domain %q", c.Hostname, c.DefaultDomain)
	}
	if got := strings.Join(c.Nullclient.QMQPServers, " "); got != "hub1.example.com:628 hub2.example.com:2628" {
		t.Errorf("qmqp_servers %q", got)
	}
	if c.Nullclient.Timeout.D() != 30*time.Minute {
		t.Errorf("timeout %v", c.Nullclient.Timeout.D())
	}
	if len(c.Routes) != 0 || c.Nullclient.SpoolDir != "" {
		t.Errorf("direct mode wanted, got routes %v spool_dir %q", c.Routes, c.Nullclient.SpoolDir)
	}
	for _, want := range []string{"adminaddr (ops@example.com)", "idhost", "smarthost.example.net:587", "backup.example.net:25", "mystery", `"bad host name qmqp"`, "password_file"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the result does not mention %q", want)
		}
	}
	if strings.Contains(string(out), "secret") {
		t.Errorf("the SMTP password was copied into the result")
	}
}

// The commented spool-mode block, once uncommented as it says, loads and
// relays to the SMTP remote.
func TestFromNullmailerSpoolBlock(t *testing.T) {
	out, err := FromNullmailer("testdata/nullmailer")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	spool := false
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "# Spool mode"):
			spool = true
		case l == "[nullclient]":
			b.WriteString(l + "\nspool_dir = \"/var/spool/qmgate\"\n")
			continue
		case spool && strings.HasPrefix(l, "# ") && !strings.HasPrefix(l, "#  ") && !strings.Contains(l, "spool_dir") && !strings.HasPrefix(l, "# (") && !strings.HasPrefix(l, "# to ") && !strings.HasPrefix(l, "# Spool"):
			l = strings.TrimPrefix(l, "# ")
		}
		b.WriteString(l + "\n")
	}
	c, err := config.Parse("spool.toml", []byte(b.String()))
	if err != nil {
		t.Fatalf("spool mode does not load: %v\n%s", err, b.String())
	}
	if len(c.Routes) != 1 || c.Routes[0].Via != "smtp://smarthost.example.net:587" || c.Routes[0].Username != "app1" || c.Routes[0].TLS != "required" {
		t.Errorf("routes %+v", c.Routes)
	}
	if c.Queue.Lifetime.D() != 72*time.Hour || c.QueueDir != "/var/spool/qmgate" {
		t.Errorf("queue %+v dir %q", c.Queue, c.QueueDir)
	}
}

func TestFromNullmailerCases(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []string // lines or notes the result must hold
		check func(t *testing.T, c *config.Config)
	}{
		{"empty", nil, []string{"remotes is missing"}, func(t *testing.T, c *config.Config) {
			if len(c.Nullclient.QMQPServers) != 0 {
				t.Errorf("servers %v", c.Nullclient.QMQPServers)
			}
		}},
		{"defaulthost", map[string]string{"me": "box.example.org", "defaulthost": "mail", "defaultdomain": "example.org", "remotes": "10.0.0.5 qmqp\n"},
			[]string{`default_domain = "mail.example.org"`}, func(t *testing.T, c *config.Config) {
				if got := strings.Join(c.Nullclient.QMQPServers, " "); got != "10.0.0.5:628" {
					t.Errorf("servers %q", got)
				}
			}},
		{"ipv6", map[string]string{"remotes": "2001:db8::5 qmqp port=2628\n"}, nil, func(t *testing.T, c *config.Config) {
			if got := strings.Join(c.Nullclient.QMQPServers, " "); got != "[2001:db8::5]:2628" {
				t.Errorf("servers %q", got)
			}
		}},
		{"smtp ssl", map[string]string{"remotes": "relay.example.net smtp --ssl --insecure\n", "queuelifetime": "3600"},
			[]string{`# via = "smtps://relay.example.net:465"`, "--insecure", `# lifetime = "1h0m0s"`}, nil},
		{"bad port", map[string]string{"remotes": "hub qmqp --port=0\nhub2 uucp\n"},
			[]string{"is not a port", "unknown protocol"}, nil},
		{"lifetime without spool", map[string]string{"remotes": "hub qmqp\n", "queuelifetime": "3600", "allmailfrom": "x@example.net"},
			[]string{"only in spool mode", "allmailfrom (x@example.net)"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, s := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, n), []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out, err := FromNullmailer(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("missing %q in\n%s", w, out)
				}
			}
			c, err := config.Parse("x.toml", out)
			if err != nil {
				t.Fatalf("does not load: %v\n%s", err, out)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
	if _, err := FromNullmailer(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("a missing directory gave no error")
	}
}
