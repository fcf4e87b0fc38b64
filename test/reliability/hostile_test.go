//go:build linux

package reliability

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// hostileDaemon starts the daemon the hostile-input tests attack: 1 MB
// messages, 20 connections per client address, 3 s per read, the given
// session cap, STARTTLS and AUTH on SMTP.
func hostileDaemon(t *testing.T, h *netHost, session string) (d *daemon, qmtpA, qmqpA, smtpA string) {
	pki := newPKI(t)
	pw := passwordFile(t, "joe", "s3cret")
	qmtpA, qmqpA, smtpA = h.addr(t), h.addr(t), h.addr(t)
	d = newDaemon(t, h, fmt.Sprintf(`
hostname = "hostile.test"
rcpthosts = ["example.com"]
max_message_bytes = 1048576
[limits]
max_conns = 400
max_conns_per_ip = 20
# Every QMQP client is on the allow list, and trusted networks count only
# towards max_conns by default; the per-client cap is what is tested here.
limit_trusted_conns = true
read_timeout = "3s"
write_timeout = "5s"
session_timeout = %q
[qmtp]
listen = [%q]
[qmqp]
listen = [%q]
allow = ["127.0.0.0/8"]
[smtp]
listen = [%q]
tls_cert = %q
tls_key = %q
auth_file = %q
[[route]]
domains = ["example.com"]
via = "maildir:{{DIR}}/maildir"
`, session, qmtpA, qmqpA, smtpA, pki.Cert, pki.Key, pw))
	d.start()
	return d, qmtpA, qmqpA, smtpA
}

// hostileCase is one attack and its verdict.
type hostileCase struct {
	name string
	ok   bool
	note string
}

type hostileLog struct {
	mu    sync.Mutex
	cases []hostileCase
}

func (hl *hostileLog) add(t *testing.T, name string, ok bool, format string, args ...any) {
	t.Helper()
	note := fmt.Sprintf(format, args...)
	hl.mu.Lock()
	hl.cases = append(hl.cases, hostileCase{name, ok, note})
	hl.mu.Unlock()
	if !ok {
		t.Errorf("%s: %s", name, note)
	}
}

// describe summarises what a session got: replies and whether it closed.
func describe(r exchangeResult) string {
	rs, rest := replies(r.Out)
	s := fmt.Sprintf("%d replies", len(rs))
	if len(rs) > 0 {
		s += fmt.Sprintf(" (first %.40q)", rs[0])
	}
	if len(rest) > 0 && len(rs) == 0 {
		s = fmt.Sprintf("%.60q", rest)
	}
	if r.Closed {
		s += fmt.Sprintf(", closed after %s", r.Elapsed.Round(time.Millisecond))
	} else {
		s += ", still open at the deadline"
	}
	return s
}

