//go:build linux

package reliability

// The attacks of the adversarial review (issue 12), each against a running
// daemon: one test, and one row of RELIABILITY.md, per class.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/smtp"
)

// qmtpSend sends one QMTP package from src and records each recipient's
// reply in the ledger; it returns the replies.
func qmtpSend(led *ledger, addr, src, marker, sender string, rcpts ...string) []string {
	led.attempt(marker)
	r := exchange(addr, src, qmtpPackage(bodyFor(marker), sender, rcpts...), true, 20*time.Second)
	rs, _ := replies(r.Out)
	if len(rs) == len(rcpts) {
		for i, rc := range rcpts {
			led.result("QMTP", marker, rc, mail.ParseReply([]byte(rs[i])))
		}
	}
	return rs
}

// smtpConv is a hand-driven SMTP session.
type smtpConv struct {
	c  net.Conn
	br *bufio.Reader
	tr strings.Builder
}

func dialSMTP(addr, src string) (*smtpConv, string, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	s := &smtpConv{c: c, br: bufio.NewReader(c)}
	code := s.cmd("")
	return s, code, nil
}

// cmd sends a line (none when empty) and returns the reply's code.
func (s *smtpConv) cmd(line string) string {
	if line != "" {
		fmt.Fprintf(s.c, "%s\r\n", line)
		s.tr.WriteString("> " + line + "\n")
	}
	return s.reply()
}

// raw sends bytes as they are and returns the reply's code.
func (s *smtpConv) raw(b []byte) string {
	s.c.Write(b)
	s.tr.WriteString(fmt.Sprintf("> %.60q\n", b))
	return s.reply()
}

func (s *smtpConv) reply() string {
	code, text := readReply(s.br)
	s.tr.WriteString(text)
	return code
}

func (s *smtpConv) close() { s.c.Close() }

// smtpSendData runs MAIL, one RCPT and DATA with data (already rendered,
// terminating dot included) and returns the RCPT and the DATA end codes.
func smtpSendData(addr, src, from, rcpt string, data []byte) (rcptCode, dataCode, transcript string) {
	s, code, err := dialSMTP(addr, src)
	if err != nil {
		return "dial", "dial", err.Error()
	}
	defer s.close()
	if code != "220" {
		return code, "", s.tr.String()
	}
	s.cmd("EHLO battery.test")
	s.cmd("MAIL FROM:" + from)
	rcptCode = s.cmd("RCPT TO:" + rcpt)
	if rcptCode == "250" && s.cmd("DATA") == "354" {
		dataCode = s.raw(data)
	}
	s.cmd("QUIT")
	return rcptCode, dataCode, s.tr.String()
}

// smtpStatus turns an SMTP code from a transcript into a status for the
// ledger.
func smtpStatus(code string) mail.Status {
	switch {
	case code == "250":
		return mail.OK("")
	case strings.HasPrefix(code, "5"):
		return mail.Perm("5.0.0", "refused")
	}
	return mail.Temp("4.0.0", "temporary")
}

