//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

// PostfixOpts says which services a private Postfix instance runs.
type PostfixOpts struct {
	QMQP, SMTP bool
	// Relayhost, when set, makes Postfix deliver everything there by SMTP;
	// otherwise default_transport = discard: mail is discarded once queued,
	// which measures acceptance into the durable queue, as qmgate's
	// discard: route does.
	Relayhost string
}

// Postfix is a running private Postfix instance, all of it under Dir.
type Postfix struct {
	Dir, ConfigDir, QueueDir, LogFile string
	QMQPAddr, SMTPAddr                string
	h                                 *Harness
	stopped                           bool
	logOff, sent                      int64 // Delivered's progress through LogFile
	master                            int   // the master daemon's pid
}

// postfixMain are the main.cf settings every instance gets. Anything not
// named here is Postfix's default; BENCHMARKS.md lists these.
func postfixMain(p *Postfix) map[string]string {
	return map[string]string{
		"compatibility_level":      "3.6",
		"queue_directory":          p.QueueDir,
		"data_directory":           filepath.Join(p.Dir, "data"),
		"mail_owner":               "postfix",
		"setgid_group":             "postdrop",
		"myhostname":               "postfix.bench.test",
		"mydomain":                 "bench.test",
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
		// behind; the benchmark measures raw acceptance, so turn it off
		// (this favours Postfix).
		"in_flow_delay":         "0s",
		"maillog_file":          p.LogFile,
		"maillog_file_prefixes": p.Dir,
		"biff":                  "no",
		"default_transport":     "discard",
		"message_size_limit":    strconv.Itoa(64 << 20),
	}
}

// postfixChanged lists the main.cf settings that differ from a stock
// install in ways that matter for speed, for the report.
const postfixChanged = "`default_transport = discard` (ingest) or `relayhost = [127.0.0.1]:PORT` (relay, drain); `in_flow_delay = 0s`; " +
	"`message_size_limit = 64 MiB`; TLS off; `smtp_dns_support_level = disabled`; `qmqpd_authorized_clients = 127.0.0.0/8`; " +
	"logging to a file through postlogd (`maillog_file`); everything else Postfix's defaults (fsync on, `default_process_limit = 100`)"