// TestHostileInput attacks the three listeners with malformed, oversized,
// smuggling, slow and idle sessions while a canary keeps sending. Each
// attack must get its expected reply or a closed connection within its
// deadline; nothing malformed may be queued; the daemon's memory stays
// bounded and its goroutines settle back once the attackers are gone.
func TestHostileInput(t *testing.T) {
	h := newNetHost(t)
	sessionCap := time.Duration(scale(12, 20)) * time.Second
	d, qmtpA, qmqpA, smtpA := hostileDaemon(t, h, sessionCap.String())
	led := newLedger()
	// Warm up (delivery workers start on first use), then take the
	// goroutine count at rest.
	probe(qmtpA, qmqpA, smtpA, "warmup@example.com", "hostile-warmup", led)
	d.waitQueueEmpty(time.Minute)
	time.Sleep(500 * time.Millisecond)
	baseGoroutines := d.goroutines()
	cn := startCanary(t, qmtpA, qmqpA, smtpA, h.ip(250), "example.com", led)
	hl := &hostileLog{}
	body := []byte("Subject: hostile\n\nhello\n")
	const dl = 10 * time.Second // deadline for a reply or a close

	// Slow and idle clients run alongside everything else.
	var slow sync.WaitGroup
	slow.Add(1)
	go func() {
		defer slow.Done()
		slowClients(t, hl, qmtpA, qmqpA, smtpA, h, sessionCap)
	}()

	// Netstrings, on the QMTP and QMQP listeners.
	for _, l := range []struct{ proto, addr string }{{"QMTP", qmtpA}, {"QMQP", qmqpA}} {
		for _, in := range []struct{ name, input string }{
			{"non-digit length", "12a:xyz,"},
			{"letters only", "hello world\r\n"},
			{"length 2^31", "2147483648:"},
			{"length 2^31+1 with data", "2147483649:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
			{"length 2^63", "9223372036854775808:"},
			{"length 2^64+1", "18446744073709551617:"},
			{"30-digit length", "123456789012345678901234567890:"},
			{"negative length", "-5:hello,"},
			{"space in length", "1 2:hello world,"},
		} {
			r := exchange(l.addr, "", []byte(in.input), false, dl)
			rs, _ := replies(r.Out)
			hl.add(t, l.proto+" netstring: "+in.name, r.Closed && !anyAccept(rs), "%s", describe(r))
		}
		// A wrong or missing comma after a complete netstring.
		var valid []byte
		if l.proto == "QMTP" {
			valid = qmtpPackage(body, "s@x.test", "nocomma@example.com")
		} else {
			valid = qmqpRequest(body, "s@x.test", "nocomma@example.com")
		}
		for _, c := range []struct{ name, sep string }{{"wrong comma", ";"}, {"missing comma", ""}, {"CRLF for comma", "\r\n"}} {
			in := append([]byte(nil), valid...)
			in = append(in[:len(in)-1], c.sep...)
			r := exchange(l.addr, "", in, true, dl)
			rs, _ := replies(r.Out)
			hl.add(t, l.proto+" netstring: "+c.name, r.Closed && !anyAccept(rs), "%s", describe(r))
		}
		// Truncation at every byte offset of a valid session.
		bad := 0
		for i := 0; i < len(valid); i++ {
			r := exchange(l.addr, "", valid[:i], true, dl)
			rs, _ := replies(r.Out)
			if !r.Closed || anyAccept(rs) {
				bad++
				if bad < 3 {
					t.Errorf("%s truncated at %d/%d: %s", l.proto, i, len(valid), describe(r))
				}
			}
		}
		hl.add(t, fmt.Sprintf("%s truncation at each of %d offsets", l.proto, len(valid)), bad == 0, "%d offsets misbehaved", bad)
	}

	// Leading zeros are accepted, as qmail does (qmail-qmtpd.c's getlen).
	{
		marker := "hostile-zeros"
		b := makeBody(marker)
		pkg := []byte(fmt.Sprintf("000%d:\n%s,0008:s@x.test,00%d:%s,", len(b)+1, b, len(netstr("zeros@example.com")), netstr("zeros@example.com")))
		led.attempt(marker)
		r := exchange(qmtpA, "", pkg, true, dl)
		rs, _ := replies(r.Out)
		if len(rs) == 1 && strings.HasPrefix(rs[0], "K") {
			led.result("QMTP", marker, "zeros@example.com", okStatus)
		}
		hl.add(t, "QMTP leading zeros", len(rs) == 1 && strings.HasPrefix(rs[0], "K"), "%s", describe(r))
	}

	// QMTP.
	{
		env := netstr("s@x.test") + netstr(netstr("mode@example.com"))
		r := exchange(qmtpA, "", []byte("6:Xhello,"+env), true, dl)
		rs, _ := replies(r.Out)
		hl.add(t, "QMTP bad mode byte", r.Closed && len(rs) == 0, "%s", describe(r))
		r = exchange(qmtpA, "", []byte("0:,"+env), true, dl)
		rs, _ = replies(r.Out)
		hl.add(t, "QMTP empty message netstring (no mode byte)", r.Closed && len(rs) == 0, "%s", describe(r))
		r = exchange(qmtpA, "", qmtpPackage(body, "s@x.test"), false, dl)
		rs, _ = replies(r.Out)
		hl.add(t, "QMTP zero recipients", r.Closed && len(rs) == 0, "%s", describe(r))

		marker := "hostile-nul"
		led.attempt(marker)
		r = exchange(qmtpA, "", qmtpPackage(makeBody(marker), "s@x.test", "nul@example.com", "n\x00ul@example.com", "nul@exa\x00mple.com"), true, dl)
		rs, _ = replies(r.Out)
		ok := len(rs) == 3 && strings.HasPrefix(rs[0], "K") && strings.HasPrefix(rs[1], "D") && strings.HasPrefix(rs[2], "D")
		if ok {
			led.result("QMTP", marker, "nul@example.com", okStatus)
		}
		hl.add(t, "QMTP NUL in an address", ok, "%s", describe(r))

		// 10,000 recipients: one reply each, in order; past max_recipients
		// (1000) a temporary failure.
		marker = "hostile-10k"
		led.attempt(marker)
		rcpts := make([]string, 10000)
		for i := range rcpts {
			rcpts[i] = fmt.Sprintf("many-%d@example.com", i)
		}
		r = exchange(qmtpA, "", qmtpPackage(makeBody(marker), "s@x.test", rcpts...), true, 30*time.Second)
		rs, _ = replies(r.Out)
		k, z := 0, 0
		for i, x := range rs {
			if strings.HasPrefix(x, "K") && i < 1000 {
				k++
				led.result("QMTP", marker, rcpts[i], okStatus)
			} else if strings.HasPrefix(x, "Z") && i >= 1000 {
				z++
			}
		}
		hl.add(t, "QMTP 10,000 recipients", len(rs) == 10000 && k == 1000 && z == 9000, "%d replies: %d K for the first 1000, %d Z after", len(rs), k, z)

		// 1,000 pipelined packages from one client.
		var in bytes.Buffer
		markers := make([]string, 1000)
		for i := range markers {
			markers[i] = fmt.Sprintf("hostile-pipe-%d", i)
			led.attempt(markers[i])
			in.Write(qmtpPackage(makeBody(markers[i]), "s@x.test", "pipe@example.com"))
		}
		t0 := time.Now()
		r = exchange(qmtpA, "", in.Bytes(), true, time.Minute)
		rs, _ = replies(r.Out)
		k = 0
		for i, x := range rs {
			if strings.HasPrefix(x, "K") {
				k++
				led.result("QMTP", markers[i], "pipe@example.com", okStatus)
			}
		}
		hl.add(t, "QMTP 1,000 pipelined packages", len(rs) == 1000 && k == 1000, "%d replies, %d K, in %s", len(rs), k, time.Since(t0).Round(time.Millisecond))
	}

	// QMQP specifics.
	{
		r := exchange(qmqpA, "", qmqpRequest(body, "s@x.test"), false, dl)
		rs, _ := replies(r.Out)
		hl.add(t, "QMQP zero recipients", r.Closed && len(rs) == 1 && strings.HasPrefix(rs[0], "D"), "%s", describe(r))
		r = exchange(qmqpA, "", qmqpRequest(body, "s@x.test", "n\x00ul@example.com"), false, dl)
		rs, _ = replies(r.Out)
		hl.add(t, "QMQP NUL in an address", r.Closed && len(rs) == 1 && !strings.HasPrefix(rs[0], "K"), "%s", describe(r))
		big := bytes.Repeat([]byte("x"), 2<<20)
		r = exchange(qmqpA, "", qmqpRequest(big, "s@x.test", "big@example.com"), false, dl)
		rs, _ = replies(r.Out)
		hl.add(t, "QMQP message over max_message_bytes", r.Closed && len(rs) == 1 && strings.HasPrefix(rs[0], "D") && strings.Contains(rs[0], "5.3.4"), "%s", describe(r))
	}

	// SMTP.
	smtpHostile(t, hl, led, smtpA, d, h)

	testpeer.Wait(t, "the slow and idle clients", stuckAfter, &slow)
	cn.finish()

	// Truncated and malformed sessions queued nothing; smuggled
	// transactions reached nobody.
	root := filepath.Join(d.dir, "maildir")
	acked := led.ackedKeys()
	testpeer.WaitFor(t, "every acknowledged message in its Maildir", 2*time.Minute, func() bool {
		return scanMaildirs(root, "barelf", "barecr", "smuggle", "trunc", "lfcmd").holdsAll(acked)
	})
	if !d.waitQueueEmpty(time.Minute) {
		t.Errorf("queue not empty: %d", d.queued())
	}
	for _, box := range []string{"nocomma", "mode", "victim", "evil", "big", "toolarge", "trunc"} {
		if n := countMaildir(root, "example.com", box); n > 0 && box != "trunc" {
			t.Errorf("%d messages reached %s@example.com from malformed or smuggled input", n, box)
		}
	}
	if n := countMaildir(root, "example.com", "trunc"); n != smtpTruncAccepted {
		t.Errorf("%d truncated SMTP sessions queued a message, %d were acknowledged", n, smtpTruncAccepted)
	}
	if files := grepFiles(root, "Return-Path: <evil@evil.test>"); len(files) > 0 {
		t.Errorf("smuggled transactions were delivered: %v", files)
	}
	peak := d.procStatus("VmHWM")
	var settled int
	ok := testpeer.Poll(30*time.Second, 25*time.Millisecond, func() bool {
		settled = d.goroutines()
		return settled <= baseGoroutines+10
	})
	if !ok {
		t.Errorf("goroutines did not settle: %d at rest before, %d after:\n%s", baseGoroutines, settled, d.goroutineDump())
	}
	const maxRSS = 400 << 20
	if peak > maxRSS {
		t.Errorf("peak RSS %d MB exceeds %d MB", peak>>20, maxRSS>>20)
	}
	d.stop()
	tl := led.tally(scanMaildirs(root, "barelf", "barecr", "smuggle", "trunc", "lfcmd"))
	bad := 0
	for _, c := range hl.cases {
		if !c.ok {
			bad++
		}
	}
	var sec strings.Builder
	sec.WriteString("Each case against the running daemon, with its verdict and what the attacker saw.\n\n| case | verdict | outcome |\n|---|---|---|\n")
	for _, c := range hl.cases {
		v := "pass"
		if !c.ok {
			v = "**FAIL**"
		}
		fmt.Fprintf(&sec, "| %s | %s | %s |\n", cell(c.name), v, cell(c.note))
	}
	addSection("Hostile input cases", sec.String())
	report(t, &row{
		Test: "Hostile input on QMTP, QMQP and SMTP",
		Load: fmt.Sprintf("%d attack cases (plus %d truncated sessions) and a canary sender", len(hl.cases), truncSessions),
		Inputs: "netstrings (non-digits, lengths past 2^31, 2^63 and 2^64, leading zeros, wrong or missing commas, truncation at every offset) on QMTP and QMQP; " +
			"QMTP bad mode byte, zero recipients, NUL, 10,000 recipients, 1,000 pipelined packages; SMTP bare LF/CR, 12 smuggling variants, 10 MB line, " +
			"STARTTLS injection, oversized DATA, AUTH brute force; slow (1 byte/s) and idle clients up to the per-address cap (see the cases below)",
		Acked: tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("%d cases failed; %s; peak RSS %d MB (limit %d MB); goroutines %d at rest before, %d after; nothing from malformed, truncated or smuggled input was queued.",
			bad, cn.summary(), peak>>20, maxRSS>>20, baseGoroutines, settled),
	})
	tl.check(t)
}

var okStatus = mail.OK("")

// smtpTruncAccepted counts truncated SMTP sessions that still carried the
// whole transaction (cut after the final dot); truncSessions counts all
// truncated sessions.
var smtpTruncAccepted, truncSessions int

// smtpHostile runs the SMTP attacks.
func smtpHostile(t *testing.T, hl *hostileLog, led *ledger, smtpA string, d *daemon, h *netHost) {
	const dl = 10 * time.Second
	// Truncation at every byte offset.
	sess := "EHLO trunc.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<trunc@example.com>\r\nDATA\r\nSubject: t\r\n\r\nhello\r\n.\r\nQUIT\r\n"
	dotEnd := strings.Index(sess, "\r\n.\r\n") + len("\r\n.\r\n")
	smtpTruncAccepted = 0 // this run's daemon and Maildir only (go test -count)
	bad := 0
	for i := 0; i < len(sess); i++ {
		r := exchange(smtpA, "", []byte(sess[:i]), true, dl)
		acc := smtpAccepted(r.Out)
		if !r.Closed || (i < dotEnd && acc > 0) || acc > 1 {
			bad++
			if bad < 3 {
				t.Errorf("SMTP truncated at %d/%d: accepted %d, closed %v: %.200q", i, len(sess), acc, r.Closed, r.Out)
			}
		}
		smtpTruncAccepted += acc
	}
	truncSessions = len(sess)
	hl.add(t, fmt.Sprintf("SMTP truncation at each of %d offsets", len(sess)), bad == 0, "%d offsets misbehaved", bad)

	head := "EHLO hostile.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<%s@example.com>\r\nDATA\r\n"
	// Bare LF and bare CR in the message.
	r := exchange(smtpA, "", []byte(fmt.Sprintf(head, "barelf")+"Subject: lf\r\n\r\nbare\nlf\r\n.\r\nQUIT\r\n"), false, dl)
	hl.add(t, "SMTP bare LF in DATA", r.Closed && smtpAccepted(r.Out) <= 1, "%s", smtpSummary(r))
	r = exchange(smtpA, "", []byte(fmt.Sprintf(head, "barecr")+"Subject: cr\r\n\r\nbare\rcr\r\n.\r\nQUIT\r\n"), false, dl)
	hl.add(t, "SMTP bare CR in DATA", r.Closed && smtpAccepted(r.Out) == 0, "%s", smtpSummary(r))
	r = exchange(smtpA, "", []byte("EHLO lf.test\nMAIL FROM:<s@x.test>\nRCPT TO:<lfcmd@example.com>\nQUIT\n"), false, dl)
	hl.add(t, "SMTP commands ending in bare LF", r.Closed, "%s", smtpSummary(r))
	r = exchange(smtpA, "", []byte("EHLO cr.test\rMAIL FROM:<s@x.test>\rQUIT\r"), true, dl)
	hl.add(t, "SMTP commands ending in bare CR", r.Closed, "%s", smtpSummary(r))

	// Every "\n.\n" smuggling variant: a second transaction hidden in the
	// data must never reach victim@example.com.
	smuggled := "MAIL FROM:<evil@evil.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"
	for _, v := range []string{"\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\r.\n", "\n.\r", "\r\n.\r", "\r.\r", "\r\n\x00.\r\n", "\r\n.\x00\r\n", "\r\n .\r\n", "\n..\n"} {
		in := fmt.Sprintf(head, "smuggle") + "Subject: smuggle\r\n\r\nhello" + v + smuggled + "\r\n.\r\nQUIT\r\n"
		r := exchange(smtpA, "", []byte(in), false, dl)
		hl.add(t, fmt.Sprintf("SMTP smuggling %q", v), r.Closed && smtpAccepted(r.Out) <= 1, "%s", smtpSummary(r))
	}

	// A 10 MB command line.
	line := "MAIL FROM:<" + strings.Repeat("a", 10<<20) + "@x.test>\r\n"
	r = exchange(smtpA, "", []byte("EHLO long.test\r\n"+line), false, dl)
	hl.add(t, "SMTP 10 MB command line", r.Closed && bytes.Contains(r.Out, []byte("\r\n500")), "%s", smtpSummary(r))

	// Commands injected before STARTTLS completes must not run inside TLS.
	hl.add(t, "SMTP commands injected before STARTTLS completes", starttlsInjection(t, smtpA), "the injected MAIL FROM was discarded")

	// DATA over the size limit.
	big := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n", (3<<20)/74)
	r = exchange(smtpA, "", []byte(fmt.Sprintf(head, "toolarge")+big+".\r\nQUIT\r\n"), false, 20*time.Second)
	hl.add(t, "SMTP DATA over max_message_bytes", r.Closed && smtpAccepted(r.Out) == 0 && bytes.Contains(r.Out, []byte("552")), "%s", smtpSummary(r))
	r = exchange(smtpA, "", []byte("EHLO size.test\r\nMAIL FROM:<s@x.test> SIZE=999999999\r\nQUIT\r\n"), false, dl)
	hl.add(t, "SMTP MAIL SIZE= over the limit", r.Closed && bytes.Contains(r.Out, []byte("552")), "%s", smtpSummary(r))

	// AUTH brute force: three wrong passwords end the connection; past the
	// per-address limit the attacker's address is refused unchecked, while
	// the right password from another address still works.
	hl.add(t, "SMTP AUTH brute force", authBruteForce(t, smtpA, h.ip(249)), "wrong passwords get 535 then 421 and a close; then the attacking address gets 421 unchecked even with the right password, and the right password from another address works")
}

func smtpSummary(r exchangeResult) string {
	var codes []string
	for _, l := range strings.Split(string(r.Out), "\n") {
		if len(l) >= 3 && (len(l) == 3 || l[3] == ' ') {
			codes = append(codes, l[:3])
		}
	}
	s := "replies " + strings.Join(codes, " ")
	if r.Closed {
		s += fmt.Sprintf(", closed after %s", r.Elapsed.Round(time.Millisecond))
	} else {
		s += ", still open at the deadline"
	}
	return s
}

// starttlsInjection sends STARTTLS and a MAIL FROM in one packet, then
// completes TLS: the server must refuse the STARTTLS and hang up (421, RFC
// 3207 5), or a RCPT inside TLS must find no transaction (503).
func starttlsInjection(t *testing.T, addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Error(err)
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(c)
	readReply(br)
	fmt.Fprintf(c, "EHLO inject.test\r\n")
	readReply(br)
	fmt.Fprintf(c, "STARTTLS\r\nMAIL FROM:<evil@evil.test>\r\n")
	code, _ := readReply(br)
	if code == "421" {
		code, _ = readReply(br) // then closed
	}
	if code != "220" {
		return code == "" // closed: fine
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		return true // the server dropped the connection: fine
	}
	tbr := bufio.NewReader(tc)
	fmt.Fprintf(tc, "EHLO inject.test\r\n")
	readReply(tbr)
	fmt.Fprintf(tc, "RCPT TO:<victim@example.com>\r\n")
	code, text := readReply(tbr)
	if code == "250" {
		t.Errorf("RCPT inside TLS accepted after a MAIL injected before STARTTLS: %s", text)
		return false
	}
	return true
}

// readReply reads one (possibly multi-line) SMTP reply.
func readReply(br *bufio.Reader) (code, text string) {
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return code, text
		}
		text += l
		if len(l) >= 4 && l[3] == ' ' {
			return l[:3], text
		}
		if len(l) < 4 {
			return "", text
		}
	}
}

