package rewrite

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/qmgate/qmgate/mail"
)

func mustCompile(t *testing.T, r Rules) *Rewriter {
	t.Helper()
	rw, err := Compile(r)
	if err != nil {
		t.Fatal(err)
	}
	return rw
}

var fleet = Rules{
	Users: []UserRule{{Match: "root@*", Address: "ops@example.net"}},
	Hosts: []HostRule{{Match: "*.internal", Domain: "example.net"}, {Match: "app17.example.net", Domain: "example.net"}},
	Admin: AdminRule{Address: "admin@example.net", Hosts: []string{"*.internal", "localhost"}, Users: []string{"root", "postmaster"}},
}

func TestSender(t *testing.T) {
	rw := mustCompile(t, fleet)
	for _, tt := range []struct{ in, want string }{
		{"www-data@web3.internal", "www-data@example.net"},
		{"www-data@WEB3.Internal", "www-data@example.net"},
		{"cron@app17.example.net", "cron@example.net"},
		{"cron@app18.example.net", "cron@app18.example.net"},
		{"cron@internal", "cron@internal"}, // *.internal is the hosts under it
		{"root@app17.internal", "ops@example.net"},
		{"ROOT@anything.example.org", "ops@example.net"},
		{"root", "ops@example.net"}, // root@* matches an unqualified root
		{"joe", "joe"},
		{"joe@[192.0.2.1]", "joe@[192.0.2.1]"},
		{"", ""},
		{"#@[]", "#@[]"},
		{"list-@app17.internal-@[]", "list-@app17.internal-@[]"}, // VERP kept
		{"ops@example.net", "ops@example.net"},
	} {
		got, changed := rw.Sender(tt.in)
		if got != tt.want || changed != (tt.in != tt.want) {
			t.Errorf("Sender(%q) = %q, %v; want %q", tt.in, got, changed, tt.want)
		}
	}
}

