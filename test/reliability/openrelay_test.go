//go:build linux

package reliability

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// relayForm is one recipient address in the classic relay-test forms, raw
// (as QMTP carries it) and as an SMTP path; local says it stays inside
// rcpthosts (and so may be accepted).
type relayForm struct {
	name, raw, smtp string
	local           bool
}

var relayForms = []relayForm{
	{"plain foreign domain", "user@foreign.test", "<user@foreign.test>", false},
	{"% hack", "user%foreign.test@example.com", "<user%foreign.test@example.com>", false},
	{"double % hack", "user%foreign.test%example.com@example.com", "<user%foreign.test%example.com@example.com>", false},
	{"! path", "foreign.test!user@example.com", "<foreign.test!user@example.com>", false},
	{"! path with %", "foreign.test!user%example.com@example.com", "<foreign.test!user%example.com@example.com>", false},
	{"quoted local part with @", "user@foreign.test@example.com", `<"user@foreign.test"@example.com>`, false},
	{"quoted local part with %", "user%foreign.test@example.com", `<"user%foreign.test"@example.com>`, false},
	{"source route", "@example.com:user@foreign.test", "<@example.com:user@foreign.test>", false},
	{"source route via two hops", "@example.com,@example.com:user@foreign.test", "<@example.com,@example.com:user@foreign.test>", false},
	{"address literal", "user@[192.0.2.1]", "<user@[192.0.2.1]>", false},
	{"loopback literal", "user@[127.0.0.1]", "<user@[127.0.0.1]>", false},
	{"IPv6 literal", "user@[IPv6:::1]", "<user@[IPv6:::1]>", false},
	{"foreign with trailing dot", "user@foreign.test.", "<user@foreign.test.>", false},
	{"rcpthost as a prefix", "user@example.com.foreign.test", "<user@example.com.foreign.test>", false},
	{"rcpthost as a suffix without dot", "user@notexample.com", "<user@notexample.com>", false},
	{"% after the domain", "user@example.com%foreign.test", "<user@example.com%foreign.test>", false},
	{"mixed-case foreign", "user@FoReIgN.TeSt", "<user@FoReIgN.TeSt>", false},
	{"IDN foreign", "user@bücher.test", "<user@bücher.test>", false},
	{"IDN look-alike of the rcpthost (Cyrillic a)", "user@exаmple.com", "<user@exаmple.com>", false},
	{"ideographic full stop", "user@example。com", "<user@example。com>", false},
	{"punycode look-alike", "user@xn--exmple-cua.com", "<user@xn--exmple-cua.com>", false},
	{"backslash-escaped @", `user\@foreign.test@example.com`, `<"user\@foreign.test"@example.com>`, false},
	{"no domain", "postmaster", "<postmaster>", false},
	{"empty", "", "<>", false},
	{"mixed-case rcpthost", "user@EXAMPLE.Com", "<user@EXAMPLE.Com>", true},
	{"rcpthost with trailing dot", "user@example.com.", "<user@example.com.>", true},
	{"subdomain rcpthost", "user@mail.sub.example.com", "<user@mail.sub.example.com>", true},
}

