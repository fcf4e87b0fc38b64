// Package testpeer finds the third-party programs that qmgate's tests run
// against (Postfix's qmqpd, qmqp-source, smtp-sink, nullmailer's qmqp module,
// swaks, tcpserver) and decides what a missing one means.
//
// Under CI (QMGATE_CI=1, set by .ci/run) a missing peer fails the test: an
// interop test must never be skipped silently there. Elsewhere the test is
// skipped with a message that names .ci/deps, which installs them all.
//
// It is also the one home of the helpers every package's tests share:
// loopback ports reserved until a test ends (Reserve, FreePort), waiting for
// an outcome (Poll, WaitFor) or an event with a bound (Recv, Wait), the
// goroutine-leak check (CheckGoroutines), a DNS server answering from
// tables (StartDNS), a throwaway certificate authority (NewCA) and an SMTP
// sink (NewSMTPSink). Only tests and bench/ import it.
package testpeer

import (
	"os"
	"os/exec"
	"testing"
)

// CI reports whether the tests run under .ci/run, where every peer must exist.
func CI() bool { return os.Getenv("QMGATE_CI") == "1" }

// known maps a peer's name to where .ci/deps puts it, for programs that are
// not on PATH (nullmailer is unpacked, never installed, since it conflicts
// with Postfix as an MTA; Postfix daemons live in its libexec directory).
var known = map[string][]string{
	"nullmailer-qmqp": {"/opt/qmgate-peers/nullmailer/usr/lib/nullmailer/qmqp"},
	"qmqpd":           {"/usr/lib/postfix/sbin/qmqpd"},
	"smtpd":           {"/usr/lib/postfix/sbin/smtpd"},
	"postfix":         {"/usr/sbin/postfix"},
	"qmqp-source":     {"/usr/sbin/qmqp-source"},
	"qmqp-sink":       {"/usr/sbin/qmqp-sink"},
	"smtp-source":     {"/usr/sbin/smtp-source"},
	"smtp-sink":       {"/usr/sbin/smtp-sink"},
	"swaks":           {"/usr/bin/swaks"},
	"tcpserver":       {"/usr/bin/tcpserver"},
}

// Path returns the path of the named peer program, or "" if it is missing.
func Path(name string) string {
	for _, p := range known[name] {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return ""
}

// Need returns the path of the named peer, or stops the test: Fatal under
// CI, Skip elsewhere.
func Need(t testing.TB, name string) string {
	t.Helper()
	p := Path(name)
	if p == "" {
		missing(t, name+" is not installed (run: sudo bash .ci/deps)")
	}
	return p
}

// NeedRoot stops the test unless it runs as root (Postfix instances need it).
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "needs root: "+why)
	}
}

func missing(t testing.TB, msg string) {
	t.Helper()
	if CI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// FreePort returns a loopback TCP address for a peer that cannot be told to
// pick its own port (or for an address nobody listens on), reserved with
// Reserve until the test ends: the peer binds it whenever it starts, and
// nothing else in the meantime can.
func FreePort(t testing.TB) string {
	t.Helper()
	addr, release, err := Reserve("127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return addr
}
