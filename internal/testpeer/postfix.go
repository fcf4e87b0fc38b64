package testpeer

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// PostfixConfig describes a private Postfix instance for a test.
//
// The instance runs the daemons Postfix needs to queue and deliver (master,
// pickup, cleanup, qmgr, trivial-rewrite, bounce, the smtp client...) plus
// the network services asked for here, each on a free loopback port.
type PostfixConfig struct {
	// QMQP runs qmqpd; its address is Postfix.QMQPAddr.
	QMQP bool
	// QMQPClients is qmqpd_authorized_clients: "127.0.0.0/8" when empty.
	// Set it to "none" for a qmqpd that refuses everyone (Postfix's
	// default), to test refusals.
	QMQPClients string
	// SMTP runs smtpd (permit_mynetworks for 127.0.0.0/8, no TLS); its
	// address is Postfix.SMTPAddr.
	SMTP bool
	// Relayhost is where Postfix delivers every message, such as an
	// SMTPSink's Relayhost(). Empty means mail is discarded once queued
	// (default_transport = discard), which suits benchmarks.
	Relayhost string
	// Main adds or overrides main.cf parameters (postconf names).
	Main map[string]string
	// Master adds master.cf lines, as they would appear in the file.
	Master []string
}

// Postfix is a running private Postfix instance. Everything it has lives in
// Dir: etc/ (main.cf, master.cf), queue/, data/ and maillog.
type Postfix struct {
	Dir       string
	ConfigDir string
	QueueDir  string
	LogFile   string
	// QMQPAddr and SMTPAddr are the services' loopback host:port, or "".
	QMQPAddr string
	SMTPAddr string

	t        testing.TB
	stopOnce sync.Once
}

// StartPostfix starts a private Postfix instance and stops it (and removes
// its files) when the test ends. It needs root and the postfix package (user
// postfix, group postdrop), and stops the test (Fatal under CI, Skip
// elsewhere) without them.
//
// How it works: "postfix -c DIR start" accepts any configuration directory
// when run by root (Postfix insists on alternate_config_directories only for
// set-gid callers such as postdrop), and post-install creates the queue
// directories with the right owners on first start. The instance logs to its
// own maillog through postlogd (maillog_file), since a test machine usually
// has no syslog; the log is printed when the test fails.
func StartPostfix(t testing.TB, cfg PostfixConfig) *Postfix {
	t.Helper()
	NeedRoot(t, "Postfix instances start as root")
	postfix := Need(t, "postfix")
	if cfg.QMQP {
		Need(t, "qmqpd")
	}
	if cfg.SMTP {
		Need(t, "smtpd")
	}
	owner, err := user.Lookup("postfix")
	if err != nil {
		missing(t, "no postfix user: "+err.Error())
	}
	if _, err := user.LookupGroup("postdrop"); err != nil {
		missing(t, "no postdrop group: "+err.Error())
	}
	uid, _ := strconv.Atoi(owner.Uid)

	// Not t.TempDir: its parent is mode 0700, which Postfix's unprivileged
	// daemons could not traverse.
	dir, err := os.MkdirTemp("", "qmgate-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	p := &Postfix{
		Dir:       dir,
		ConfigDir: filepath.Join(dir, "etc"),
		QueueDir:  filepath.Join(dir, "queue"),
		LogFile:   filepath.Join(dir, "maillog"),
		t:         t,
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("postfix log (%s):\n%s", p.LogFile, p.Log())
		}
		os.RemoveAll(dir)
	})
	if err := MakePostfixDirs(dir, uid); err != nil {
		t.Fatal(err)
	}

	main := PostfixMain(dir, "qmgate.test")
	// Postfix sleeps a second before every negative QMQP reply; tests
	// want the reply, not the tarpit.
	main["qmqpd_error_delay"] = "0s"
	main["smtpd_error_sleep_time"] = "0s"
	if cfg.QMQPClients != "" {
		main["qmqpd_authorized_clients"] = cfg.QMQPClients
		if cfg.QMQPClients == "none" {
			main["qmqpd_authorized_clients"] = ""
		}
	}
	if cfg.Relayhost != "" {
		main["relayhost"] = cfg.Relayhost
		main["default_transport"] = "smtp"
	}
	for k, v := range cfg.Main {
		main[k] = v
	}

	master := PostfixServices()
	if cfg.QMQP {
		p.QMQPAddr = FreePort(t)
		master = append(master, p.QMQPAddr+" inet n - n - - qmqpd")
	}
	if cfg.SMTP {
		p.SMTPAddr = FreePort(t)
		master = append(master, p.SMTPAddr+" inet n - n - - smtpd")
	}
	master = append(master, cfg.Master...)

	if err := WritePostfixConfig(p.ConfigDir, main, master); err != nil {
		t.Fatal(err)
	}

	// "postfix start" returns once the master has initialised (master -w),
	// so the services listen when it returns. Postfix reports fatal errors
	// to stderr only on a terminal, otherwise to the maillog.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, postfix, "-c", p.ConfigDir, "start").CombinedOutput()
	if err != nil {
		t.Fatalf("postfix start: %v\n%s\nmaillog:\n%s", err, out, p.Log())
	}
	for _, a := range []string{p.QMQPAddr, p.SMTPAddr} {
		if a != "" {
			if err := WaitListening(a, time.Minute); err != nil {
				t.Fatalf("postfix service %s: %v\nmaillog:\n%s", a, err, p.Log())
			}
		}
	}
	return p
}