// authBruteForce tries wrong passwords over STARTTLS from 127.0.0.1, then
// the right one from there (refused unchecked: the address is over the
// per-address failure limit) and from friend (accepted).
func authBruteForce(t *testing.T, addr, friend string) bool {
	try := func(pass string, attempts int, src ...string) []string {
		d := net.Dialer{Timeout: 5 * time.Second}
		if len(src) > 0 {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src[0])}
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return []string{"dial " + err.Error()}
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReader(c)
		readReply(br)
		fmt.Fprintf(c, "EHLO brute.test\r\n")
		readReply(br)
		fmt.Fprintf(c, "STARTTLS\r\n")
		if code, _ := readReply(br); code != "220" {
			return []string{"no STARTTLS " + code}
		}
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		if tc.Handshake() != nil {
			return []string{"handshake"}
		}
		tbr := bufio.NewReader(tc)
		fmt.Fprintf(tc, "EHLO brute.test\r\n")
		readReply(tbr)
		var codes []string
		for i := 0; i < attempts; i++ {
			cred := base64.StdEncoding.EncodeToString([]byte("\x00joe\x00" + pass))
			if _, err := fmt.Fprintf(tc, "AUTH PLAIN %s\r\n", cred); err != nil {
				codes = append(codes, "closed")
				break
			}
			code, _ := readReply(tbr)
			if code == "" {
				codes = append(codes, "closed")
				break
			}
			codes = append(codes, code)
		}
		return codes
	}
	var wg sync.WaitGroup
	results := make([][]string, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = try(fmt.Sprintf("guess%d", i), 10)
		}()
	}
	testpeer.Wait(t, "the password guessers", stuckAfter, &wg)
	ok := true
	for _, codes := range results {
		// 535, 535, 421, then the connection is gone.
		if len(codes) < 3 || codes[0] != "535" || codes[1] != "535" || codes[2] != "421" || (len(codes) > 3 && codes[3] != "closed") {
			t.Errorf("brute force replies: %v", codes)
			ok = false
		}
	}
	if codes := try("s3cret", 1); len(codes) != 1 || codes[0] != "421" {
		t.Errorf("the right password from the attacking address after a brute force (want 421 unchecked): %v", codes)
		ok = false
	}
	if codes := try("s3cret", 1, friend); len(codes) != 1 || codes[0] != "235" {
		t.Errorf("the right password from another address after a brute force: %v", codes)
		ok = false
	}
	return ok
}

