//go:build linux

package reliability

// More of the adversarial review's classes (issue 12), each against a
// running daemon: IPv6 clients counted per network, the bound on new
// mailboxes, the free-space reserve under concurrent large messages, the
// tcpserver drop-ins, and the sender-login map.

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// enterNetns moves the calling goroutine's thread into a network namespace
// of its own, with loopback up and the given IPv6 addresses on it. The
// thread stays locked and dies with the test's goroutine, so nothing else
// ever runs in the namespace; sockets the goroutine opens, and processes it
// starts, belong to it.
func enterNetns(t *testing.T, addrs ...string) {
	t.Helper()
	testpeer.NeedRoot(t, "creates a network namespace with IPv6 addresses")
	ip := testpeer.Need(t, "ip")
	runtime.LockOSThread() // never unlocked: the thread ends with the test
	if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare(CLONE_NEWNET): %v", err)
	}
	run := func(args ...string) {
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("link", "set", "lo", "up")
	for _, a := range addrs {
		run("-6", "addr", "add", a+"/128", "dev", "lo", "nodad")
	}
}

// waitDial waits until addr accepts connections (from this goroutine, so
// in its network namespace); the daemon's readiness check over HTTP would
// run in other threads.
func waitDial(t *testing.T, d *daemon, addr string) {
	t.Helper()
	ok := testpeer.Poll(60*time.Second, 20*time.Millisecond, func() bool {
		if !d.running() {
			return true
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	if !ok || !d.running() {
		t.Fatalf("qmgate serve not listening on %s\n%s", addr, d.logTail(30))
	}
}

// waitDelivered waits until the maildirs under root hold every recipient
// the ledger acknowledged, or timeout passes.
func waitDelivered(led *ledger, root string, timeout time.Duration) {
	testpeer.Poll(timeout, 50*time.Millisecond, func() bool {
		return led.tally(scanMaildirs(root)).Lost == 0
	})
}

// holdConns opens idle TCP connections to addr, one from each source
// address. The daemon accepts connections in the order they arrived, so a
// connection the caller opens afterwards is admitted after these.
func holdConns(t *testing.T, addr string, srcs ...string) []net.Conn {
	t.Helper()
	var out []net.Conn
	for _, src := range srcs {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection from %s: %v", src, err)
		}
		t.Cleanup(func() { c.Close() })
		out = append(out, c)
	}
	return out
}

// TestIPv6PerNetwork: IPv6 clients are counted per /64 for
// max_conns_per_ip (an ISP hands a subscriber a whole /64), and
// [limits] client_ipv6_prefix changes the size. In a network namespace of
// the test's own, with documentation addresses (2001:db8::/32) on its
// loopback: three idle connections from three addresses of one /64 fill
// that network's allowance of 3, so a fourth address of the same /64 is
// refused while a client of another /64 is served; with
// client_ipv6_prefix = 128 each address counts alone.
func TestIPv6PerNetwork(t *testing.T) {
	const (
		netA   = "2001:db8:1:1::"
		netB   = "2001:db8:1:2::"
		server = "2001:db8:1:ff::1"
	)
	var addrs []string
	for i := 10; i <= 14; i++ {
		addrs = append(addrs, netA+strconv.Itoa(i))
	}
	addrs = append(addrs, netB+"10", server)
	h := newNetHost(t)
	qmtpPort := h.addr(t) // a port reserved in the host's namespace, free in the new one
	_, port, _ := net.SplitHostPort(qmtpPort)
	qmtpA := net.JoinHostPort(server, port)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "v6.test"
rcpthosts = ["example.com"]
[limits]
max_conns_per_ip = 3
first_timeout = "5m"
client_ipv6_prefix = {{PREFIX}}
[qmtp]
listen = [%q]
[[route]]
domains = ["*"]
via = "maildir:{{DIR}}/maildir"
`, qmtpA))
	d.vars = func(run int) map[string]string {
		return map[string]string{"PREFIX": map[bool]string{true: "64", false: "128"}[run == 1]}
	}
	enterNetns(t, addrs...)
	led := newLedger()
	var notes []string
	send := func(phase, src string) string {
		marker := fmt.Sprintf("v6-%s-%s", phase, strings.ReplaceAll(src, ":", "-"))
		rs := qmtpSend(led, qmtpA, src, marker, "s@x.test", "v6@example.com")
		reply := strings.Join(rs, " ")
		if len(rs) == 0 {
			reply = "(no reply)"
		}
		notes = append(notes, fmt.Sprintf("%s from %s: %.30s", phase, src, reply))
		return reply
	}

	// Per /64 (the default).
	if err := d.startNoWait(); err != nil {
		t.Fatal(err)
	}
	waitDial(t, d, qmtpA)
	held := holdConns(t, qmtpA, netA+"10", netA+"11", netA+"12")
	if r := send("/64", netA+"13"); !strings.HasPrefix(r, "Z") {
		t.Errorf("a 4th address of a /64 holding 3 connections: %q, want a temporary refusal", r)
	}
	if r := send("/64", netB+"10"); !strings.HasPrefix(r, "K") {
		t.Errorf("a client of another /64: %q, want it served", r)
	}
	for _, c := range held {
		c.Close()
	}
	servedAgain := testpeer.Poll(20*time.Second, 50*time.Millisecond, func() bool {
		marker := "v6-probe-" + strconv.FormatInt(time.Now().UnixNano(), 10)
		rs := qmtpSend(led, qmtpA, netA+"13", marker, "s@x.test", "v6@example.com")
		return len(rs) == 1 && strings.HasPrefix(rs[0], "K")
	})
	if !servedAgain {
		t.Error("the /64 was not served again after its connections closed")
	}
	d.stop()

	// Per address.
	if err := d.startNoWait(); err != nil {
		t.Fatal(err)
	}
	waitDial(t, d, qmtpA)
	held = holdConns(t, qmtpA, netA+"10", netA+"11", netA+"12")
	if r := send("/128", netA+"13"); !strings.HasPrefix(r, "K") {
		t.Errorf("client_ipv6_prefix = 128: another address of the /64: %q, want it served", r)
	}
	for _, c := range held {
		c.Close()
	}
	held = holdConns(t, qmtpA, netA+"14", netA+"14", netA+"14")
	if r := send("/128", netA+"14"); !strings.HasPrefix(r, "Z") {
		t.Errorf("client_ipv6_prefix = 128: a 4th connection from one address: %q, want a temporary refusal", r)
	}
	for _, c := range held {
		c.Close()
	}
	waitDelivered(led, filepath.Join(d.dir, "maildir"), time.Minute)
	d.stop()
	tl := led.tally(scanMaildirs(filepath.Join(d.dir, "maildir")))
	tl.check(t)
	report(t, &row{
		Test:   "IPv6 clients counted per /64",
		Load:   "a network namespace with 2001:db8:1:1::/64 and 2001:db8:1:2::/64 on its loopback; max_conns_per_ip 3; 3 idle connections held from one /64",
		Inputs: "a 4th address of the same /64, an address of another /64; then client_ipv6_prefix = 128: another address of the /64, a 4th connection from one address",
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: strings.Join(notes, "; ") + ". The /64 is served again once its connections close.",
	})
}

// TestMailboxBound: one package to many new users of a Maildir route
// creates no more mailboxes than max_new_mailboxes_per_hour; the other
// recipients wait in the queue (a temporary failure, no bounce) and are
// delivered when the bound allows, here after a restart with a larger one.
func TestMailboxBound(t *testing.T) {
	h := newNetHost(t)
	bounces := newSink(t, "qmtp", h.addr(t))
	qmtpA := h.addr(t)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "boxes.test"
rcpthosts = ["example.com"]
[qmtp]
listen = [%q]
[queue]
retry_min = "300ms"
retry_max = "1s"
[[route]]
domains = ["example.com"]
via = "maildir:{{DIR}}/maildir"
max_new_mailboxes_per_hour = {{BOUND}}
[[route]]
domains = ["*"]
via = "qmtp://%s"
`, qmtpA, bounces.addr()))
	const bound, users = 5, 20
	d.vars = func(run int) map[string]string {
		return map[string]string{"BOUND": map[bool]string{true: strconv.Itoa(bound), false: "100"}[run == 1]}
	}
	d.start()
	led := newLedger()
	var rcpts []string
	for i := range users {
		rcpts = append(rcpts, fmt.Sprintf("new%02d@example.com", i))
	}
	rs := qmtpSend(led, qmtpA, h.ip(10), "boxes-1", "s@x.test", rcpts...)
	if len(rs) != users || !anyAccept(rs) {
		t.Fatalf("package to %d new users: %q", users, rs)
	}
	root := filepath.Join(d.dir, "maildir")
	boxes := func() int {
		m, _ := filepath.Glob(filepath.Join(root, "example.com", "*"))
		return len(m)
	}
	// The delivery attempt ends with the held-back recipients logged as
	// deferred, after the allowed mailboxes were made.
	deferred := testpeer.Poll(time.Minute, 50*time.Millisecond, func() bool {
		return d.logCount("too many new mailboxes") >= users-bound
	})
	if !deferred {
		t.Errorf("the recipients over the bound were not deferred:\n%s", grepLog(d.log(), "new mailbox", 10))
	}
	first := boxes()
	if first != bound {
		t.Errorf("%d mailboxes created under max_new_mailboxes_per_hour = %d", first, bound)
	}
	d.stop()
	d.start()
	waitDelivered(led, root, time.Minute)
	d.waitQueueEmpty(time.Minute)
	d.stop()
	if n := len(bounces.copies()); n > 0 {
		t.Errorf("%d bounces for mail held back by the bound", n)
	}
	tl := led.tally(scanMaildirs(root))
	tl.check(t)
	report(t, &row{
		Test:   "New mailboxes per hour",
		Load:   fmt.Sprintf("one QMTP package to %d users without a mailbox", users),
		Inputs: fmt.Sprintf("max_new_mailboxes_per_hour = %d, then a restart with 100", bound),
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("%d mailboxes created under the bound of %d, the other %d recipients deferred (no bounce: %d sent) and delivered after the restart; %d mailboxes at the end.",
			first, bound, users-first, len(bounces.copies()), boxes()),
	})
}