// newIPCert makes a CA and a server certificate for ip, as PEM files the
// daemon's user can read; it returns the CA file and the certificate.
func newIPCert(t *testing.T, ip string) (string, tls.Certificate) {
	t.Helper()
	dir, err := os.MkdirTemp(workRoot, "ipcert-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	ca := testpeer.NewCA(t, "qmgate battery CA", dir)
	return ca.File, ca.Issue(ip, x509.ExtKeyUsageServerAuth, ip)
}

// credDelivery is one message a credential-recording sink took: on what
// kind of session, and for whom.
type credDelivery struct {
	TLS   bool
	User  string
	Rcpts []string
}

// credSink is an SMTP next hop offering STARTTLS and AUTH (also without
// TLS, so that credentials sent where they should not go are seen).
type credSink struct {
	*sink
	mu     sync.Mutex
	got    []credDelivery
	logins []string // "user tls=BOOL" per AUTH attempt
}

type credAuth struct{ k *credSink }

func (a credAuth) Authenticate(ctx context.Context, user, pass string) (bool, error) {
	a.k.mu.Lock()
	a.k.logins = append(a.k.logins, user+":"+pass)
	a.k.mu.Unlock()
	return true, nil
}

type credHandler struct{ k *credSink }

func (credHandler) Sender(ctx context.Context, c *mail.ConnInfo, from string) mail.Status {
	return mail.OK("")
}

func (credHandler) Recipient(ctx context.Context, c *mail.ConnInfo, from, rcpt string) mail.Status {
	return mail.OK("")
}

func (h credHandler) Deliver(ctx context.Context, c *mail.ConnInfo, env mail.Envelope, body io.Reader) mail.Status {
	b, err := io.ReadAll(body)
	if err != nil {
		return mail.Temp("4.3.0", "read failed")
	}
	h.k.mu.Lock()
	h.k.got = append(h.k.got, credDelivery{TLS: c.TLS != nil, User: c.AuthUser, Rcpts: append([]string(nil), env.Recipients...)})
	h.k.mu.Unlock()
	return h.k.take(c, env, b)
}

func newCredSink(t *testing.T, addr string, cert tls.Certificate) *credSink {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	k := &credSink{sink: &sink{t: t, proto: "smtp", l: l, accepted: map[string]time.Time{}, runs: map[string]int{}}}
	k.ssrv = &smtp.Server{Handler: credHandler{k}, Hostname: "sink.test", ErrorLog: quietLog,
		MaxConns: -1, MaxConnsPerIP: -1, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Auth: credAuth{k}, AllowInsecureAuth: true}
	go k.ssrv.Serve(acceptLog{l, k.sink, 0})
	t.Cleanup(k.close)
	return k
}

// TestSharedVia: two routes to one SMTP next hop, one plain and without
// credentials, one with verified TLS and a login. Packages name their
// recipients in both orders; every message must travel with its own
// route's settings: the login only ever over TLS and only with the
// secret route's recipients, the plain route's recipients never on it.
func TestSharedVia(t *testing.T) {
	h := newNetHost(t)
	caFile, cert := newIPCert(t, h.ip(1))
	k := newCredSink(t, h.addr(t), cert)
	qmtpA := h.addr(t)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "via.test"
rcpthosts = ["plain.test", "secret.test"]
[qmtp]
listen = [%q]
[queue]
retry_min = "300ms"
retry_max = "1s"
[[route]]
domains = ["plain.test"]
via = "smtp://%s"
tls = "none"
[[route]]
domains = ["secret.test"]
via = "smtp://%s"
tls = "required"
ca_file = %q
username = "routeb"
password = "b-secret"
`, qmtpA, k.addr(), k.addr(), caFile))
	d.start()
	led := newLedger()
	n := scale(6, 40)
	for i := range n {
		a, b := fmt.Sprintf("a%d@plain.test", i), fmt.Sprintf("b%d@secret.test", i)
		rc := []string{a, b}
		if i%2 == 1 {
			rc = []string{b, a}
		}
		if rs := qmtpSend(led, qmtpA, "", fmt.Sprintf("via-%d", i), "s@x.test", rc...); len(rs) != 2 || !anyAccept(rs) {
			t.Errorf("package %d (%v): %q", i, rc, rs)
		}
	}
	testpeer.WaitFor(t, "every recipient at the sink", time.Minute, func() bool { return len(k.copies()) >= led.ackedCount() })
	d.waitQueueEmpty(30 * time.Second)
	d.stop()
	k.mu.Lock()
	got, logins := append([]credDelivery(nil), k.got...), append([]string(nil), k.logins...)
	k.mu.Unlock()
	wrong := 0
	for _, g := range got {
		for _, r := range g.Rcpts {
			secret := strings.HasSuffix(r, "@secret.test")
			if secret != (g.TLS && g.User == "routeb") || (!secret && (g.TLS || g.User != "")) {
				wrong++
				t.Errorf("%s delivered with TLS %v, login %q", r, g.TLS, g.User)
			}
		}
	}
	for _, l := range logins {
		if l != "routeb:b-secret" {
			t.Errorf("unexpected login %q", l)
		}
	}
	tl := led.tally(sinkSet(k.sink))
	tl.check(t)
	report(t, &row{
		Test:   "Routes sharing a next hop (issue 12 hole)",
		Load:   fmt.Sprintf("%d QMTP packages, each to one recipient of a plain route and one of a verified-TLS route with a login, same SMTP next hop", n),
		Inputs: "recipient orders [plain, secret] and [secret, plain]",
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("%d transactions at the sink, %d logins (all over verified TLS, all with the secret route's recipients only); %d recipients on a session with the wrong route's TLS or login.",
			len(got), len(logins), wrong),
	})
}

// TestBackscatter: a stranger's recipients whose mailbox names the local
// transport would refuse, a KELVIN SIGN look-alike of a user, a newline in
// a local part, and users not in the route's users file are refused at
// the door on QMTP and SMTP, so nothing is queued and nothing bounces to
// the (forged) sender. Known users are still served.
func TestBackscatter(t *testing.T) {
	h := newNetHost(t)
	bounces := newSink(t, "qmtp", h.addr(t))
	qmtpA, smtpA := h.addr(t), h.addr(t)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "door.test"
rcpthosts = ["example.com"]
[qmtp]
listen = [%q]
[smtp]
listen = [%q]
[queue]
retry_min = "300ms"
retry_max = "1s"
[[route]]
domains = ["example.com"]
via = "maildir:{{DIR}}/maildir"
users_file = "{{DIR}}/users"
max_new_mailboxes_per_hour = 5
[[route]]
domains = ["*"]
via = "qmtp://%s"
`, qmtpA, smtpA, bounces.addr()))
	if err := os.WriteFile(filepath.Join(d.dir, "users"), []byte("# valid users\nkate\njoe\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.start()
	led := newLedger()
	stranger := h.ip(10)
	qmtpBad := []struct{ name, rcpt string }{
		{"parent directory", "../x@example.com"},
		{"path", "a/../../etc@example.com"},
		{"leading dash", "-oQ@example.com"},
		{"leading dot", ".hidden@example.com"},
		{"control character", "ka\x01te@example.com"},
		{"newline in the local part", "kate\nBcc: y@example.com"},
		{"KELVIN SIGN for K", "\u212Aate@example.com"},
		{"not in the users file", "nosuchuser@example.com"},
	}
	smtpBad := []struct{ name, path string }{
		{"quoted parent directory", `<"../x"@example.com>`},
		{"leading dash", "<-oQ@example.com>"},
		{"quoted control character", "<\"ka\x01te\"@example.com>"},
		{"KELVIN SIGN for K", "<\u212Aate@example.com>"},
		{"not in the users file", "<nosuchuser@example.com>"},
	}
	var cases []string
	refused := 0
	for i, c := range qmtpBad {
		rs := qmtpSend(led, qmtpA, stranger, fmt.Sprintf("door-qmtp-%d", i), "victim@forged.test", c.rcpt)
		if len(rs) != 1 || !strings.HasPrefix(rs[0], "D") {
			t.Errorf("QMTP %s (%q): %q", c.name, c.rcpt, rs)
		} else {
			refused++
		}
		cases = append(cases, "QMTP "+c.name)
	}
	for i, c := range smtpBad {
		marker := fmt.Sprintf("door-smtp-%d", i)
		led.attempt(marker)
		rc, dc, tr := smtpSendData(smtpA, stranger, "<victim@forged.test>", c.path, smtpData(makeBody(marker)))
		if !strings.HasPrefix(rc, "5") {
			t.Errorf("SMTP %s %q: RCPT %s, DATA %s\n%s", c.name, c.path, rc, dc, tr)
		} else {
			refused++
		}
		if dc == "250" {
			led.result("SMTP", marker, c.path, mail.OK(""))
		}
		cases = append(cases, "SMTP "+c.name)
	}
	// Known users, both listeners.
	for i, u := range []string{"kate@example.com", "joe@example.com"} {
		if rs := qmtpSend(led, qmtpA, stranger, fmt.Sprintf("door-ok-qmtp-%d", i), "s@x.test", u); len(rs) != 1 || !strings.HasPrefix(rs[0], "K") {
			t.Errorf("QMTP to known user %s: %q", u, rs)
		}
		marker := fmt.Sprintf("door-ok-smtp-%d", i)
		led.attempt(marker)
		_, dc, tr := smtpSendData(smtpA, stranger, "<s@x.test>", "<"+u+">", smtpData(makeBody(marker)))
		led.result("SMTP", marker, u, smtpStatus(dc))
		if dc != "250" {
			t.Errorf("SMTP to known user %s: %s\n%s", u, dc, tr)
		}
	}
	if !d.waitQueueEmpty(time.Minute) {
		t.Error("queue not empty a minute on")
	}
	time.Sleep(time.Second) // a bounce, had one been made, would be under way
	d.stop()
	boxes, _ := filepath.Glob(filepath.Join(d.dir, "maildir", "*", "*"))
	for _, b := range boxes {
		if n := filepath.Base(b); n != "kate" && n != "joe" {
			t.Errorf("mailbox %q created", b)
		}
	}
	if n := len(bounces.copies()); n > 0 {
		t.Errorf("%d bounces sent to the forged sender", n)
	}
	tl := led.tally(scanMaildirs(filepath.Join(d.dir, "maildir")))
	tl.check(t)
	report(t, &row{
		Test:   "Backscatter: unsafe and unknown mailboxes",
		Load:   fmt.Sprintf("%d hostile recipients from a stranger with a forged sender (%d QMTP, %d SMTP), 4 messages to known users", len(cases), len(qmtpBad), len(smtpBad)),
		Inputs: "../ and paths, leading - and ., control characters, a newline in the local part, KELVIN SIGN (U+212A) for K, users missing from users_file",
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("%d of %d refused at the door (QMTP D, SMTP 5xx at RCPT); %d bounces to the forged sender; mailboxes created: %d (kate and joe only).",
			refused, len(cases), len(bounces.copies()), len(boxes)),
	})
}

// TestAuthCPU: an address that keeps failing AUTH is answered 421 or 454
// without a password check once it passes the per-address limit (even
// with the right password), while another client logs in and is served.
func TestAuthCPU(t *testing.T) {
	h := newNetHost(t)
	pw := passwordFile(t, "joe", "s3cret")
	smtpA := h.addr(t)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "auth.test"
rcpthosts = ["example.com"]
[smtp]
listen = [%q]
auth_file = %q
auth_without_tls = true
[[route]]
domains = ["*"]
via = "maildir:{{DIR}}/maildir"
`, smtpA, pw))
	d.start()
	led := newLedger()
	attacker, friend := h.ip(10), h.ip(20)
	auth := func(s *smtpConv, user, pass string) string {
		return s.cmd("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)))
	}
	// Each connection may fail 3 times (the third failure ends it with
	// 421); past the per-address limit every AUTH, on every connection,
	// is answered 421 or 454 without a password check.
	codes := map[string]int{}
	var seq []string
	blockedAt := -1
	conns := scale(8, 20)
	for i := range conns {
		s, _, err := dialSMTP(smtpA, attacker)
		if err != nil {
			t.Fatal(err)
		}
		s.cmd("EHLO attacker.test")
		for j := range 3 {
			c := auth(s, "joe", fmt.Sprintf("guess-%d-%d", i, j))
			codes[c]++
			seq = append(seq, c)
			if j == 0 && (c == "421" || c == "454") && blockedAt < 0 {
				blockedAt = len(seq) - 1
			}
			if c == "235" {
				t.Errorf("a wrong password was accepted: %v", seq)
			}
			if c != "535" {
				break
			}
		}
		s.close()
	}
	if blockedAt < 0 {
		t.Errorf("%d failing AUTHs from one address never got 421 or 454 unchecked: %v", len(seq), seq)
	} else {
		for _, c := range seq[blockedAt:] {
			if c != "421" && c != "454" {
				t.Errorf("after the address was blocked it got %s again: %v", c, seq)
				break
			}
		}
	}
	checked := 0
	if blockedAt >= 0 {
		checked = blockedAt
	}
	// The right password from the blocked address is not checked either.
	s, _, err := dialSMTP(smtpA, attacker)
	rightBlocked := ""
	if err == nil {
		s.cmd("EHLO attacker.test")
		rightBlocked = auth(s, "joe", "s3cret")
		s.close()
	}
	if rightBlocked == "235" {
		t.Error("the blocked address could still log in (its password checks are not bounded)")
	}
	// A legitimate client from another address logs in and sends.
	marker := "auth-friend"
	led.attempt(marker)
	s, _, err = dialSMTP(smtpA, friend)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd("EHLO friend.test")
	ac := auth(s, "joe", "s3cret")
	if ac != "235" {
		t.Errorf("the legitimate client's AUTH got %s\n%s", ac, s.tr.String())
	}
	s.cmd("MAIL FROM:<joe@example.com>")
	s.cmd("RCPT TO:<friend@example.com>")
	if s.cmd("DATA") == "354" {
		led.result("SMTP", marker, "friend@example.com", smtpStatus(s.raw(smtpData(makeBody(marker)))))
	}
	s.cmd("QUIT")
	s.close()
	d.waitQueueEmpty(time.Minute)
	d.stop()
	tl := led.tally(scanMaildirs(filepath.Join(d.dir, "maildir")))
	tl.check(t)
	report(t, &row{
		Test:   "AUTH as a CPU weapon",
		Load:   fmt.Sprintf("%d connections from one address, up to 3 wrong passwords each; one legitimate client from another address", conns),
		Inputs: "wrong passwords past the per-address limit, then the right one from the same address",
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("replies to the attacker's %d AUTHs: %s (each connection ended by 421 at its third failure); the address was refused unchecked from its attempt %d on; the right password from the blocked address got %s; the legitimate client logged in (%s) and was served.",
			len(seq), countsText(codes), checked+1, rightBlocked, ac),
	})
}

func countsText(m map[string]int) string {
	var out []string
	for _, c := range []string{"235", "421", "454", "535", "501", ""} {
		if m[c] > 0 {
			name := c
			if c == "" {
				name = "closed"
			}
			out = append(out, fmt.Sprintf("%s×%d", name, m[c]))
		}
	}
	return strings.Join(out, ", ")
}

// TestWebhookRedirect: a webhook endpoint answering 301, 302, 303, 307
// and 308 is never followed (the target of the redirect sees nothing) and
// nothing is recorded as delivered; once the endpoint answers 200 every
// message arrives, so nothing was lost.
func TestWebhookRedirect(t *testing.T) {
	h := newNetHost(t)
	var targetHits atomic.Int32
	target := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		targetHits.Add(1)
	})}
	tl, err := net.Listen("tcp", h.addr(t))
	if err != nil {
		t.Fatal(err)
	}
	go target.Serve(tl)
	t.Cleanup(func() { target.Close() })
	redirects := []int{301, 302, 303, 307, 308}
	var healed atomic.Bool
	var hookMu sync.Mutex
	hookCodes := map[int]int{}
	got := &deliveredSet{count: map[rcptKey]int{}, copies: map[rcptKey][]copyInfo{}}
	var n atomic.Int32
	hook := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hookMu.Lock()
		defer hookMu.Unlock()
		if !healed.Load() {
			code := redirects[int(n.Add(1))%len(redirects)]
			hookCodes[code]++
			w.Header().Set("Location", "http://"+tl.Addr().String()+"/stolen")
			w.WriteHeader(code)
			return
		}
		marker, ok := parseDelivered(body)
		if !ok {
			got.corrupt = append(got.corrupt, string(body[:min(len(body), 200)]))
		}
		for _, rc := range r.Header.Values("X-Qmgate-Recipient") {
			got.count[rcptKey{marker, rc}]++
		}
	})}
	hl, err := net.Listen("tcp", h.addr(t))
	if err != nil {
		t.Fatal(err)
	}
	go hook.Serve(hl)
	t.Cleanup(func() { hook.Close() })
	qmtpA := h.addr(t)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "hook.test"
rcpthosts = ["example.com"]
[qmtp]
listen = [%q]
[queue]
retry_min = "300ms"
retry_max = "1s"
[[route]]
domains = ["example.com"]
via = "http://%s/hook"
`, qmtpA, hl.Addr().String()))
	d.start()
	led := newLedger()
	msgs := scale(5, 25)
	for i := range msgs {
		qmtpSend(led, qmtpA, "", fmt.Sprintf("hook-%d", i), "s@x.test", fmt.Sprintf("u%d@example.com", i))
	}
	testpeer.WaitFor(t, "every message redirected twice", time.Minute, func() bool { return int(n.Load()) >= 2*msgs })
	delivered := len(deliveredLines(d.log()))
	if delivered > 0 {
		t.Errorf("%d deliveries logged while the endpoint only redirected", delivered)
	}
	if h := targetHits.Load(); h > 0 {
		t.Errorf("the redirect target got %d requests", h)
	}
	hookMu.Lock()
	codes := fmt.Sprint(hookCodes)
	hookMu.Unlock()
	healed.Store(true)
	if !d.waitQueueEmpty(time.Minute) {
		t.Error("queue not empty a minute after the endpoint healed")
	}
	d.stop()
	hookMu.Lock()
	tal := led.tally(got)
	hookMu.Unlock()
	tal.check(t)
	report(t, &row{
		Test:   "Webhook redirects",
		Load:   fmt.Sprintf("%d messages to a webhook route", msgs),
		Inputs: "the endpoint answers 301, 302, 303, 307, 308 with a Location on another listener, then 200",
		Acked:  tal.Acked, Delivered: tal.Delivered, Lost: tal.Lost, Dups: tal.Dups,
		Notes: fmt.Sprintf("redirects answered (code: count) %s; requests at the redirect target: %d; deliveries logged while redirecting: %d; all delivered once the endpoint answered 200.",
			strings.TrimPrefix(codes, "map"), targetHits.Load(), delivered),
	})
}