func TestAllMailFrom(t *testing.T) {
	rw := mustCompile(t, Rules{AllMailFrom: "noreply@example.net", Hosts: fleet.Hosts, Headers: true})
	for _, tt := range []struct{ in, want string }{
		{"www-data@web3.internal", "noreply@example.net"},
		{"list-@app17.internal-@[]", "noreply@example.net"},
		{"", ""}, // bounces keep the null sender
		{"#@[]", "#@[]"},
	} {
		if got, _ := rw.Sender(tt.in); got != tt.want {
			t.Errorf("Sender(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
	hdr := "From: Web Three <www-data@web3.internal>\nSender: cron@web3.internal\nReply-To: help@web3.internal\nTo: a@b.example\n\n"
	got, ch := rw.Header([]byte(hdr))
	want := "From: Web Three <noreply@example.net>\nSender: noreply@example.net\nReply-To: help@example.net\nTo: a@b.example\n\n"
	if string(got) != want || len(ch) != 3 {
		t.Errorf("got\n%s%v", got, ch)
	}
}

func TestRecipientsAdmin(t *testing.T) {
	rw := mustCompile(t, fleet)
	env := mail.Envelope{Sender: "root@app17.internal", Recipients: []string{
		"root@app17.internal", "postmaster@web3.internal", "Root@localhost", "joe@app17.internal", "root@example.org", "admin@example.net"}}
	ch := rw.Envelope(&env)
	wantR := []string{"admin@example.net", "joe@app17.internal", "root@example.org"}
	if env.Sender != "ops@example.net" || !slices.Equal(env.Recipients, wantR) {
		t.Errorf("envelope %+v", env)
	}
	if len(ch) != 4 || ch[0].Field != "sender" || ch[1].Field != "recipient" {
		t.Errorf("changes %+v", ch)
	}
	c := ch.Comment()
	if !strings.HasPrefix(c, "rewritten: sender root@app17.internal to ops@example.net, recipient root@app17.internal to admin@example.net") {
		t.Errorf("comment %q", c)
	}
	// Users empty: every user of the hosts, as nullmailer's adminaddr.
	all := mustCompile(t, Rules{Admin: AdminRule{Address: "admin@example.net", Hosts: []string{"localhost"}}})
	if got, _ := all.Recipient("www@localhost"); got != "admin@example.net" {
		t.Errorf("every user: %q", got)
	}
	if got, _ := all.Recipient("www@example.org"); got != "www@example.org" {
		t.Errorf("other host: %q", got)
	}
}

func TestZeroRulesChangeNothing(t *testing.T) {
	rw := mustCompile(t, Rules{Headers: true})
	env := mail.Envelope{Sender: "root@app17.internal", Recipients: []string{"root@localhost"}}
	if ch := rw.Envelope(&env); ch != nil || env.Sender != "root@app17.internal" {
		t.Errorf("zero rules changed %+v %v", env, ch)
	}
	h := []byte("From: root@app17.internal\n\n")
	if got, ch := rw.Header(h); !bytes.Equal(got, h) || ch != nil {
		t.Errorf("zero rules changed the header: %q", got)
	}
}

func TestHeaderKeepsEverythingElse(t *testing.T) {
	rw := mustCompile(t, Rules{Users: fleet.Users, Hosts: fleet.Hosts, Headers: true})
	hdr := "Received: from app17.internal by hub\r\n" +
		"From: \"Cron Daemon, app17\" <root@app17.internal> (the cron)\r\n" +
		"To: root@app17.internal\r\n" +
		"Reply-To: a@web3.internal,\r\n\t(comment) b@web3.internal (x), \"q@web3.internal\" <c@other.example>,\r\n" +
		" group: d@web3.internal, <e@web3.internal>;\r\n" +
		"Sender:   www@web3.internal  \r\n" +
		"Subject: From: root@app17.internal\r\n" +
		"X-From: root@app17.internal\r\n" +
		"\r\n"
	body := "From: root@app17.internal in the body\r\n"
	got, ch := rw.Header([]byte(hdr + body))
	want := "Received: from app17.internal by hub\r\n" +
		"From: \"Cron Daemon, app17\" <ops@example.net> (the cron)\r\n" +
		"To: root@app17.internal\r\n" +
		"Reply-To: a@example.net,\r\n\t(comment) b@example.net (x), \"q@web3.internal\" <c@other.example>,\r\n" +
		" group: d@example.net, <e@example.net>;\r\n" +
		"Sender:   www@example.net  \r\n" +
		"Subject: From: root@app17.internal\r\n" +
		"X-From: root@app17.internal\r\n" +
		"\r\n" + body
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if len(ch) != 6 {
		t.Errorf("changes %v", ch)
	}
}

func TestHeaderOddFieldsLeftAlone(t *testing.T) {
	rw := mustCompile(t, Rules{Hosts: fleet.Hosts, Headers: true})
	for _, h := range []string{
		"From: Joe Bloggs joe@web3.internal\n\n", // a bare address with words around it
		"From: \"unterminated <joe@web3.internal>\n\n",
		"From: (unterminated joe@web3.internal\n\n",
		"From: <joe@web3.internal\n\n",
		"From: joe@[IPv6:::1]\n\n",
		"From:\n\n",
		"From: " + strings.Repeat("x", MaxFieldBytes) + " <joe@web3.internal>\n\n",
	} {
		if got, ch := rw.Header([]byte(h)); string(got) != h || ch != nil {
			t.Errorf("%.60q rewritten to %.60q", h, got)
		}
	}
}

func TestReader(t *testing.T) {
	rw := mustCompile(t, Rules{Hosts: fleet.Hosts, Headers: true})
	msg := "From: joe@web3.internal\nSubject: x\n\n" + strings.Repeat("From: joe@web3.internal\n", 1000)
	r := rw.NewReader(iotest.HalfReader(strings.NewReader(msg)))
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(msg, "joe@web3.internal", "joe@example.net", 1)
	if string(got) != want || len(r.Changes()) != 1 {
		t.Errorf("Reader: %d changes, %.80q", len(r.Changes()), got)
	}
	// A header-only message, and one whose header is too long to hold.
	for _, tt := range []struct{ in, want string }{
		{"From: joe@web3.internal\n", "From: joe@example.net\n"},
		{"From: joe@web3.internal", "From: joe@example.net"},
	} {
		got, _ := io.ReadAll(rw.NewReader(strings.NewReader(tt.in)))
		if string(got) != tt.want {
			t.Errorf("%q: got %q", tt.in, got)
		}
	}
	small := mustCompile(t, Rules{Hosts: fleet.Hosts, Headers: true, MaxHeaderBytes: 64})
	long := "From: joe@web3.internal\nX: " + strings.Repeat("y", 5000) + "\n\nbody\n"
	r = small.NewReader(strings.NewReader(long))
	if got, _ := io.ReadAll(r); string(got) != long || r.Changes() != nil {
		t.Errorf("a long header was rewritten")
	}
}

func TestCompileRefusesBadRules(t *testing.T) {
	for _, r := range []Rules{
		{AllMailFrom: "noreply"},
		{AllMailFrom: "a b@example.net"},
		{AllMailFrom: "a@example.net\r\nBcc: x@y"},
		{Users: []UserRule{{Match: "root", Address: "ops@example.net"}}},
		{Users: []UserRule{{Match: "root@*", Address: "<ops@example.net>"}}},
		{Users: []UserRule{{Match: "root@*x", Address: "ops@example.net"}}},
		{Hosts: []HostRule{{Match: "*.internal", Domain: "example net"}}},
		{Hosts: []HostRule{{Match: "a..b", Domain: "example.net"}}},
		{Admin: AdminRule{Address: "admin@example.net"}},
		{Admin: AdminRule{Address: "admin", Hosts: []string{"localhost"}}},
	} {
		if _, err := Compile(r); err == nil {
			t.Errorf("Compile(%+v) accepted", r)
		}
	}
}

func TestCommentIsSafeAndBounded(t *testing.T) {
	c := Changes{{Field: "sender", Old: "a(b)\r\n@x", New: ""}}.Comment()
	if c != "rewritten: sender a?b???@x to <>" {
		t.Errorf("comment %q", c)
	}
	var many Changes
	for range 100 {
		many = append(many, Change{Field: "recipient", Old: "root@app17.internal", New: "admin@example.net"})
	}
	if c := many.Comment(); len(c) > MaxCommentBytes || !strings.HasSuffix(c, "...") {
		t.Errorf("long comment: %d bytes", len(c))
	}
}
