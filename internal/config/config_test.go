package config

import (
	"strings"
	"testing"
	"time"
)

func TestEmbeddedDefault(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != "(embedded default)" || c.QueueDir != "./qmgate-data/queue" {
		t.Fatalf("unexpected: %+v", c)
	}
	want := map[string][]string{"qmqp": c.QMQP.Listen, "qmtp": c.QMTP.Listen, "smtp": c.SMTP.Listen}
	if want["qmqp"][0] != "127.0.0.1:2628" || want["qmtp"][0] != "127.0.0.1:2209" || want["smtp"][0] != "127.0.0.1:2525" {
		t.Fatalf("listeners: %v", want)
	}
	if len(c.Routes) != 1 || c.Routes[0].Parsed.Scheme != "maildir" || Dir(c.Routes[0].Parsed) != "qmgate-data/maildir" {
		t.Fatalf("route: %+v %v", c.Routes, Dir(c.Routes[0].Parsed))
	}
	if c.Queue.Lifetime.D() != 7*24*time.Hour || c.Queue.DelayNotice.D() != 4*time.Hour {
		t.Fatalf("queue defaults: %+v", c.Queue)
	}
	if c.QMTP.SessionTimeout.D() != time.Hour || c.SMTP.MaxConnsPerIP != 50 {
		t.Fatalf("limits: %+v", c.QMTP.ListenLimit)
	}
	out, err := c.Print()
	if err != nil {
		t.Fatal(err)
	}
	// What print shows must load again to the same thing.
	c2, err := Parse("printed", out)
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, out)
	}
	out2, _ := c2.Print()
	if strings.Replace(string(out), "(embedded default)", "printed", 1) != string(out2) {
		t.Fatalf("print is not a fixed point:\n%s\n---\n%s", out, out2)
	}
}

