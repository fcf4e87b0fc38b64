package relay

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// rawSMTPSink is a minimal SMTP server that records the wire bytes of each
// transaction, so tests can check line ends and dot-stuffing as sent.
type rawSMTPSink struct {
	t    *testing.T
	l    net.Listener
	mu   sync.Mutex
	txns []rawTxn
}

type rawTxn struct {
	From string   // the MAIL FROM line's argument, as sent
	To   []string // RCPT TO arguments, as sent
	Data string   // DATA as on the wire, up to and excluding the final ".\r\n"
}

func newRawSMTPSink(t *testing.T, addr string) *rawSMTPSink {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &rawSMTPSink{t: t, l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *rawSMTPSink) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "220 raw.test ESMTP\r\n")
	var tx rawTxn
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimRight(line, "\r\n"))
		arg := strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			fmt.Fprintf(c, "250-raw.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
		case strings.HasPrefix(cmd, "MAIL FROM:"):
			tx = rawTxn{From: arg[len("MAIL FROM:"):]}
			fmt.Fprintf(c, "250 ok\r\n")
		case strings.HasPrefix(cmd, "RCPT TO:"):
			to := arg[len("RCPT TO:"):]
			if strings.Contains(to, "refuse") {
				fmt.Fprintf(c, "550 5.1.1 no such user\r\n")
				continue
			}
			tx.To = append(tx.To, to)
			fmt.Fprintf(c, "250 ok\r\n")
		case cmd == "DATA":
			fmt.Fprintf(c, "354 go ahead\r\n")
			var b strings.Builder
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				b.WriteString(l)
			}
			tx.Data = b.String()
			s.mu.Lock()
			s.txns = append(s.txns, tx)
			s.mu.Unlock()
			fmt.Fprintf(c, "250 2.0.0 queued\r\n")
		case cmd == "RSET", cmd == "NOOP":
			tx = rawTxn{}
			fmt.Fprintf(c, "250 ok\r\n")
		case cmd == "QUIT":
			fmt.Fprintf(c, "221 bye\r\n")
			return
		default:
			fmt.Fprintf(c, "502 unimplemented\r\n")
		}
	}
}

func (s *rawSMTPSink) transactions() []rawTxn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]rawTxn(nil), s.txns...)
}

// TestHubSMTPtoQMTP: SMTP in (swaks, Postfix's smtp-source) → hub A → QMTP →
// hub B → Maildir.
func TestHubSMTPtoQMTP(t *testing.T) {
	swaks := testpeer.Need(t, "swaks")
	source := testpeer.Need(t, "smtp-source")
	a, b := startChain(t, `
[smtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.0/8"]
`)
	out, err := exec.Command(swaks, "--server", a.addr("smtp"), "--from", "s@x.test", "--to", "swaks@example.com",
		"--header", "Subject: via swaks", "--body", "line one\n.leading dot\nlast").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	out, err = exec.Command(source, "-s", "5", "-m", "200", "-l", "2048", "-f", "s@x.test", "-t", "bulk@example.com", a.addr("smtp")).CombinedOutput()
	if err != nil {
		t.Fatalf("smtp-source: %v\n%s", err, out)
	}
	root := filepath.Join(b.dir, "maildir")
	testpeer.WaitFor(t, "200 smtp-source messages at B", 60*time.Second, func() bool {
		return len(maildirFiles(t, root, "example.com", "bulk")) == 200
	})
	testpeer.WaitFor(t, "the swaks message at B", 30*time.Second, func() bool {
		return len(maildirFiles(t, root, "example.com", "swaks")) == 1
	})
	m := maildirFiles(t, root, "example.com", "swaks")[0]
	if !strings.Contains(m, "\n.leading dot\nlast\n") || strings.Contains(m, "\r") {
		t.Fatalf("swaks message not stored as sent (LF, dot unstuffed):\n%q", m)
	}
	if !strings.Contains(m, "by hub-a.test with ESMTP") || !strings.Contains(m, "by hub-b.test with QMTP") {
		t.Fatalf("trace lines:\n%s", m)
	}
}