func (h *Harness) startPostfix(name string, o PostfixOpts) (*Postfix, error) {
	if _, err := user.Lookup("postfix"); err != nil {
		return nil, fmt.Errorf("no postfix user (install postfix: bash .ci/deps): %w", err)
	}
	owner, _ := user.Lookup("postfix")
	uid, _ := strconv.Atoi(owner.Uid)
	dir := filepath.Join(h.work, "postfix-"+name)
	os.RemoveAll(dir)
	p := &Postfix{Dir: dir, ConfigDir: filepath.Join(dir, "etc"), QueueDir: filepath.Join(dir, "queue"), LogFile: filepath.Join(dir, "maillog"), h: h}
	dataDir := filepath.Join(dir, "data")
	for _, d := range []string{p.ConfigDir, p.QueueDir, dataDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	os.Chmod(dir, 0o755)
	if err := os.Chown(dataDir, uid, -1); err != nil {
		return nil, err
	}
	main := postfixMain(p)
	if o.Relayhost != "" {
		main["relayhost"] = o.Relayhost
		main["default_transport"] = "smtp"
	}
	master := testpeer.PostfixServices()
	if o.QMQP {
		p.QMQPAddr = freePort()
		master = append(master, p.QMQPAddr+" inet n - n - - qmqpd")
	}
	if o.SMTP {
		p.SMTPAddr = freePort()
		master = append(master, p.SMTPAddr+" inet n - n - - smtpd")
	}
	keys := make([]string, 0, len(main))
	for k := range main {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var cf bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&cf, "%s = %s\n", k, main[k])
	}
	if err := os.WriteFile(filepath.Join(p.ConfigDir, "main.cf"), cf.Bytes(), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(p.ConfigDir, "master.cf"), []byte(strings.Join(master, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	h.onCleanup(p.Stop)
	if out, err := p.command(2*time.Minute, "postfix", "start"); err != nil {
		return nil, fmt.Errorf("postfix start: %v\n%s\n%s", err, out, tailFile(p.LogFile, 2000))
	}
	for _, a := range []string{p.QMQPAddr, p.SMTPAddr} {
		if a != "" {
			if err := waitListening(a, time.Minute); err != nil {
				return nil, fmt.Errorf("postfix: %v\n%s", err, tailFile(p.LogFile, 2000))
			}
		}
	}
	p.master = p.MasterPid()
	h.vlog("postfix %s started in %s", name, dir)
	return p, nil
}

// command runs a Postfix command (postfix, postqueue, postconf, ...) with
// -c pointing at this instance.
func (p *Postfix) command(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, append([]string{"-c", p.ConfigDir}, args...)...).CombinedOutput()
	return string(out), err
}

// Stop stops the instance ("postfix stop" waits for the master to go).
func (p *Postfix) Stop() {
	if p.stopped {
		return
	}
	p.stopped = true
	if out, err := p.command(time.Minute, "postfix", "stop"); err != nil {
		p.h.logf("postfix stop: %v %s", err, out)
		// The master must not outlive the harness: stop it by its pid.
		if p.master > 0 {
			syscall.Kill(p.master, syscall.SIGTERM)
		}
	}
}

// MasterPid is the master daemon's pid: the session of every Postfix daemon
// of this instance.
func (p *Postfix) MasterPid() int {
	b, err := os.ReadFile(filepath.Join(p.QueueDir, "pid", "master.pid"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// CPU is the CPU time the whole instance has used so far.
func (p *Postfix) CPU() time.Duration {
	if pid := p.MasterPid(); pid > 0 {
		return sessionCPU(pid)
	}
	return 0
}

// QueueCount counts the messages in the instance's queues.
func (p *Postfix) QueueCount() int {
	n := 0
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		n += p.queueCountIn(q)
	}
	return n
}

// Delivered counts the recipients the log shows as delivered so far
// ("status=sent": discarded, or accepted by the relayhost). It reads only
// what the log gained since the last call.
func (p *Postfix) Delivered() int64 {
	f, err := os.Open(p.LogFile)
	if err != nil {
		return p.sent
	}
	defer f.Close()
	if _, err := f.Seek(p.logOff, io.SeekStart); err != nil {
		return p.sent
	}
	b, _ := io.ReadAll(f)
	// Only whole lines: the last one may still be being written.
	end := bytes.LastIndexByte(b, '\n') + 1
	p.sent += int64(bytes.Count(b[:end], []byte(" status=sent ")))
	p.logOff += int64(end)
	return p.sent
}

// queueCountIn counts the messages in one of the instance's queues.
func (p *Postfix) queueCountIn(queue string) int {
	n := 0
	filepath.WalkDir(filepath.Join(p.QueueDir, queue), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// discardPostfix returns the run's Postfix instance with qmqpd and smtpd and
// default_transport = discard, starting it on first use. The ingest and
// scale measurements share it (each waits for the queue to empty before the
// next run); it stops when the harness ends.
func (h *Harness) discardPostfix() *Postfix {
	if h.pfDiscard != nil {
		return h.pfDiscard
	}
	mark := h.cleanupMark()
	p, err := h.startPostfix("discard", PostfixOpts{QMQP: true, SMTP: true})
	// Its stop belongs to the whole run, not to this measurement.
	h.mu.Lock()
	moved := append([]func(){}, h.cleanups[mark:]...)
	h.cleanups = h.cleanups[:mark]
	h.runCleanups = append(h.runCleanups, moved...)
	h.mu.Unlock()
	h.check(err)
	h.pfDiscard = p
	return p
}