// TestInFlightReserve: twelve 3 MB messages at once onto a queue whose
// file system has little more room than min_free_bytes: the bytes of
// messages still arriving count against the reserve, so the free space
// never sinks deep into it (before, half the reserve went), the messages
// that do not fit are refused temporarily, and every accepted one is
// delivered.
func TestInFlightReserve(t *testing.T) {
	h := newNetHost(t)
	// The next hop refuses until every sender is done, so that accepted
	// messages stay in the queue and the file system fills.
	next := newSink(t, "qmtp", h.addr(t))
	next.Refuse.Store(true)
	qmtpA := h.addr(t)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "reserve.test"
rcpthosts = ["example.com"]
queue_dir = "{{DIR}}/fs/queue"
max_message_bytes = 8388608
[queue]
min_free_bytes = %d
retry_min = "300ms"
retry_max = "1s"
[qmtp]
listen = [%q]
[[route]]
domains = ["*"]
via = "qmtp://%s"
`, reserveBytes, qmtpA, next.addr()))
	fsDir := filepath.Join(d.dir, "fs")
	mountTmpfs(t, fsDir, "40m")
	d.start()
	led := newLedger()
	var minFree atomic.Int64
	minFree.Store(fsFree(fsDir))
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			if f := fsFree(fsDir); f >= 0 && f < minFree.Load() {
				minFree.Store(f)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	const senders, size = 12, 3 << 20
	var wg sync.WaitGroup
	var temps atomic.Int32
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			marker := fmt.Sprintf("reserve-%d~%d", i, size)
			rs := qmtpSend(led, qmtpA, h.ip(10+i), marker, "s@x.test", "big@example.com")
			if len(rs) == 1 && strings.HasPrefix(rs[0], "Z") {
				temps.Add(1)
			}
		}()
	}
	testpeer.Wait(t, "the senders", stuckAfter, &wg)
	close(stop)
	testpeer.Wait(t, "the sampler", stuckAfter, &sampler)
	next.Refuse.Store(false)
	d.waitQueueEmpty(time.Minute)
	d.stop()
	low := minFree.Load()
	if low < reserveBytes*3/4 {
		t.Errorf("free space on the queue's file system sank to %d bytes, a quarter or more into the reserve of %d", low, reserveBytes)
	}
	if temps.Load() == 0 {
		t.Errorf("all %d messages accepted on a file system with room for fewer: the reserve was not applied", senders)
	}
	tl := led.tally(sinkSet(next))
	tl.check(t)
	report(t, &row{
		Test:   "Free-space reserve under concurrent large messages",
		Load:   fmt.Sprintf("%d concurrent QMTP senders of 3 MB each", senders),
		Inputs: fmt.Sprintf("the queue on a 40 MB tmpfs with min_free_bytes %d MiB; the next hop refuses until every sender is done", reserveBytes>>20),
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("%d accepted, %d refused temporarily; the lowest free space seen (sampled every 2 ms) was %.1f MiB of the %d MiB reserve.",
			tl.Acked, temps.Load(), float64(low)/(1<<20), reserveBytes>>20),
	})
}

// reserveBytes is TestInFlightReserve's min_free_bytes.
const reserveBytes = 16 << 20

// tcpserve runs "qmgate DAEMON -config CFG" under tcpserver on addr, as
// qmail runs qmail-qmtpd and qmail-qmqpd.
func tcpserve(t *testing.T, addr, daemon, cfg string) {
	t.Helper()
	tcpserver := testpeer.Need(t, "tcpserver")
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(tcpserver, "-R", "-H", "-l", "tcp.test", host, port, qmgateBin, daemon, "-config", cfg)
	cmd.Env = cleanEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("tcpserver %s stderr:\n%s", daemon, stderr.String())
		}
	})
	if !testpeer.Poll(20*time.Second, 20*time.Millisecond, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("tcpserver for %s not listening on %s: %s", daemon, addr, stderr.String())
	}
}

// TestTCPServerDropIns: qmgate's qmtpd and qmqpd under tcpserver, handing
// their mail to the daemon. qmtpd refuses a recipient whose mailbox name
// the route cannot take alone, as qmail-qmtpd refuses a bad recipient,
// and delivers the package's other recipients; qmqpd applies
// [qmqp] allow exactly as the daemon does (empty: nobody), and leaves
// access to tcpserver only with trust_tcpserver.
func TestTCPServerDropIns(t *testing.T) {
	h := newNetHost(t)
	qmtpdA, denyA, allowA, trustA := h.addr(t), h.addr(t), h.addr(t), h.addr(t)
	doc := `
hostname = "dropin.test"
rcpthosts = ["example.com"]
[qmqp]
listen = ["unix:{{DIR}}/qmqp.sock"]
%s
[[route]]
domains = ["*"]
via = "maildir:{{DIR}}/maildir"
`
	d := newDaemon(t, h, fmt.Sprintf(doc, ""))
	d.start()
	dropCfg := func(name, qmqp string) string {
		p := filepath.Join(d.dir, name+".toml")
		text := strings.ReplaceAll(fmt.Sprintf("queue_dir = %q\n", filepath.Join(d.dir, "queue"))+fmt.Sprintf(doc, qmqp), "{{DIR}}", d.dir)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tcpserve(t, qmtpdA, "qmtpd", d.cfgPath)
	tcpserve(t, denyA, "qmqpd", dropCfg("deny", ""))
	tcpserve(t, allowA, "qmqpd", dropCfg("allow", `allow = ["127.0.0.0/8"]`))
	tcpserve(t, trustA, "qmqpd", dropCfg("trust", "trust_tcpserver = true"))
	led := newLedger()
	var notes []string

	rs := qmtpSend(led, qmtpdA, h.ip(10), "dropin-qmtpd", "s@x.test", "kate@example.com", "../x@example.com", "joe@example.com")
	notes = append(notes, fmt.Sprintf("qmtpd, recipients kate, ../x, joe: %q", rs))
	if len(rs) != 3 || !strings.HasPrefix(rs[0], "K") || !strings.HasPrefix(rs[1], "D") || !strings.HasPrefix(rs[2], "K") {
		t.Errorf("qmtpd with one bad recipient among good ones: %q, want K D K", rs)
	}
	qmqp := func(name, addr string, wantOK bool) {
		marker := "dropin-qmqpd-" + name
		led.attempt(marker)
		r := exchange(addr, h.ip(10), qmqpRequest(makeBody(marker), "s@x.test", "qmqp@example.com"), false, 20*time.Second)
		rs, _ := replies(r.Out)
		if len(rs) == 1 {
			led.result("QMQP", marker, "qmqp@example.com", mail.ParseReply([]byte(rs[0])))
		}
		ok := len(rs) == 1 && strings.HasPrefix(rs[0], "K")
		refused := len(rs) == 1 && strings.HasPrefix(rs[0], "D")
		notes = append(notes, fmt.Sprintf("qmqpd %s: %.40q", name, rs))
		if ok != wantOK || (!wantOK && !refused) {
			t.Errorf("qmqpd %s: %s, want accepted=%v", name, describe(r), wantOK)
		}
	}
	qmqp("with an empty allow list", denyA, false)
	qmqp("with 127.0.0.0/8 allowed", allowA, true)
	qmqp("with trust_tcpserver", trustA, true)
	waitDelivered(led, filepath.Join(d.dir, "maildir"), time.Minute)
	d.waitQueueEmpty(time.Minute)
	d.stop()
	ds := scanMaildirs(filepath.Join(d.dir, "maildir"))
	for k := range ds.count {
		if k.Marker == "dropin-qmqpd-with an empty allow list" {
			t.Error("the refused QMQP request was delivered")
		}
	}
	tl := led.tally(ds)
	tl.check(t)
	report(t, &row{
		Test:   "tcpserver drop-ins (qmtpd, qmqpd)",
		Load:   "qmgate qmtpd and three qmgate qmqpd under tcpserver, handing mail to the daemon's unix socket",
		Inputs: "a QMTP package with a recipient whose mailbox name is unsafe between two good ones; QMQP with [qmqp] allow empty, allowing the client, and trust_tcpserver",
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: strings.Join(notes, "; "),
	})
}

// TestSenderLogin: with [smtp] sender_login, an authenticated user may use
// only the envelope senders named for it (553 5.7.1 otherwise); a user
// not named, with no "*" entry, is not held.
func TestSenderLogin(t *testing.T) {
	h := newNetHost(t)
	subA := h.addr(t)
	var lines []string
	for _, u := range []string{"joe", "ann"} {
		hash, err := bcrypt.GenerateFromPassword([]byte("pw-"+u), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, u+":"+string(hash))
	}
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "login.test"
rcpthosts = ["example.com"]
[smtp]
submission = [%q]
auth_file = "{{DIR}}/passwd"
auth_without_tls = true
sender_login = { joe = ["joe@example.net", "<>"] }
[[route]]
domains = ["*"]
via = "maildir:{{DIR}}/maildir"
`, subA))
	if err := os.WriteFile(filepath.Join(d.dir, "passwd"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.start()
	led := newLedger()
	var notes []string
	for i, tc := range []struct {
		user, from string
		ok         bool
	}{
		{"joe", "<joe@example.net>", true},
		{"joe", "<>", true},
		{"joe", "<boss@example.net>", false},
		{"joe", "<JOE@example.net.evil.test>", false},
		{"ann", "<boss@example.net>", true},
	} {
		marker := fmt.Sprintf("login-%d", i)
		led.attempt(marker)
		s, code, err := dialSMTP(subA, h.ip(10))
		if err != nil || code != "220" {
			t.Fatalf("connect: %v %s", err, code)
		}
		s.cmd("EHLO battery.test")
		auth := base64.StdEncoding.EncodeToString([]byte("\x00" + tc.user + "\x00pw-" + tc.user))
		if c := s.cmd("AUTH PLAIN " + auth); c != "235" {
			t.Fatalf("AUTH as %s: %s\n%s", tc.user, c, s.tr.String())
		}
		mailCode := s.cmd("MAIL FROM:" + tc.from)
		dataCode := ""
		if mailCode == "250" && s.cmd("RCPT TO:<friend@example.com>") == "250" && s.cmd("DATA") == "354" {
			dataCode = s.raw(smtpData(makeBody(marker)))
			led.result("SMTP", marker, "friend@example.com", smtpStatus(dataCode))
		}
		s.cmd("QUIT")
		s.close()
		notes = append(notes, fmt.Sprintf("%s as %s: MAIL %s", tc.user, tc.from, mailCode))
		switch {
		case tc.ok && dataCode != "250":
			t.Errorf("%s as %s: MAIL %s, DATA %q; want it accepted\n%s", tc.user, tc.from, mailCode, dataCode, s.tr.String())
		case !tc.ok && (mailCode != "553" || !strings.Contains(s.tr.String(), "5.7.1")):
			t.Errorf("%s as %s: MAIL %s; want 553 5.7.1\n%s", tc.user, tc.from, mailCode, s.tr.String())
		}
	}
	waitDelivered(led, filepath.Join(d.dir, "maildir"), time.Minute)
	d.waitQueueEmpty(time.Minute)
	d.stop()
	tl := led.tally(scanMaildirs(filepath.Join(d.dir, "maildir")))
	if tl.Acked != 3 {
		t.Errorf("%d messages accepted, want 3 (joe's two own senders, ann)", tl.Acked)
	}
	tl.check(t)
	report(t, &row{
		Test:   "Sender login map",
		Load:   "5 SMTP submissions by two authenticated users",
		Inputs: "sender_login = { joe = [\"joe@example.net\", \"<>\"] }: joe with his address, the null sender, another address of the domain, a look-alike domain; ann (not named) with any sender",
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: strings.Join(notes, "; "),
	})
}