// PostfixMain returns the main.cf settings a private instance in dir starts
// from (the layout MakePostfixDirs makes): loopback only, no TLS, no DNS,
// relaying for 127.0.0.0/8, mail discarded once queued, logging to
// dir/maillog through postlogd. Anything not named is Postfix's default.
func PostfixMain(dir, domain string) map[string]string {
	return map[string]string{
		"compatibility_level":      "3.6",
		"queue_directory":          filepath.Join(dir, "queue"),
		"data_directory":           filepath.Join(dir, "data"),
		"mail_owner":               "postfix",
		"setgid_group":             "postdrop",
		"myhostname":               "postfix." + domain,
		"mydomain":                 domain,
		"myorigin":                 "$myhostname",
		"mydestination":            "",
		"relay_domains":            "",
		"local_recipient_maps":     "",
		"alias_maps":               "",
		"alias_database":           "",
		"inet_interfaces":          "loopback-only",
		"inet_protocols":           "ipv4",
		"mynetworks":               "127.0.0.0/8",
		"smtpd_relay_restrictions": "permit_mynetworks, reject",
		"smtpd_tls_security_level": "none",
		"smtp_tls_security_level":  "none",
		"smtp_dns_support_level":   "disabled",
		"qmqpd_authorized_clients": "127.0.0.0/8",
		// Postfix slows its own intake when the queue manager falls
		// behind; tests and benchmarks want raw acceptance.
		"in_flow_delay":         "0s",
		"maillog_file":          filepath.Join(dir, "maillog"),
		"maillog_file_prefixes": dir,
		"biff":                  "no",
		"default_transport":     "discard",
	}
}

// MakePostfixDirs makes a private instance's directories in dir: etc/,
// queue/ and data/ (owned by uid, the postfix user), with dir itself
// searchable by Postfix's unprivileged daemons.
func MakePostfixDirs(dir string, uid int) error {
	for _, d := range []string{"etc", "queue", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	return os.Chown(filepath.Join(dir, "data"), uid, -1)
}

// WritePostfixConfig writes main.cf (its settings sorted by name) and
// master.cf (the lines as given) into configDir.
func WritePostfixConfig(configDir string, main map[string]string, master []string) error {
	var cf bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(main)) {
		fmt.Fprintf(&cf, "%s = %s\n", k, main[k])
	}
	if err := os.WriteFile(filepath.Join(configDir, "main.cf"), cf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(configDir, "master.cf"), []byte(strings.Join(master, "\n")+"\n"), 0o644)
}