// TestOpenRelay: a client that is neither a relay client nor authenticated
// must not get mail to any foreign destination through QMTP or SMTP, in any
// classic relay-test form; QMQP refuses clients off its allow list. A
// relay client and an authenticated user can relay; so can an allowed
// QMQP client. Nothing from the outsider ever reaches the foreign next hop.
func TestOpenRelay(t *testing.T) {
	h := newNetHost(t)
	pki := newPKI(t)
	pw := passwordFile(t, "joe", "s3cret")
	foreign := newSink(t, "qmtp", h.addr(t))
	qmtpA, qmqpA, smtpA := h.addr(t), h.addr(t), h.addr(t)
	outsider, relayer, qmqpOK := h.ip(10), h.ip(20), h.ip(30)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "relay.test"
rcpthosts = ["example.com", ".sub.example.com"]
[qmtp]
listen = [%q]
relay_clients = ["%s/32"]
[qmqp]
listen = [%q]
allow = ["%s/32"]
[smtp]
listen = [%q]
relay_clients = ["%s/32"]
tls_cert = %q
tls_key = %q
auth_file = %q
[queue]
retry_min = "300ms"
retry_max = "1s"
[[route]]
domains = ["example.com", ".sub.example.com"]
via = "maildir:{{DIR}}/maildir"
[[route]]
domains = ["*"]
via = "qmtp://%s"
`, qmtpA, relayer, qmqpA, qmqpOK, smtpA, relayer, pki.Cert, pki.Key, pw, foreign.addr()))
	d.start()
	led := newLedger()
	const dl = 10 * time.Second
	var sec strings.Builder
	sec.WriteString("From a client that is neither a relay client nor authenticated (rcpthosts: example.com, .sub.example.com).\n\n| form | QMTP recipient | QMTP reply | SMTP path | SMTP RCPT reply |\n|---|---|---|---|---|\n")
	accepted := 0
	for i, f := range relayForms {
		// QMTP, raw address.
		marker := fmt.Sprintf("relay-out-qmtp-%d", i)
		led.attempt(marker)
		r := exchange(qmtpA, outsider, qmtpPackage(makeBody(marker), "s@x.test", f.raw), true, dl)
		rs, _ := replies(r.Out)
		ok := len(rs) == 1 && (strings.HasPrefix(rs[0], "D") || (f.local && strings.HasPrefix(rs[0], "K")))
		if !ok {
			t.Errorf("QMTP %s %q from an outsider: %s", f.name, f.raw, describe(r))
		}
		if len(rs) == 1 && strings.HasPrefix(rs[0], "K") {
			accepted++
			led.result("QMTP", marker, f.raw, okStatus)
		}
		// SMTP, as a path.
		marker = fmt.Sprintf("relay-out-smtp-%d", i)
		led.attempt(marker)
		code, out := smtpRcpt(smtpA, outsider, f.smtp, marker, nil)
		ok = strings.HasPrefix(code, "5") || (f.local && code == "250")
		if !ok {
			t.Errorf("SMTP %s %s from an outsider: RCPT got %s\n%s", f.name, f.smtp, code, out)
		}
		if code == "250" && strings.Contains(out, " qp ") {
			accepted++
			led.result("SMTP", marker, f.raw, okStatus)
		}
		qr := "none"
		if len(rs) == 1 {
			qr = rs[0][:1] + " " + mail.ParseReply([]byte(rs[0])).EnhancedCode()
		}
		fmt.Fprintf(&sec, "| %s | `%s` | %s | `%s` | %s |\n", f.name, strings.ReplaceAll(f.raw, "|", "\\|"), qr, f.smtp, code)
	}
	addSection("Open relay address forms", sec.String())
	// QMQP off the allow list.
	r := exchange(qmqpA, outsider, qmqpRequest(makeBody("relay-out-qmqp"), "s@x.test", "user@example.com"), false, dl)
	rs, _ := replies(r.Out)
	if len(rs) != 1 || !strings.HasPrefix(rs[0], "D") {
		t.Errorf("QMQP from a client off the allow list: %s", describe(r))
	}

	// Those who may relay.
	var mayRelay []string
	send := func(name, proto string, ok bool, marker string) {
		if !ok {
			t.Errorf("%s could not relay", name)
			return
		}
		mayRelay = append(mayRelay, name)
		led.result(proto, marker, "friend@foreign.test", okStatus)
	}
	marker := "relay-in-qmtp"
	led.attempt(marker)
	r = exchange(qmtpA, relayer, qmtpPackage(makeBody(marker), "s@x.test", "friend@foreign.test"), true, dl)
	rs, _ = replies(r.Out)
	send("QMTP relay client", "QMTP", len(rs) == 1 && strings.HasPrefix(rs[0], "K"), marker)
	marker = "relay-in-smtp"
	led.attempt(marker)
	code, out := smtpRcpt(smtpA, relayer, "<friend@foreign.test>", marker, nil)
	send("SMTP relay client", "SMTP", code == "250" && strings.Contains(out, " qp "), marker)
	marker = "relay-in-auth"
	led.attempt(marker)
	code, out = smtpRcpt(smtpA, outsider, "<friend@foreign.test>", marker, &smtpAuth{user: "joe", pass: "s3cret"})
	send("SMTP user authenticated over STARTTLS", "SMTP", code == "250" && strings.Contains(out, " qp "), marker)
	if code, _ := smtpRcpt(smtpA, outsider, "<friend@foreign.test>", "relay-out-badauth", &smtpAuth{user: "joe", pass: "wrong"}); code == "250" {
		t.Error("a wrong password could relay")
	}
	marker = "relay-in-qmqp"
	led.attempt(marker)
	r = exchange(qmqpA, qmqpOK, qmqpRequest(makeBody(marker), "s@x.test", "friend@foreign.test"), false, dl)
	rs, _ = replies(r.Out)
	send("QMQP client on the allow list", "QMQP", len(rs) == 1 && strings.HasPrefix(rs[0], "K"), marker)

	testpeer.WaitFor(t, "the relayed messages at the foreign next hop", time.Minute, func() bool { return len(foreign.copies()) >= 4 })
	d.waitQueueEmpty(time.Minute)
	d.stop()
	leaked := 0
	for _, c := range foreign.copies() {
		if !strings.HasPrefix(c.Key.Marker, "relay-in-") {
			leaked++
			t.Errorf("%s reached the foreign next hop for %s", c.Key.Marker, c.Key.Rcpt)
		}
	}
	local := len(grepFiles(filepath.Join(d.dir, "maildir"), "relay-out-"))
	ds := scanMaildirs(filepath.Join(d.dir, "maildir"))
	for k, n := range sinkSet(foreign).count {
		ds.count[k] += n
	}
	tl := led.tally(ds)
	tl.check(t)
	report(t, &row{
		Test:   "Open relay attempts",
		Load:   fmt.Sprintf("%d address forms over QMTP and SMTP from an outsider, QMQP off its allow list", len(relayForms)),
		Inputs: "% hack, ! paths, quoted local parts with @ and %, source routes, address literals, trailing dots, rcpthost as prefix or suffix, mixed case, IDN and look-alikes, no domain, empty (listed below)",
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("every foreign form refused over QMTP (D) and SMTP (5xx); %d local forms accepted and delivered to the local Maildir (%d copies); "+
			"%d messages from the outsider reached the foreign hop; relayed as expected: %s.", accepted, local, leaked, strings.Join(mayRelay, ", ")),
	})
}

type smtpAuth struct{ user, pass string }

// smtpRcpt runs an SMTP transaction from src with one RCPT (the path as
// given) and returns the RCPT reply code and the transcript. With auth it
// does STARTTLS and AUTH PLAIN first.
func smtpRcpt(addr, src, path, marker string, auth *smtpAuth) (string, string) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "dial", err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	var conn net.Conn = c
	br := bufio.NewReader(conn)
	var tr strings.Builder
	cmd := func(s string) string {
		if s != "" {
			fmt.Fprintf(conn, "%s\r\n", s)
			tr.WriteString("> " + s + "\n")
		}
		code, text := readReply(br)
		tr.WriteString(text)
		return code
	}
	cmd("")
	cmd("EHLO relaytest.example")
	if auth != nil {
		if cmd("STARTTLS") != "220" {
			return "starttls", tr.String()
		}
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			return "handshake", err.Error()
		}
		conn = tc
		br = bufio.NewReader(conn)
		cmd("EHLO relaytest.example")
		if code := cmd("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+auth.user+"\x00"+auth.pass))); code != "235" {
			return code, tr.String()
		}
	}
	cmd("MAIL FROM:<s@x.test>")
	code := cmd("RCPT TO:" + path)
	if cmd("DATA") == "354" {
		fmt.Fprintf(conn, "%s", smtpData(makeBody(marker)))
		cmd("")
	}
	cmd("QUIT")
	return code, tr.String()
}