func TestErrorsCarryLines(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"unknown top key", "hostname = \"h\"\nbogus = 1\n", "t.toml:2: bogus: unknown key"},
		{"unknown table key", "[qmtp]\nlisten = []\nrelay = []\n", "t.toml:3: qmtp.relay: unknown key"},
		{"bad duration", "[queue]\n\nlifetime = \"7 days\"\n", "t.toml:3: queue.lifetime: \"7 days\" is not a duration"},
		{"bad type", "max_message_bytes = \"lots\"\n", "t.toml:1: max_message_bytes: want an integer number of bytes, got the string \"lots\""},
		{"bad bool", "[smtp]\nauth_without_tls = \"yes\"\n", "t.toml:2: smtp.auth_without_tls: want true or false, got the string \"yes\""},
		{"string for list", "rcpthosts = \"example.com\"\n", "t.toml:1: rcpthosts: want a list such as [\"a\", \"b\"], got the string \"example.com\""},
		{"did you mean", "[qmqp]\nalow = [\"127.0.0.1\"]\n", "t.toml:2: qmqp.alow: unknown key (did you mean `allow`?)"},
		{"missing file", "", ""},
		{"bad cidr", "[qmqp]\nallow = [\"10.0.0.0/8\",\n  \"ten\"]\n", "t.toml:2: qmqp.allow[1]: \"ten\" is not an address"},
		{"bad via", "[[route]]\ndomains=[\"*\"]\nvia=\"maildir:/m\"\n[[route]]\ndomains=[\"x\"]\nvia = \"gopher://x\"\n", "t.toml:6: route[1].via:"},
		{"open relay rcpthosts", "rcpthosts = [\"*\"]\n", "t.toml:1: rcpthosts[0]: \"*\" would make an open relay"},
		{"listen", "[smtp]\nlisten = [\"0.0.0.0\"]\n", "t.toml:2: smtp.listen[0]:"},
		{"http not loopback", "[[route]]\ndomains=[\"*\"]\nvia=\"http://example.com/hook\"\n", "plain http is allowed only to loopback"},
		{"submission needs auth", "[smtp]\nsubmission = [\"127.0.0.1:587\"]\n", "t.toml:2: smtp.submission: submission listeners require AUTH"},
		{"syntax", "hostname = \n", "t.toml:1:"},
		{"metrics not loopback", "[metrics]\nlisten = \"0.0.0.0:9100\"\n", "metrics.listen"},
		{"no such user", "user = \"no-such-user-qmgate\"\n", "t.toml:1: user: no such user"},
	} {
		if tc.want == "" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(tc.doc))
			if err == nil {
				t.Fatalf("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestParseVia(t *testing.T) {
	for via, ok := range map[string]bool{
		"qmtp://hub2.example.net": true, "qmtp://hub:2209": true, "qmqp://a:628,b:628": true,
		"smtp://smarthost:587": true, "smtps://s": true, "mx": true, "maildir:/var/mail": true,
		"mbox:./m": true, "discard:": true, "https://hooks.example/x": true, "http://127.0.0.1:8080/h": true,
		"http://[::1]/h": true, "qmtp://": false, "ftp://x": false, "": false, "maildir:": false,
		"qmtp://a,b": false,
	} {
		_, err := ParseVia(via)
		if (err == nil) != ok {
			t.Errorf("ParseVia(%q) error %v, want ok=%v", via, err, ok)
		}
	}
}

func TestDelayNoticeOff(t *testing.T) {
	c, err := Parse("t", []byte("[queue]\ndelay_notice = \"0s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Queue.DelayNotice.D() != 0 {
		t.Fatalf("delay notice %v", c.Queue.DelayNotice.D())
	}
}

func TestCommitLinger(t *testing.T) {
	for _, tc := range []struct {
		file string
		want time.Duration
		ok   bool
	}{
		{"", time.Millisecond, true},
		{"[queue]\ncommit_linger = \"0s\"\n", 0, true},
		{"[queue]\ncommit_linger = \"200us\"\n", 200 * time.Microsecond, true},
		{"[queue]\ncommit_linger = \"2s\"\n", 0, false},
		{"[queue]\ncommit_linger = \"-1ms\"\n", 0, false},
	} {
		c, err := Parse("t", []byte(tc.file))
		if (err == nil) != tc.ok {
			t.Errorf("%q: error %v", tc.file, err)
			continue
		}
		if err == nil && c.Queue.CommitLinger.D() != tc.want {
			t.Errorf("%q: commit_linger %v, want %v", tc.file, c.Queue.CommitLinger.D(), tc.want)
		}
	}
}

func TestPasswordHiddenInPrint(t *testing.T) {
	c, err := Parse("t", []byte("[[route]]\ndomains=[\"*\"]\nvia=\"smtp://s:587\"\nusername=\"u\"\npassword=\"sekrit\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := c.Print()
	if strings.Contains(string(out), "sekrit") {
		t.Fatalf("password printed:\n%s", out)
	}
	if c.Routes[0].Password != "sekrit" {
		t.Fatal("print changed the configuration")
	}
}

func TestLimitsInherit(t *testing.T) {
	c, err := Parse("t", []byte("[limits]\nmax_conns = 7\nread_timeout = \"9s\"\n[qmtp]\nmax_conns = 3\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.QMTP.MaxConns != 3 || c.SMTP.MaxConns != 7 || c.QMQP.ReadTimeout.D() != 9*time.Second {
		t.Fatalf("inherit: %+v %+v", c.QMTP.ListenLimit, c.SMTP.ListenLimit)
	}
}

func TestSpoolDirIsQueueDir(t *testing.T) {
	c, err := Parse("t", []byte("[nullclient]\nspool_dir = \"/var/spool/qmgate\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.QueueDir != "/var/spool/qmgate" {
		t.Fatalf("queue_dir %q", c.QueueDir)
	}
	_, err = Parse("t", []byte("queue_dir = \"/a\"\n[nullclient]\nspool_dir = \"/b\"\n"))
	if err == nil || !strings.Contains(err.Error(), "t:3: nullclient.spool_dir: must be the local daemon's queue_dir") {
		t.Fatalf("err = %v", err)
	}
}

func TestEveryErrorAtOnce(t *testing.T) {
	doc := "max_message_bytes = \"lots\"\nhostnme = \"h\"\n[queue]\nlifetime = 7\n[qmqp]\nallow = [\"ten\"]\n"
	_, err := Parse("t.toml", []byte(doc))
	for _, want := range []string{
		"t.toml:1: max_message_bytes: want an integer number of bytes",
		"t.toml:2: hostnme: unknown key (did you mean `hostname`?)",
		"t.toml:4: queue.lifetime: want a duration",
		"t.toml:6: qmqp.allow[0]: \"ten\" is not an address",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v\nlacks %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "config.Config") {
		t.Errorf("Go type in %v", err)
	}
}

func TestDurationDays(t *testing.T) {
	for in, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90s": 90 * time.Second, "0s": 0} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"7 days", "d", "", "-1h", "3x"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}

func TestLoadFromNamesOrigin(t *testing.T) {
	_, err := LoadFrom(t.TempDir()+"/none.toml", "$QMGATE_CONFIG")
	if err == nil || !strings.Contains(err.Error(), "configuration file does not exist (named by $QMGATE_CONFIG)") {
		t.Fatalf("err = %v", err)
	}
}

func TestEffectiveDefaults(t *testing.T) {
	c, err := Parse("t", []byte("[[route]]\ndomains=[\"*\"]\nvia=\"smtp://s:587\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Queue.MinFreeBytes != 16<<20 || c.Routes[0].TLS != "required" {
		t.Fatalf("min_free_bytes %d, tls %q", c.Queue.MinFreeBytes, c.Routes[0].TLS)
	}
}

func TestWarnings(t *testing.T) {
	doc := `rcpthosts = ["example.com", ".example.org", "lost.test"]
[[route]]
domains = ["example.com", ".example.org"]
via = "discard:"
[[route]]
domains = ["*"]
via = "mx"
[[route]]
domains = ["late.test"]
via = "discard:"
`
	c, err := Parse("t.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	ws := c.Warnings()
	if len(ws) != 1 || !strings.Contains(ws[0].Error(), "t.toml:9: route[2].domains: this route can never match: route[1]") {
		t.Fatalf("warnings: %v", ws)
	}
	c, err = Parse("t.toml", []byte("rcpthosts = [\"example.com\", \".example.org\"]\n[[route]]\ndomains = [\"example.org\"]\nvia = \"mx\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	ws = c.Warnings()
	if len(ws) != 2 || !strings.Contains(ws[0].Error(), "t.toml:1: rcpthosts[0]: no route delivers mail for \"example.com\"") ||
		!strings.Contains(ws[1].Error(), "\".example.org\"") {
		t.Fatalf("warnings: %v", ws)
	}
}

func TestEveryKeyDocumented(t *testing.T) {
	for _, k := range Keys() {
		if d := KeyDoc(k); d == "" {
			t.Errorf("%s has no description", k)
		} else if strings.ContainsAny(d, "`\n") || strings.Contains(d, "**") || !strings.Contains(d, " (default: ") {
			t.Errorf("%s: %q: want one line of plain words ending in its default", k, d)
		}
	}
	if d := KeyDoc("hostname"); !strings.HasPrefix(d, "the name this host gives in SMTP greetings") {
		t.Errorf("hostname: %q: want qmgate.toml(5)'s first sentence", d)
	}
}

func TestPrintSet(t *testing.T) {
	c, err := Parse("t", []byte("hostname = \"h.test\"\n[queue]\nlifetime = \"2d\"\n[[route]]\ndomains=[\"*\"]\nvia=\"mx\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.PrintSet()
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{"hostname = 'h.test'", "lifetime = '2d'", "via = 'mx'"} {
		if !strings.Contains(s, want) {
			t.Errorf("print -n lacks %q:\n%s", want, s)
		}
	}
	for _, not := range []string{"max_hops", "retry_min", "concurrency"} {
		if strings.Contains(s, not) {
			t.Errorf("print -n shows %q:\n%s", not, s)
		}
	}
	if _, err := Parse("again", out); err != nil {
		t.Fatalf("print -n output does not load: %v", err)
	}
}

func TestDurationString(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0s", 168 * time.Hour: "7d", 4 * time.Hour: "4h", 90 * time.Second: "1m30s",
		time.Millisecond: "1ms", 36 * time.Hour: "1d12h", 5 * time.Minute: "5m", 25*time.Hour + time.Second: "1d1h0m1s"} {
		if got := Duration(d).String(); got != want {
			t.Errorf("%v: got %q, want %q", d, got, want)
		}
		if back, err := ParseDuration(want); err != nil || back != d {
			t.Errorf("%q reads back as %v, %v", want, back, err)
		}
	}
}

func TestMapKey(t *testing.T) {
	c, err := Parse("t", []byte("[qmqp]\nunix_senders = { alice = [\"@example.net\"], \"*\" = [\"<>\"] }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.QMQP.UnixSenders["alice"]; len(got) != 1 || got[0] != "@example.net" || c.QMQP.UnixSenders["*"][0] != "<>" {
		t.Fatalf("unix_senders %v", c.QMQP.UnixSenders)
	}
	_, err = Parse("t", []byte("[qmqp]\nunix_senders = { alice = 7 }\n"))
	if err == nil || !strings.Contains(err.Error(), "t:2: qmqp.unix_senders.alice: want a list") {
		t.Fatalf("err = %v", err)
	}
}