// TestHubQMTPtoSMTP: QMTP in → hub → SMTP out: on the wire CRLF line ends,
// dot-stuffing, a partial last line completed, VERP expanded per recipient,
// per-recipient refusals; and to Postfix's smtp-sink.
func TestHubQMTPtoSMTP(t *testing.T) {
	sinkBin := testpeer.Need(t, "smtp-sink")
	raw := newRawSMTPSink(t, "127.0.0.1:0")
	pfAddr := testpeer.FreePort(t)
	args := []string{pfAddr, "100"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...) // it refuses to run as root
	}
	cmd := exec.Command(sinkBin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testpeer.WaitFor(t, "smtp-sink to listen", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", pfAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	h := startHub(t, fmt.Sprintf(`
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.0/8"]
[[route]]
domains = ["raw.test"]
via = "smtp://%s"
tls = "none"
[[route]]
domains = ["postfix.test"]
via = "smtp://%s"
tls = "none"
[[route]]
domains = ["list.example"]
via = "maildir:DIR/maildir"
`, raw.l.Addr(), pfAddr))
	body := "Subject: wire\n\n.starts with a dot\nmiddle\n..two dots\nno newline at the end"
	sts := sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "owner-@list.example-@[]",
		Recipients: []string{"a@raw.test", "b@raw.test", "refuse@raw.test"}}, body)
	for _, st := range sts {
		if !st.IsAccept() {
			t.Fatal(st)
		}
	}
	for i := 0; i < 20; i++ {
		sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "s@x.test", Recipients: []string{fmt.Sprintf("u%d@postfix.test", i)}}, "Subject: pf\n\nx\n")
	}
	testpeer.WaitFor(t, "an empty queue", 30*time.Second, func() bool { return h.hub.Queue().Metrics().Messages == 0 })
	// The refusal bounced to the VERP sender's unexpanded address.
	if len(maildirFiles(t, filepath.Join(h.dir, "maildir"), "list.example", "owner")) != 1 {
		t.Errorf("no bounce for refuse@raw.test at owner-@list.example")
	}
	txns := raw.transactions()
	if len(txns) != 2 {
		t.Fatalf("want one transaction per VERP recipient (2 accepted), got %d: %+v", len(txns), txns)
	}
	for _, tx := range txns {
		if len(tx.To) != 1 {
			t.Fatalf("VERP transaction with %d recipients", len(tx.To))
		}
		rcpt := strings.Trim(tx.To[0], "<>")
		box, dom := mail.Split(rcpt)
		want := "<owner-" + box + "=" + dom + "@list.example>"
		if !strings.HasPrefix(tx.From, want) {
			t.Errorf("MAIL FROM %q, want %s", tx.From, want)
		}
		d := tx.Data
		if strings.Contains(strings.ReplaceAll(d, "\r\n", ""), "\n") || strings.Contains(strings.ReplaceAll(d, "\r\n", ""), "\r") {
			t.Errorf("bare LF or CR on the wire: %q", d)
		}
		if !strings.HasSuffix(d, "\r\n\r\n..starts with a dot\r\nmiddle\r\n...two dots\r\nno newline at the end\r\n") {
			t.Errorf("DATA on the wire:\n%q", d)
		}
	}
	if !strings.Contains(h.logText(), "rcpt=refuse@raw.test") || !strings.Contains(h.logText(), "5.1.1") {
		t.Errorf("the refused recipient's result is not logged:\n%s", h.logText())
	}
	// The queue writes its delivery lines just after a message leaves it.
	testpeer.WaitFor(t, "23 delivery lines in the log", 10*time.Second, func() bool {
		return strings.Count(h.logText(), "msg=\"queue: delivery\"") >= 23
	})
}

// commonPort reserves one port on every address (testpeer.Reserve) until
// the test ends, so an MX route's fixed QMTP and SMTP ports can reach
// servers on different loopback addresses. The kernel picks it on the first
// address, so a second call returns another port; the servers bind it later
// and nothing else can meanwhile.
func commonPort(t *testing.T, ips ...string) int {
	t.Helper()
	for try := 0; try < 200; try++ {
		addr, release, err := testpeer.Reserve(ips[0], 0)
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		releases := []func(){release}
		for _, ip := range ips[1:] {
			_, release, err := testpeer.Reserve(ip, p)
			if err != nil {
				break
			}
			releases = append(releases, release)
		}
		if len(releases) == len(ips) {
			for _, r := range releases {
				t.Cleanup(r)
			}
			return p
		}
		// Taken on one of the other addresses: keep the first one
		// reserved so that the next try gets another port.
		for _, r := range releases[1:] {
			r()
		}
		t.Cleanup(release)
	}
	t.Fatal("no common free port")
	return 0
}

// mxHubConfig is what varies between the hubs of the MX tests.
type mxHubConfig struct {
	Resolver           string // the DNS server's address
	QMTPPort, SMTPPort int    // where the exchangers listen
	MTASTSPort         int    // where the policy hosts listen; 0: the default
	QueueDir           string // "": the test's own
	CAFile             string // the mx route's CA; "": the system's
}

// startMXHub starts a hub that takes mail from loopback over QMTP, keeps
// a.example in a Maildir and sends every other domain by MX, retrying a
// temporary failure only after an hour.
func startMXHub(t *testing.T, c mxHubConfig) *testHub {
	t.Helper()
	var top, delivery, route string
	if c.QueueDir != "" {
		top = fmt.Sprintf("queue_dir = %q\n", c.QueueDir)
	}
	if c.MTASTSPort != 0 {
		delivery = fmt.Sprintf("mta_sts_port = %d\n", c.MTASTSPort)
	}
	if c.CAFile != "" {
		route = fmt.Sprintf("ca_file = %q\n", c.CAFile)
	}
	return startHub(t, fmt.Sprintf(`%srcpthosts = ["a.example"]
[qmtp]
listen = ["127.0.0.1:0"]
relay_clients = ["127.0.0.0/8"]
[delivery]
resolver = %q
qmtp_port = %d
smtp_port = %d
%s[queue]
retry_min = "1h"
retry_max = "2h"
[[route]]
domains = ["a.example"]
via = "maildir:DIR/maildir"
[[route]]
domains = ["*"]
via = "mx"
%s`, top, c.Resolver, c.QMTPPort, c.SMTPPort, delivery, route))
}

// sendEach sends one message from alice@a.example to each of rcpts
// through h's QMTP listener, failing the test on a refusal.
func sendEach(t *testing.T, h *testHub, subject string, rcpts ...string) {
	t.Helper()
	for _, rcpt := range rcpts {
		st := sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "alice@a.example", Recipients: []string{rcpt}}, "Subject: "+subject+"\n\nx\n")
		if !st[0].IsAccept() {
			t.Fatalf("%s: %v", rcpt, st[0])
		}
	}
}

// TestHubMX: MX routing with MXPS against a fake DNS server: a QMTP-slice MX
// gets QMTP; a plain MX gets SMTP; a QMTP-slice MX whose QMTP port is closed
// gets SMTP on the same host; a domain without MX uses its address; NXDOMAIN
// bounces; SERVFAIL stays queued.
func TestHubMX(t *testing.T) {
	qport := commonPort(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	sport := commonPort(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	b := startHub(t, fmt.Sprintf(`
rcpthosts = ["qmtp.test"]
[qmtp]
listen = ["127.0.0.2:%d"]
[[route]]
domains = ["*"]
via = "maildir:DIR/maildir"
`, qport))
	smtp3 := newRawSMTPSink(t, fmt.Sprintf("127.0.0.3:%d", sport))
	smtp4 := newRawSMTPSink(t, fmt.Sprintf("127.0.0.4:%d", sport))
	dns := testpeer.StartDNS(t, "127.0.0.1")
	dns.SetMX("qmtp.test", &net.MX{Host: "mx.qmtp.test.", Pref: 12801})
	dns.SetMX("smtp.test", &net.MX{Host: "mx.smtp.test.", Pref: 10})
	dns.SetMX("fallback.test", &net.MX{Host: "mx.fallback.test.", Pref: 12817})
	for name, ip := range map[string]string{"mx.qmtp.test": "127.0.0.2", "mx.smtp.test": "127.0.0.3", "mx.fallback.test": "127.0.0.4",
		"nomx.test": "127.0.0.3"} {
		dns.SetA(name, ip)
	}
	dns.SetFault("servfail.test", testpeer.DNSServFail)
	h := startMXHub(t, mxHubConfig{Resolver: dns.Addr, QMTPPort: qport, SMTPPort: sport})
	sendEach(t, h, "mx", "u@qmtp.test", "u@smtp.test", "u@fallback.test", "u@nomx.test", "u@nxdomain.test", "u@servfail.test")
	testpeer.WaitFor(t, "QMTP delivery to the QMTP-slice MX", 30*time.Second, func() bool {
		return len(maildirFiles(t, filepath.Join(b.dir, "maildir"), "qmtp.test", "u")) == 1
	})
	testpeer.WaitFor(t, "SMTP deliveries", 30*time.Second, func() bool {
		return len(smtp3.transactions()) == 2 && len(smtp4.transactions()) == 1
	})
	testpeer.WaitFor(t, "the NXDOMAIN bounce", 30*time.Second, func() bool {
		return len(maildirFiles(t, filepath.Join(h.dir, "maildir"), "a.example", "alice")) == 1
	})
	dsn := maildirFiles(t, filepath.Join(h.dir, "maildir"), "a.example", "alice")[0]
	if !strings.Contains(dsn, "Final-Recipient: rfc822; u@nxdomain.test") || strings.Contains(dsn, "servfail.test") {
		t.Fatalf("DSN:\n%s", dsn)
	}
	// The SERVFAIL recipient waits for a retry, it does not bounce. (Once
	// it is the only message left, its first attempt may still be under
	// way: wait for the attempt's record too.)
	testpeer.WaitFor(t, "only the SERVFAIL message left, its attempt recorded", 30*time.Second, func() bool {
		rows, err := h.hub.Queue().List(t.Context())
		return err == nil && len(rows) == 1 && rows[0].Attempts > 0
	})
	rows, err := h.hub.Queue().List(t.Context())
	if err != nil || len(rows) != 1 || rows[0].Pending[0] != "u@servfail.test" || !strings.Contains(rows[0].LastError, "4.4.3") {
		t.Fatalf("queue: %+v %v", rows, err)
	}
}

// smtpDialog runs a raw SMTP conversation: each command is sent and its
// reply's first line returned.
func smtpDialog(t *testing.T, addr string, cmds ...string) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	readReply := func() string {
		var first string
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return "EOF"
			}
			if first == "" {
				first = strings.TrimRight(l, "\r\n")
			}
			if len(l) < 4 || l[3] != '-' {
				return first
			}
		}
	}
	readReply() // greeting
	var out []string
	for _, cmd := range cmds {
		fmt.Fprintf(c, "%s\r\n", cmd)
		out = append(out, readReply())
	}
	return out
}

// TestHubSMTPNoOpenRelay: over SMTP, a stranger reaches rcpthosts only, with
// every classic trick refused; a relay client may relay.
func TestHubSMTPNoOpenRelay(t *testing.T) {
	h := startHub(t, `
rcpthosts = ["example.net"]
[smtp]
listen = ["127.0.0.1:0"]
relay_clients = ["10.0.0.0/8"]
[[route]]
domains = ["*"]
via = "discard:"
`)
	tricks := []string{
		"<victim@other.org>", "<victim%other.org@example.net>", "<other.org!victim@example.net>",
		`<"victim@other.org"@example.net>`, "<@example.net:victim@other.org>", "<victim@[192.0.2.1]>",
		"<victim@other.org.>", "<VICTIM@OTHER.ORG>", "<victim@example.net.other.org>", "<victim>",
		`<"victim%other.org"@example.net>`,
	}
	cmds := []string{"EHLO client.test", "MAIL FROM:<s@x.test>"}
	for _, r := range tricks {
		cmds = append(cmds, "RCPT TO:"+r)
	}
	cmds = append(cmds, "RCPT TO:<user@EXAMPLE.net>")
	replies := smtpDialog(t, h.addr("smtp"), cmds...)
	for i, r := range tricks {
		if rep := replies[2+i]; !strings.HasPrefix(rep, "5") {
			t.Errorf("RCPT TO:%s got %q, want a 5xx refusal", r, rep)
		}
	}
	if rep := replies[len(replies)-1]; !strings.HasPrefix(rep, "250") {
		t.Errorf("local recipient: %q", rep)
	}
}