// TestCredentialsTLS: `qmgate config check` and `qmgate serve` refuse a
// smarthost login over TLS that is not verified or absent, and on mx
// routes; the loud override and verified TLS are accepted.
func TestCredentialsTLS(t *testing.T) {
	dir, err := os.MkdirTemp(workRoot, "credtls-")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, route string
		ok          bool
	}{
		{"tls opportunistic with a username", "via = \"smtp://smarthost.example:587\"\ntls = \"opportunistic\"\nusername = \"u\"\npassword = \"p\"", false},
		{"tls none with a username", "via = \"smtp://smarthost.example:587\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"", false},
		{"mx route with a username", "via = \"mx\"\nusername = \"u\"\npassword = \"p\"", false},
		{"tls none with insecure_auth (loopback smarthost)", "via = \"smtp://127.0.0.1:2525\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\ninsecure_auth = true", true},
		{"tls required with a username", "via = \"smtp://smarthost.example:587\"\ntls = \"required\"\nusername = \"u\"\npassword = \"p\"", true},
	}
	var notes []string
	for i, c := range cases {
		path := filepath.Join(dir, fmt.Sprintf("c%d.toml", i))
		doc := fmt.Sprintf("hostname = \"cred.test\"\nqueue_dir = %q\n[[route]]\ndomains = [\"*\"]\n%s\n", filepath.Join(dir, "queue"), c.route)
		os.WriteFile(path, []byte(doc), 0o644)
		out, err := exec.Command(qmgateBin, "config", "check", "-config", path).CombinedOutput()
		if (err == nil) != c.ok {
			t.Errorf("config check, %s: %v\n%s", c.name, err, out)
		}
		verdict := "accepted"
		if err != nil {
			verdict = "refused: " + strings.ReplaceAll(strings.TrimSpace(lastLine(string(out))), dir+"/", "")
		}
		notes = append(notes, c.name+" "+verdict)
		if !c.ok {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cmd := exec.CommandContext(ctx, qmgateBin, "serve", "-config", path)
			cmd.Env = cleanEnv()
			sout, serr := cmd.CombinedOutput()
			timedOut := ctx.Err() != nil
			cancel()
			if serr == nil || timedOut {
				t.Errorf("serve started with %s: %v\n%s", c.name, serr, sout)
			}
		}
	}
	report(t, &row{
		Test:   "Credentials over unverified TLS",
		Load:   fmt.Sprintf("%d route configurations through `qmgate config check` and `qmgate serve`", len(cases)),
		Inputs: "username with tls opportunistic or none, on an mx route; insecure_auth; tls required",
		Notes:  strings.Join(notes, "; ") + ". serve refuses to start on each refused one.",
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestConnectionSlots: local users holding many connections to the QMQP
// unix socket do not take the TCP listeners' slots, and a client that
// connects and says nothing is cut at the first-command deadline, long
// before the read timeout.
func TestConnectionSlots(t *testing.T) {
	h := newNetHost(t)
	qmqpA, qmtpA, smtpA := h.addr(t), h.addr(t), h.addr(t)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "slots.test"
rcpthosts = ["example.com"]
[limits]
max_conns = 5
max_conns_per_ip = 5
[qmqp]
listen = [%q, "unix:{{DIR}}/qmqp.sock"]
allow = ["127.0.0.0/8"]
[qmtp]
listen = [%q]
[smtp]
listen = [%q]
[[route]]
domains = ["*"]
via = "maildir:{{DIR}}/maildir"
`, qmqpA, qmtpA, smtpA))
	d.start()
	led := newLedger()
	sock := filepath.Join(d.dir, "qmqp.sock")
	held := scale(20, 60)
	var conns []net.Conn
	for range held {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatalf("unix connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
	}
	time.Sleep(200 * time.Millisecond)
	// TCP clients are still served, and so is one more local user.
	marker := "slots-tcp"
	led.attempt(marker)
	r := exchange(qmqpA, "", qmqpRequest(makeBody(marker), "s@x.test", "tcp@example.com"), false, 20*time.Second)
	rs, _ := replies(r.Out)
	if len(rs) == 1 {
		led.result("QMQP", marker, "tcp@example.com", mail.ParseReply([]byte(rs[0])))
	}
	tcpOK := len(rs) == 1 && strings.HasPrefix(rs[0], "K")
	if !tcpOK {
		t.Errorf("QMQP over TCP with %d unix connections held: %s", held, describe(r))
	}
	qrs := qmtpSend(led, qmtpA, "", "slots-qmtp", "s@x.test", "qmtp@example.com")
	if len(qrs) != 1 || !strings.HasPrefix(qrs[0], "K") {
		t.Errorf("QMTP with %d unix connections held: %q", held, qrs)
	}
	marker = "slots-unix"
	led.attempt(marker)
	uout := unixExchange(t, sock, qmqpRequest(makeBody(marker), "s@x.test", "unix@example.com"))
	urs, _ := replies(uout)
	if len(urs) == 1 {
		led.result("QMQP", marker, "unix@example.com", mail.ParseReply([]byte(urs[0])))
	}
	if len(urs) != 1 || !strings.HasPrefix(urs[0], "K") {
		t.Errorf("one more unix client: %q", uout)
	}
	for _, c := range conns {
		c.Close()
	}
	// Silent clients over TCP: cut at the first-command deadline (30 s by
	// default), not at the 5 m read timeout.
	var wg sync.WaitGroup
	silent := map[string]exchangeResult{}
	var smu sync.Mutex
	for _, l := range []struct{ proto, addr string }{{"QMTP", qmtpA}, {"QMQP", qmqpA}, {"SMTP", smtpA}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := exchange(l.addr, h.ip(50), nil, false, 90*time.Second)
			smu.Lock()
			silent[l.proto] = r
			smu.Unlock()
		}()
	}
	testpeer.Wait(t, "the silent clients", stuckAfter, &wg)
	var cut []string
	for _, p := range []string{"QMTP", "QMQP", "SMTP"} {
		r := silent[p]
		if !r.Closed {
			t.Errorf("a silent %s client was still connected after 90 s", p)
		}
		cut = append(cut, fmt.Sprintf("%s after %s", p, r.Elapsed.Round(100*time.Millisecond)))
	}
	d.waitQueueEmpty(time.Minute)
	d.stop()
	tl := led.tally(scanMaildirs(filepath.Join(d.dir, "maildir")))
	tl.check(t)
	report(t, &row{
		Test:   "Connection slots",
		Load:   fmt.Sprintf("%d idle connections on the QMQP unix socket against max_conns 5; one silent client per TCP listener", held),
		Inputs: "local users holding the socket while TCP clients send; clients that connect and never speak (read timeout 5 m)",
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("QMQP and QMTP over TCP and one more unix client served while %d unix connections were held; silent clients cut at the first-command deadline: %s. IPv6 /64 counting has its own row (a network namespace with two /64s).",
			held, strings.Join(cut, ", ")),
	})
}

// unixExchange sends one request on a unix socket and returns the reply.
func unixExchange(t *testing.T, sock string, req []byte) []byte {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return []byte("dial: " + err.Error())
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.Write(req)
	c.(*net.UnixConn).CloseWrite()
	out, _ := io.ReadAll(c)
	return out
}

// TestRootLinks: started as root, serve refuses a queue_dir that is a
// link (its target keeps its owner and stays empty) and one whose parent
// other users may write.
func TestRootLinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the link attack is on a root start-up (the battery is not running as root)")
	}
	h := newNetHost(t)
	dir, err := os.MkdirTemp(workRoot, "rootlinks-")
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "target")
	os.Mkdir(target, 0o700)
	os.Symlink(target, filepath.Join(dir, "queue"))
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	var notes []string
	for _, c := range []struct{ name, queue, want string }{
		{"queue_dir is a link", filepath.Join(dir, "queue"), "link"},
		{"parent writable by others", filepath.Join(open, "queue"), "writable by other users"},
	} {
		path := filepath.Join(dir, "q.toml")
		os.WriteFile(path, []byte(fmt.Sprintf("user = \"nobody\"\nqueue_dir = %q\n[smtp]\nlisten = [%q]\n", c.queue, h.addr(t))), 0o644)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, qmgateBin, "serve", "-config", path)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		if err == nil || timedOut || !strings.Contains(string(out), c.want) {
			t.Errorf("%s: serve %v\n%s", c.name, err, out)
		}
		notes = append(notes, c.name+": "+strings.ReplaceAll(strings.TrimSpace(lastLine(string(out))), dir, "DIR"))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(target, &st); err != nil || st.Uid != 0 || st.Mode&0o777 != 0o700 {
		t.Errorf("the link's target changed: uid %d mode %o (%v)", st.Uid, st.Mode&0o777, err)
	}
	if ents, _ := os.ReadDir(target); len(ents) > 0 {
		t.Errorf("the link's target got %d entries", len(ents))
	}
	if _, err := os.Lstat(filepath.Join(open, "queue")); err == nil {
		t.Error("a queue was made under a directory others may write")
	}
	report(t, &row{
		Test:   "Root start-up and links",
		Load:   "two root start-ups of serve with user = \"nobody\"",
		Inputs: "queue_dir a symlink to a root-owned directory; queue_dir under a mode 0777 directory",
		Notes:  strings.Join(notes, "; ") + fmt.Sprintf("; the link's target kept owner uid %d, mode %o, no entries.", st.Uid, st.Mode&0o777),
	})
}

// unixClientEnv makes the test binary a one-shot QMQP unix-socket client
// (see TestMain): it sends its standard input to the socket named by the
// variable and copies the reply to its standard output.
const unixClientEnv = "QMGATE_BATTERY_UNIX_CLIENT"

func unixClientMain(sock string) int {
	req, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.Write(req)
	c.(*net.UnixConn).CloseWrite()
	io.Copy(os.Stdout, c)
	return 0
}

var (
	clientBinOnce sync.Once
	clientBin     string
)

// asUser sends a QMQP request to the unix socket from a process running
// as uid/gid.
func asUser(t *testing.T, uid, gid uint32, sock string, req []byte) ([]byte, error) {
	clientBinOnce.Do(func() {
		self, err := os.Executable()
		if err != nil {
			return
		}
		b, err := os.ReadFile(self)
		if err != nil {
			return
		}
		p := filepath.Join(workRoot, "unix-client.test")
		if os.WriteFile(p, b, 0o755) == nil {
			clientBin = p
		}
	})
	if clientBin == "" {
		t.Fatal("cannot copy the test binary for the unix client")
	}
	cmd := exec.Command(clientBin)
	cmd.Env = append(cleanEnv(), unixClientEnv+"="+sock)
	cmd.Stdin = strings.NewReader(string(req))
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: true}}
	return cmd.Output()
}

// TestQMQPUnixPeer: the QMQP unix socket names who submitted (uid and
// user in the Received line and the log), refuses a user outside
// unix_allow, and holds an allowed user to the senders unix_senders gives.
func TestQMQPUnixPeer(t *testing.T) {
	h := newNetHost(t)
	me, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	if err != nil {
		t.Fatal(err)
	}
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "unix.test"
rcpthosts = ["example.com"]
[qmqp]
listen = ["unix:{{DIR}}/qmqp.sock"]
unix_allow = [%q]
unix_senders = { %s = ["@allowed.test"] }
[[route]]
domains = ["*"]
via = "maildir:{{DIR}}/maildir"
`, me.Username, strconv.Quote(me.Username)))
	d.start()
	led := newLedger()
	sock := filepath.Join(d.dir, "qmqp.sock")
	send := func(marker, sender string) string {
		led.attempt(marker)
		rs, _ := replies(unixExchange(t, sock, qmqpRequest(makeBody(marker), sender, "local@example.com")))
		if len(rs) != 1 {
			return fmt.Sprint(rs)
		}
		led.result("QMQP", marker, "local@example.com", mail.ParseReply([]byte(rs[0])))
		return rs[0]
	}
	okReply := send("unix-own", "me@allowed.test")
	if !strings.HasPrefix(okReply, "K") {
		t.Errorf("an allowed user with an allowed sender: %q", okReply)
	}
	forged := send("unix-forged", "ceo@elsewhere.test")
	if !strings.HasPrefix(forged, "D") {
		t.Errorf("an allowed user with a sender outside unix_senders: %q", forged)
	}
	other := "skipped: the battery is not running as root, so it cannot connect as another user"
	if os.Geteuid() == 0 {
		nobody, err := user.Lookup("nobody")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(nobody.Uid)
		gid, _ := strconv.Atoi(nobody.Gid)
		out, err := asUser(t, uint32(uid), uint32(gid), sock, qmqpRequest(makeBody("unix-nobody"), "x@allowed.test", "local@example.com"))
		rs, _ := replies(out)
		if err != nil || len(rs) != 1 || !strings.HasPrefix(rs[0], "D") {
			t.Errorf("a user outside unix_allow: %v %q", err, out)
		}
		other = fmt.Sprintf("nobody (outside unix_allow) got %q", rs)
	} else {
		t.Log(other)
	}
	d.waitQueueEmpty(time.Minute)
	d.stop()
	files, _ := filepath.Glob(filepath.Join(d.dir, "maildir", "*", "*", "new", "*"))
	wantTrace := "uid=" + me.Uid + "/" + me.Username
	traced := 0
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), wantTrace) {
			traced++
		} else {
			t.Errorf("Received line without %q:\n%.400s", wantTrace, b)
		}
	}
	logged := d.logCount("uid " + me.Uid + " (" + me.Username + ")")
	if logged == 0 {
		t.Errorf("the log never names uid %s (%s)", me.Uid, me.Username)
	}
	tl := led.tally(scanMaildirs(filepath.Join(d.dir, "maildir")))
	tl.check(t)
	report(t, &row{
		Test:   "QMQP unix socket peers",
		Load:   "submissions over the QMQP unix socket by an allowed user and by another",
		Inputs: "an allowed sender; a sender outside unix_senders; a user outside unix_allow (as root: a child process as nobody)",
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("%d of %d delivered copies carry %q in Received; %d log lines name the user; a forged sender got %q; %s.",
			traced, len(files), wantTrace, logged, forged, other),
	})
}

