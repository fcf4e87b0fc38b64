//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

// Proc is a server or tool the harness started and must stop. Its output
// goes to a log file in the work directory.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  string
	done chan struct{}
	err  error
}

// startProc starts a long-running program; the harness's cleanup stops it.
func (h *Harness) startProc(name string, env []string, prog string, args ...string) (*Proc, error) {
	logPath := filepath.Join(h.logDir, fmt.Sprintf("%03d-%s.log", h.nextLog(), name))
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(prog, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	// A process group of its own: a ^C to the harness reaches the harness,
	// which stops its children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	h.onCleanup(p.Stop)
	return p, nil
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, waits up to 30 s, then SIGKILL. Idempotent.
func (p *Proc) Stop() {
	if p.Exited() {
		return
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.Kill()
	}
}

// Kill sends SIGKILL and waits.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	p.Cmd.Process.Kill()
	<-p.done
}

// Tail returns the last n bytes of the process's log.
func (p *Proc) Tail(n int) string { return tailFile(p.Log, n) }

func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-int64(n), 0)
	b := make([]byte, st.Size()-off)
	f.ReadAt(b, off)
	return string(b)
}

// ToolRun is one finished run of a load generator.
type ToolRun struct {
	Stdout  string
	Stderr  string
	Elapsed time.Duration
	CPU     time.Duration // the tool's own user+system time
	Exit    int
}

// runTool runs a program to completion (bounded by timeout) and measures it.
func (h *Harness) runTool(timeout time.Duration, prog string, args ...string) (ToolRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	h.vlog("run %s %s", filepath.Base(prog), strings.Join(args, " "))
	t0 := time.Now()
	err := cmd.Run()
	r := ToolRun{Stdout: out.String(), Stderr: errb.String(), Elapsed: time.Since(t0)}
	if cmd.ProcessState != nil {
		r.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		r.Exit = cmd.ProcessState.ExitCode()
	}
	if ctx.Err() != nil {
		return r, fmt.Errorf("%s timed out after %v", filepath.Base(prog), timeout)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return r, err
	}
	return r, nil
}

// freePort returns a loopback address for a server the harness starts,
// reserved until the harness exits (testpeer.Reserve; the reservation is a
// bare descriptor, never released): the server binds the port whenever it
// starts, and nothing else can take it in between. A port picked by
// listening on port 0 and closing was once given to something else before
// qmgate bound it (under go test ./..., beside other packages' tests), and
// the measurement failed with "not listening after 30s".
func freePort() string {
	addr, _, err := testpeer.Reserve("127.0.0.1", 0)
	if err != nil {
		panic(err)
	}
	return addr
}

// waitListening waits until addr accepts a connection.
var waitListening = testpeer.WaitListening

// Memory is a process's resident set, from /proc/PID/status.
type Memory struct {
	RSS, HWM int64 // bytes
}

func readMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) < 1 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			m.RSS = n << 10
		case "VmHWM":
			m.HWM = n << 10
		}
	}
	return m, nil
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's times (100 on every
// Linux this runs on).
const clockTick = 100

// procStat holds the fields of /proc/PID/stat the harness uses.
type procStat struct {
	ppid, session int
	cpu           time.Duration // utime + stime
	childCPU      time.Duration // cutime + cstime: reaped children
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("bad stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return procStat{}, errors.New("short stat")
	}
	num := func(k int) int64 { n, _ := strconv.ParseInt(f[k], 10, 64); return n }
	tick := func(n int64) time.Duration { return time.Duration(n) * time.Second / clockTick }
	// f[0] is field 3 (state): ppid is field 4, session 6, utime 14,
	// stime 15, cutime 16, cstime 17.
	return procStat{
		ppid: int(num(1)), session: int(num(3)),
		cpu:      tick(num(11) + num(12)),
		childCPU: tick(num(13) + num(14)),
	}, nil
}

// processCPU is the CPU time a process has used.
func processCPU(pid int) time.Duration {
	st, err := readProcStat(pid)
	if err != nil {
		return 0
	}
	return st.cpu
}

// sessionCPU is the CPU time of every live process in a session plus what
// its leader has reaped: Postfix's master and all its short-lived daemons.
func sessionCPU(sid int) time.Duration {
	ents, _ := os.ReadDir("/proc")
	var total time.Duration
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || st.session != sid {
			continue
		}
		total += st.cpu
		if pid == sid {
			total += st.childCPU
		}
	}
	return total
}
