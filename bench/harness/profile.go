//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// cpuCategory is a part of the daemon's work, found in a CPU profile by the
// functions on the stack. Categories overlap (a log write inside a delivery
// counts for both).
type cpuCategory struct {
	name, focus string
}

var cpuCategories = []cpuCategory{
	{"group commit: journal write + fdatasync (queue commitLoop)", `queue\.\(\*Queue\)\.commitLoop`},
	{"  of which fdatasync", `unix\.Fdatasync`},
	{"delivery engine: claim, discard, record (relay Engine)", `relay\.\(\*Engine\)`},
	{"  of which recording results (queue Record)", `queue\.\(\*Queue\)\.Record`},
	{"logging (log/slog, one line per acceptance and per delivery)", `log/slog\.`},
	{"accepting connections", `\.\(\*TCPListener\)\.Accept`},
	{"socket reads", `net\.\(\*conn\)\.Read`},
	{"socket writes (replies)", `net\.\(\*conn\)\.Write`},
	{"closing connections", `net\.\(\*conn\)\.Close`},
	{"timeouts: contexts and deadlines", `^context\.|SetReadDeadline|SetWriteDeadline|SetDeadline`},
	{"memory: allocation and garbage collection", `runtime\.mallocgc|runtime\.gcBgMarkWorker|runtime\.gcAssistAlloc`},
	{"goroutine stacks growing (new goroutine per connection)", `runtime\.newstack`},
	{"Go scheduler: finding and switching goroutines", `runtime\.schedule$`},
	{"metrics (Prometheus counters)", `prometheus`},
	{"all system calls", `internal/runtime/syscall/linux\.Syscall6|syscall\.RawSyscall`},
}

var pprofShowing = regexp.MustCompile(`Showing nodes accounting for ([0-9.]+)(ms|s|us|µs|min|h)?, ([0-9.]+)% of ([0-9.]+)(ms|s|us|µs|min|h)? total`)

// profileRun loads a fresh daemon for a few seconds with CPU profiling on
// (not during a measured run: the profiler costs a little) and returns the
// breakdown as table rows: category, share of CPU, µs per message.
func (h *Harness) profileRun(label string, load func(q *Qmgate, msgs int) (Load, error), ratePerSec float64) ([][]string, error) {
	if h.pprofDir == "" {
		h.pprofDir = filepath.Join(h.work, "pprof")
		os.MkdirAll(h.pprofDir, 0o755)
		defer func() { h.pprofDir = "" }()
	}
	q, err := h.startQmgate("profile-"+label, QmgateOpts{Route: "discard:"})
	if err != nil {
		return nil, err
	}
	defer q.Stop()
	d := h.profileSeconds()
	// Enough messages to outlast the profile.
	msgs := int(ratePerSec*(d.Seconds()+2)) + 1000
	a0, _, _, _ := q.Counters()
	c0 := q.CPU()
	prof := q.Profile(label, d)
	t0 := time.Now()
	var lerr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, lerr = load(q, msgs)
	}()
	<-prof
	a1, _, _, _ := q.Counters()
	window := time.Since(t0)
	cpu := q.CPU() - c0
	<-done
	if lerr != nil {
		return nil, lerr
	}
	path := filepath.Join(h.pprofDir, label+".pprof")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no profile: %w", err)
	}
	n := a1 - a0
	rows := [][]string{{"part of the work", "share of qmgate's CPU", "µs per message"}}
	totalUS := perMessage(cpu, n)
	rows = append(rows, []string{fmt.Sprintf("**everything** (%d messages accepted in the %.1f s profiled)", n, window.Seconds()), "100%", fmt.Sprintf("%.0f", totalUS)})
	for _, c := range cpuCategories {
		share, err := pprofShare(h.qmgateBin, path, c.focus)
		if err != nil {
			return rows, err
		}
		rows = append(rows, []string{c.name, fmt.Sprintf("%.1f%%", share), fmt.Sprintf("%.1f", share/100*totalUS)})
	}
	return rows, nil
}

// pprofShare is the percentage of samples whose stack matches focus.
func pprofShare(bin, profile, focus string) (float64, error) {
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=1", "-focus", focus, bin, profile).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("go tool pprof: %v: %s", err, out)
	}
	m := pprofShowing.FindStringSubmatch(string(out))
	if m == nil {
		return 0, nil // nothing matched the focus
	}
	v, _ := strconv.ParseFloat(m[3], 64)
	return v, nil
}