// WaitListening waits up to d until addr accepts a TCP connection.
func WaitListening(addr string, d time.Duration) error {
	var err error
	if Poll(d, 20*time.Millisecond, func() bool {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
		}
		return err == nil
	}) {
		return nil
	}
	return fmt.Errorf("%s not listening after %v: %w", addr, d, err)
}

// Log returns the instance's maillog so far.
func (p *Postfix) Log() string {
	b, err := os.ReadFile(p.LogFile)
	if err != nil {
		return "(no maillog: " + err.Error() + ")"
	}
	return string(b)
}

// Command runs one of Postfix's commands (postqueue, postsuper, postconf...)
// on this instance, with -c added, and returns its combined output.
func (p *Postfix) Command(name string, args ...string) (string, error) {
	path := Path(name)
	if path == "" {
		return "", fmt.Errorf("%s is not installed", name)
	}
	out, err := exec.Command(path, append([]string{"-c", p.ConfigDir}, args...)...).CombinedOutput()
	return string(out), err
}

// QueueCount returns the number of messages in the instance's queue
// (incoming, active, deferred, hold, maildrop).
func (p *Postfix) QueueCount() int { return PostfixQueued(p.QueueDir) }

// PostfixQueued counts the messages in the named queues of the Postfix
// queue directory queueDir; with none named, in all of them (maildrop,
// incoming, active, deferred, hold).
func PostfixQueued(queueDir string, queues ...string) int {
	if len(queues) == 0 {
		queues = []string{"maildrop", "incoming", "active", "deferred", "hold"}
	}
	n := 0
	for _, q := range queues {
		_ = filepath.WalkDir(filepath.Join(queueDir, q), func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				n++
			}
			return nil
		})
	}
	return n
}

// Stop stops the instance; the test's cleanup calls it, and it may be called
// earlier. "postfix stop" waits (up to five seconds, then kills) until the
// master has gone.
func (p *Postfix) Stop() {
	p.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, Path("postfix"), "-c", p.ConfigDir, "stop").CombinedOutput()
		if err != nil {
			p.t.Logf("postfix stop: %v\n%s", err, out)
		}
	})
}

// PostfixServices returns the master.cf lines of the daemons a private
// Postfix instance needs to queue and relay mail; callers add their
// listeners (qmqpd, smtpd) after them.
func PostfixServices() []string {
	return []string{
		"pickup     unix  n  -  n  60    1  pickup",
		"cleanup    unix  n  -  n  -     0  cleanup",
		"qmgr       unix  n  -  n  300   1  qmgr",
		"rewrite    unix  -  -  n  -     -  trivial-rewrite",
		"bounce     unix  -  -  n  -     0  bounce",
		"defer      unix  -  -  n  -     0  bounce",
		"trace      unix  -  -  n  -     0  bounce",
		"verify     unix  -  -  n  -     1  verify",
		"flush      unix  n  -  n  1000? 0  flush",
		"proxymap   unix  -  -  n  -     -  proxymap",
		"proxywrite unix  -  -  n  -     1  proxymap",
		"smtp       unix  -  -  n  -     -  smtp",
		"relay      unix  -  -  n  -     -  smtp",
		"showq      unix  n  -  n  -     -  showq",
		"error      unix  -  -  n  -     -  error",
		"retry      unix  -  -  n  -     -  error",
		"discard    unix  -  -  n  -     -  discard",
		"local      unix  -  n  n  -     -  local",
		"anvil      unix  -  -  n  -     1  anvil",
		"scache     unix  -  -  n  -     1  scache",
		"postlog    unix-dgram n - n - 1 postlogd",
	}
}
