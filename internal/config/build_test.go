package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qmgate/qmgate/relay/transport"
)

// TestCredentialsNeedVerifiedTLS: a username goes only with verified TLS,
// unless insecure_auth says otherwise, and never on an mx route.
func TestCredentialsNeedVerifiedTLS(t *testing.T) {
	for _, tc := range []struct {
		route string
		ok    bool
	}{
		{`via = "smtp://smarthost.example:587"` + "\nusername = \"u\"\npassword = \"p\"", true},
		{`via = "smtp://smarthost.example:587"` + "\ntls = \"required\"\nusername = \"u\"", true},
		{`via = "smtp://smarthost.example:587"` + "\ntls = \"opportunistic\"\nusername = \"u\"", false},
		{`via = "smtp://smarthost.example:587"` + "\ntls = \"none\"\nusername = \"u\"", false},
		{`via = "smtps://smarthost.example:465"` + "\ntls = \"opportunistic\"\nusername = \"u\"", false},
		{`via = "smtp://127.0.0.1:25"` + "\ntls = \"none\"\nusername = \"u\"\ninsecure_auth = true", true},
		{`via = "smtp://127.0.0.1:25"` + "\ntls = \"opportunistic\"\nusername = \"u\"\ninsecure_auth = true", true},
		{`via = "smtp://127.0.0.1:25"` + "\ntls = \"opportunistic\"", true},
		{`via = "mx"` + "\nusername = \"u\"", false},
		{`via = "mx"` + "\nusername = \"u\"\ninsecure_auth = true", false},
	} {
		doc := "queue_dir = \"" + t.TempDir() + "\"\n[[route]]\ndomains = [\"*\"]\n" + tc.route + "\n"
		_, err := Parse("test.toml", []byte(doc))
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", strings.ReplaceAll(tc.route, "\n", "; "), err, tc.ok)
		}
	}
}

// TestBuildTransport: each via becomes its transport; a users_file is read
// (and a bad one refused) when the route is built, so a reload rereads it.
func TestBuildTransport(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	os.WriteFile(users, []byte("joe\n"), 0o600)
	doc := `queue_dir = "` + dir + `/queue"
[[route]]
domains = ["local.test"]
via = "maildir:` + dir + `/mail"
users_file = "` + users + `"
[[route]]
domains = ["box.test"]
via = "mbox:` + dir + `/mbox"
[[route]]
domains = ["q.test"]
via = "qmtp://127.0.0.1"
[[route]]
domains = ["p.test"]
via = "qmqp://127.0.0.1,127.0.0.2:6280"
[[route]]
domains = ["s.test"]
via = "smtp://127.0.0.1:2525"
[[route]]
domains = ["h.test"]
via = "http://127.0.0.1:8080/in"
headers = ["Authorization: Bearer x"]
[[route]]
domains = ["d.test"]
via = "discard:"
[[route]]
domains = ["*"]
via = "mx"
`
	cfg, err := Parse("test.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	var got []transport.Transport
	for i := range cfg.Routes {
		tr, err := BuildTransport(cfg, &cfg.Routes[i], log)
		if err != nil {
			t.Fatalf("route %d: %v", i, err)
		}
		defer tr.Close()
		got = append(got, tr)
	}
	md, ok := got[0].(*transport.Maildir)
	if !ok || md.Users == nil || md.CheckRecipient("joe@local.test").IsAccept() != true || md.CheckRecipient("ann@local.test").Code != "5.1.1" {
		t.Errorf("maildir route: %#v", got[0])
	}
	if _, ok := got[1].(*transport.Mbox); !ok {
		t.Errorf("mbox route: %T", got[1])
	}
	if q, ok := got[2].(*transport.QMTP); !ok || q.Addr != "127.0.0.1:209" {
		t.Errorf("qmtp route: %#v", got[2])
	}
	if q, ok := got[3].(*transport.QMQP); !ok || strings.Join(q.Client.Servers, " ") != "127.0.0.1:628 127.0.0.2:6280" {
		t.Errorf("qmqp route: %#v", got[3])
	}
	if s, ok := got[4].(*transport.SMTP); !ok || s.URL != "smtp://127.0.0.1:2525" {
		t.Errorf("smtp route: %#v", got[4])
	}
	if w, ok := got[5].(*transport.Webhook); !ok || w.Headers.Get("Authorization") != "Bearer x" {
		t.Errorf("webhook route: %#v", got[5])
	}
	if _, ok := got[6].(transport.Discard); !ok {
		t.Errorf("discard route: %T", got[6])
	}
	if m, ok := got[7].(*transport.MX); !ok || m.SMTP.Username != "" {
		t.Errorf("mx route: %#v", got[7])
	}
	os.WriteFile(users, []byte("../etc\n"), 0o600)
	if _, err := BuildTransport(cfg, &cfg.Routes[0], log); err == nil {
		t.Error("a users_file with a bad name was accepted")
	}
}