// slowClients: one byte per second (closed at the session cap), idle
// connections (closed at the read timeout), and idle connections up to
// the per-client cap (the next one refused politely).
func slowClients(t *testing.T, hl *hostileLog, qmtpA, qmqpA, smtpA string, h *netHost, sessionCap time.Duration) {
	var wg sync.WaitGroup
	trickle := func(name, addr string, input []byte, capAt time.Duration) {
		defer wg.Done()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			hl.add(t, name, false, "dial: %v", err)
			return
		}
		defer c.Close()
		start := time.Now()
		closed := make(chan []byte, 1)
		go func() {
			var out bytes.Buffer
			c.SetReadDeadline(time.Now().Add(capAt + 15*time.Second))
			out.ReadFrom(c)
			closed <- out.Bytes()
		}()
		for i := 0; ; i = (i + 1) % len(input) {
			if _, err := c.Write(input[i : i+1]); err != nil {
				break
			}
			select {
			case <-time.After(time.Second):
				continue
			case out := <-closed:
				took := time.Since(start)
				rs, _ := replies(out)
				hl.add(t, name, took < capAt+10*time.Second && !anyAccept(rs), "closed after %s (session cap %s)", took.Round(time.Millisecond), capAt)
				return
			}
		}
		out := <-closed
		took := time.Since(start)
		rs, _ := replies(out)
		hl.add(t, name, took < capAt+10*time.Second && !anyAccept(rs), "closed after %s (session cap %s)", took.Round(time.Millisecond), capAt)
	}
	wg.Add(3)
	go trickle("QMTP one byte per second", qmtpA, qmtpPackage([]byte("Subject: slow\n\nx\n"), "s@x.test", "slow@example.com"), sessionCap)
	go trickle("QMQP one byte per second", qmqpA, qmqpRequest([]byte("Subject: slow\n\nx\n"), "s@x.test", "slow@example.com"), sessionCap)
	go trickle("SMTP one byte per second", smtpA, []byte("EHLO slow.test\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n"), sessionCap)

	// Idle connections up to the per-client cap (20), from one address:
	// the 21st is refused politely, the 20 are closed at the read timeout.
	for i, l := range []struct{ proto, addr string }{{"QMTP", qmtpA}, {"QMQP", qmqpA}, {"SMTP", smtpA}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := h.ip(200 + i)
			var conns []net.Conn
			for j := 0; j < 20; j++ {
				c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).Dial("tcp", l.addr)
				if err != nil {
					hl.add(t, l.proto+" idle connections", false, "dial %d: %v", j, err)
					return
				}
				conns = append(conns, c)
			}
			// Let the server take all 20 before the 21st comes.
			time.Sleep(300 * time.Millisecond)
			r := exchange(l.addr, src, nil, false, 10*time.Second)
			rs, _ := replies(r.Out)
			polite := r.Closed && ((l.proto != "SMTP" && len(rs) == 1 && strings.HasPrefix(rs[0], "Z")) ||
				(l.proto == "SMTP" && bytes.HasPrefix(r.Out, []byte("421"))))
			hl.add(t, l.proto+" connection over max_conns_per_ip", polite, "%s %.60q", describe(r), r.Out)
			start := time.Now()
			var mu sync.Mutex
			longest := time.Duration(0)
			var cw sync.WaitGroup
			for _, c := range conns {
				cw.Add(1)
				go func() {
					defer cw.Done()
					c.SetReadDeadline(time.Now().Add(30 * time.Second))
					var b [512]byte
					for {
						if _, err := c.Read(b[:]); err != nil {
							break
						}
					}
					mu.Lock()
					longest = max(longest, time.Since(start))
					mu.Unlock()
					c.Close()
				}()
			}
			cw.Wait()
			hl.add(t, l.proto+" 20 idle connections", longest < 3*time.Second+10*time.Second, "all closed within %s (read timeout 3 s)", longest.Round(time.Millisecond))
		}()
	}
	wg.Wait()
}

// grepFiles lists files under root containing s.
func grepFiles(root, s string) []string {
	var out []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(s)) {
				out = append(out, p)
			}
		}
		return nil
	})
	return out
}
