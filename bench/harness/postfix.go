//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
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
	m := testpeer.PostfixMain(p.Dir, "bench.test")
	m["message_size_limit"] = strconv.Itoa(64 << 20)
	return m
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
	if err := testpeer.MakePostfixDirs(dir, uid); err != nil {
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
	if err := testpeer.WritePostfixConfig(p.ConfigDir, main, master); err != nil {
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
func (p *Postfix) QueueCount() int { return testpeer.PostfixQueued(p.QueueDir) }

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
func (p *Postfix) queueCountIn(queue string) int { return testpeer.PostfixQueued(p.QueueDir, queue) }

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