// TestNULAndDotCR: a NUL byte in a message is refused on every listener
// (5.6.0), and SMTP's CR LF "." CR X, which would end DATA for some
// servers, is refused with 554; nothing of either is queued, and clean
// messages on the same listeners are delivered.
func TestNULAndDotCR(t *testing.T) {
	h := newNetHost(t)
	qmtpA, qmqpA, smtpA := h.addr(t), h.addr(t), h.addr(t)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "nul.test"
rcpthosts = ["example.com"]
[limits]
read_timeout = "3s"
[qmtp]
listen = [%q]
[qmqp]
listen = [%q, "unix:{{DIR}}/qmqp.sock"]
allow = ["127.0.0.0/8"]
[smtp]
listen = [%q]
[[route]]
domains = ["*"]
via = "maildir:{{DIR}}/maildir"
`, qmtpA, qmqpA, smtpA))
	d.start()
	led := newLedger()
	sock := filepath.Join(d.dir, "qmqp.sock")
	withNUL := func(marker string) []byte {
		b := makeBody(marker)
		i := len(b) / 2
		return append(append(append([]byte(nil), b[:i]...), 0), b[i:]...)
	}
	var notes []string
	check := func(name, reply string, refused bool) {
		if !refused {
			t.Errorf("%s: %q", name, reply)
		}
		notes = append(notes, fmt.Sprintf("%s: %.40q", name, reply))
	}
	// QMTP and QMQP (TCP and unix).
	led.attempt("nul-qmtp")
	r := exchange(qmtpA, "", qmtpPackage(withNUL("nul-qmtp"), "s@x.test", "a@example.com"), true, 20*time.Second)
	rs, _ := replies(r.Out)
	check("QMTP NUL", fmt.Sprint(rs), len(rs) == 1 && strings.HasPrefix(rs[0], "D") && strings.Contains(rs[0], "5.6.0"))
	led.attempt("nul-qmqp")
	r = exchange(qmqpA, "", qmqpRequest(withNUL("nul-qmqp"), "s@x.test", "a@example.com"), false, 20*time.Second)
	rs, _ = replies(r.Out)
	check("QMQP NUL", fmt.Sprint(rs), len(rs) == 1 && strings.HasPrefix(rs[0], "D") && strings.Contains(rs[0], "5.6.0"))
	led.attempt("nul-unix")
	rs, _ = replies(unixExchange(t, sock, qmqpRequest(withNUL("nul-unix"), "s@x.test", "a@example.com")))
	check("QMQP unix socket NUL", fmt.Sprint(rs), len(rs) == 1 && strings.HasPrefix(rs[0], "D") && strings.Contains(rs[0], "5.6.0"))
	// SMTP.
	led.attempt("nul-smtp")
	_, dc, tr := smtpSendData(smtpA, "", "<s@x.test>", "<a@example.com>", smtpData(withNUL("nul-smtp")))
	check("SMTP NUL", dc, dc == "554" && strings.Contains(tr, "5.6.0"))
	for i, v := range []string{
		"CR LF . CR X", "CR LF . CR CR LF", "CR LF . CR then a smuggled MAIL",
	} {
		marker := fmt.Sprintf("dotcr-%d", i)
		led.attempt(marker)
		head := "Message-ID: <" + marker + "@reliability.test>\r\nSubject: smuggle\r\n\r\nhello\r\n"
		tail := []string{".\rX\r\n.\r\n", ".\r\r\n.\r\n", ".\rMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n.\r\n"}[i]
		start := time.Now()
		_, dc, tr := smtpSendData(smtpA, "", "<s@x.test>", "<a@example.com>", []byte(head+tail))
		// Every form is refused at once with 554 5.6.0 (with CR LF . CR
		// CR LF the server closes the connection after its reply, since
		// go-smtp has lost its place in the data); the read timeout is
		// 3 s, so a reply that waited for it would come as 421.
		refused := dc == "554" && strings.Contains(tr, "5.6.0")
		check(fmt.Sprintf("SMTP %s (answered after %s)", v, time.Since(start).Round(100*time.Millisecond)), dc, refused)
		if !refused {
			t.Log(tr)
		}
	}
	// Clean messages on each listener.
	qmtpSend(led, qmtpA, "", "clean-qmtp", "s@x.test", "a@example.com")
	r = exchange(qmqpA, "", qmqpRequest(makeBody("clean-qmqp"), "s@x.test", "a@example.com"), false, 20*time.Second)
	led.attempt("clean-qmqp")
	if rs, _ := replies(r.Out); len(rs) == 1 {
		led.result("QMQP", "clean-qmqp", "a@example.com", mail.ParseReply([]byte(rs[0])))
	}
	led.attempt("clean-unix")
	if rs, _ := replies(unixExchange(t, sock, qmqpRequest(makeBody("clean-unix"), "s@x.test", "a@example.com"))); len(rs) == 1 {
		led.result("QMQP", "clean-unix", "a@example.com", mail.ParseReply([]byte(rs[0])))
	}
	led.attempt("clean-smtp")
	_, dc, _ = smtpSendData(smtpA, "", "<s@x.test>", "<a@example.com>", smtpData(makeBody("clean-smtp")))
	led.result("SMTP", "clean-smtp", "a@example.com", smtpStatus(dc))
	d.waitQueueEmpty(time.Minute)
	d.stop()
	ds := scanMaildirs(filepath.Join(d.dir, "maildir"))
	smuggled := 0
	for k := range ds.count {
		if !strings.HasPrefix(k.Marker, "clean-") {
			smuggled++
			t.Errorf("%s was delivered", k.Marker)
		}
	}
	if len(ds.corrupt) > 0 {
		t.Errorf("unexpected deliveries: %v", ds.corrupt)
	}
	tl := led.tally(ds)
	tl.check(t)
	report(t, &row{
		Test:   "NUL bytes and SMTP dot-CR smuggling",
		Load:   "one bad message per listener (QMTP, QMQP over TCP and the unix socket, SMTP), one clean one each",
		Inputs: "a NUL byte in the body; SMTP DATA with CR LF . CR X, CR LF . CR CR LF, and a smuggled transaction behind CR LF . CR",
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: strings.Join(notes, "; ") + fmt.Sprintf("; bad messages delivered: %d. CR LF . CR CR LF is refused at once and the connection closed, since go-smtp loses its place in the data there (smtp/doc.go).", smuggled),
	})
}
