//go:build linux

// Command harness measures qmgate beside Postfix and beside the machine's own
// limits, and writes BENCHMARKS.md. bench/run is the one command that runs
// it (after installing what it needs from Debian packages):
//
//	bench/run                      # full run, writes BENCHMARKS.md (~25 minutes)
//	bench/run -quick -out /tmp/B.md   # smoke run with tiny counts (~1 minute)
//	go run ./bench/harness -only qmqp,smtp -pprof /tmp/prof   # some measurements, with CPU profiles
//
// Every server it measures runs as a separate process on loopback: `qmgate
// serve` built from this tree with a generated configuration (one discard:
// or relay route, the queue on the work directory's disk), private Postfix
// instances from their own configuration directories (default_transport =
// discard, or a relayhost), Postfix's qmqp-sink and smtp-sink, and
// bench/qmtp-sink. Load comes from Postfix's qmqp-source and smtp-source
// and from bench/qmtp-source. Each figure is printed beside its anchor from
// the same run, as a ratio.
//
// After every run it checks that nothing acknowledged went missing: what
// the source saw accepted is compared with what the far end received (the
// hub's delivery counter on its discard: route, Postfix's "status=sent"
// log lines, a sink's own count). One measurement kills a hub with SIGKILL
// mid-run and checks, message by message, that every acknowledged message
// still arrives.
//
// It needs Linux (it reads /proc), root (Postfix instances, and qmgate
// drops to "nobody"), the Postfix package, and gnuplot for the plot
// (bench/run installs both).
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Sizes are the counts of one run; quick mode shrinks them.
type Sizes struct {
	Size           int   // message size for ingest, relay and drain
	IngestMsgs     int   // per ingest run
	IngestSessions []int // session counts for ingest runs
	HubMsgs        int
	HubSessions    int
	HubDepth       int // qmtp-source pipelining depth
	DrainMsgs      int
	ScaleSizes     []int
	ScaleSessions  []int
	ScaleBytes     int // bytes per point of the size curve (bounds the count)
	ScaleMsgs      int // messages per point (at most)
	IdleConns      int
	BigMessage     int64
	FlushSeconds   float64
	CrashMsgs      int
	DKIMMsgs       int // per variant and round
	DKIMSessions   int
	DKIMRounds     int
	SignTime       time.Duration // bare signing, per key and round
	LargeSizes     []int         // relay and drain of large messages
	LargeBytes     int           // bytes per size (bounds the count)
	LargeMsgs      int           // messages per size (at most)
}

var fullSizes = Sizes{
	Size: 2048, IngestMsgs: 20000, IngestSessions: []int{10, 50},
	HubMsgs: 20000, HubSessions: 10, HubDepth: 32,
	DrainMsgs:  100000,
	ScaleSizes: []int{1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20}, ScaleSessions: []int{1, 4, 16, 64, 256},
	ScaleBytes: 256 << 20, ScaleMsgs: 4000,
	IdleConns: 10000, BigMessage: 1 << 30, FlushSeconds: 3, CrashMsgs: 20000,
	DKIMMsgs: 3000, DKIMSessions: 10, DKIMRounds: 3, SignTime: 2 * time.Second,
	LargeSizes: []int{64 << 10, 256 << 10, 1 << 20}, LargeBytes: 256 << 20, LargeMsgs: 2000,
}

var quickSizes = Sizes{
	Size: 2048, IngestMsgs: 200, IngestSessions: []int{2, 5},
	HubMsgs: 200, HubSessions: 2, HubDepth: 8,
	DrainMsgs:  200,
	ScaleSizes: []int{1 << 10, 64 << 10}, ScaleSessions: []int{1, 8},
	ScaleBytes: 4 << 20, ScaleMsgs: 200,
	IdleConns: 200, BigMessage: 8 << 20, FlushSeconds: 0.2, CrashMsgs: 400,
	DKIMMsgs: 100, DKIMSessions: 2, DKIMRounds: 2, SignTime: 200 * time.Millisecond,
	LargeSizes: []int{64 << 10}, LargeBytes: 4 << 20, LargeMsgs: 60,
}

// scenarios in the order they run and appear.
var scenarios = []struct {
	key, title string
	run        func(*Harness) *Section
}{
	{"flush", "The disk's flush rate", (*Harness).flushRate},
	{"qmqp", "1. QMQP ingest", (*Harness).qmqpIngest},
	{"smtp", "2. SMTP ingest", (*Harness).smtpIngest},
	{"hub", "3. Hub to hub", (*Harness).hubToHub},
	{"drain", "4. Drain", (*Harness).drain},
	{"scale", "5. How cost grows", (*Harness).scale},
	{"memory", "6. Memory", (*Harness).memory},
	{"crash", "Durability under kill -9", (*Harness).crash},
	{"dkim", "DKIM signing, end to end", (*Harness).dkimSigning},
	{"large", "QMTP relay and drain of large messages, beside the disk", (*Harness).largeMessages},
	{"gobench", "7. Package benchmarks (go test -bench)", (*Harness).packageBenchmarks},
}

// Harness holds one run's state.
type Harness struct {
	quick     bool
	verbose   bool
	sizes     Sizes
	repo      string
	work      string
	logDir    string
	binDir    string
	pprofDir  string
	plotPath  string // PNG written by the scale measurement
	reportDir string // where the report goes: links are relative to it
	disk      string // block device under work, for flush counts

	qmgateBin string
	bgCPU     float64 // percent of the cores busy with nothing of ours running, before the current measurement
	idleWait  time.Duration
	flush     *FlushRates
	checks    []Check

	pfDiscard *Postfix // shared by the ingest and scale measurements

	mu          sync.Mutex
	cleanups    []func()
	runCleanups []func() // run at the very end, after cleanups
	logN        int
	started     time.Time
}

func main() {
	out := flag.String("out", "BENCHMARKS.md", "write the report here")
	quick := flag.Bool("quick", false, "smoke run with tiny counts")
	work := flag.String("work", "", "work directory (default: a new directory under /var/tmp; must not be tmpfs)")
	only := flag.String("only", "", "comma-separated measurements to run: "+scenarioKeys())
	keep := flag.Bool("keep", false, "keep the work directory (logs, queues) afterwards")
	pprofDir := flag.String("pprof", "", "write CPU profiles of qmgate during the ingest runs to this directory")
	plot := flag.String("plot", "", "the plot's PNG (default: bench/scaling.png beside the report)")
	verbose := flag.Bool("v", false, "log every command")
	drainMsgs := flag.Int("drain", 0, "messages for the drain measurement (default 100000; quick 200)")
	ingestMsgs := flag.Int("ingest", 0, "messages per ingest run (default 20000; quick 200)")
	idleWait := flag.Duration("idle-wait", time.Minute, "before each measurement, wait up to this long for other processes to leave the cores under 25% busy (0: don't wait)")
	flag.Parse()
	h := &Harness{quick: *quick, verbose: *verbose, sizes: fullSizes, pprofDir: *pprofDir, started: time.Now(), idleWait: *idleWait}
	if *quick {
		h.sizes = quickSizes
	}
	if *drainMsgs > 0 {
		h.sizes.DrainMsgs = *drainMsgs
	}
	if *ingestMsgs > 0 {
		h.sizes.IngestMsgs = *ingestMsgs
	}
	code := h.main(*out, *work, *only, *keep, *plot)
	os.Exit(code)
}

func scenarioKeys() string {
	var k []string
	for _, s := range scenarios {
		k = append(k, s.key)
	}
	return strings.Join(k, ",")
}

func (h *Harness) main(out, work, only string, keep bool, plot string) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		h.logf("%v: stopping every server started", s)
		h.cleanup()
		os.Exit(130)
	}()
	defer h.cleanup()
	if err := h.setup(work, keep); err != nil {
		h.logf("setup: %v", err)
		return 1
	}
	absOut, _ := filepath.Abs(out)
	if plot == "" {
		plot = filepath.Join(filepath.Dir(absOut), "bench", "scaling.png")
	}
	h.plotPath, _ = filepath.Abs(plot)
	h.reportDir = filepath.Dir(absOut)
	var want []string
	if only != "" {
		want = strings.Split(only, ",")
	}
	machine := describeMachine(h.work)
	load := loadAverage()
	var sections []*Section
	for _, s := range scenarios {
		if want != nil && !slices.Contains(want, s.key) {
			continue
		}
		h.bgCPU = h.background()
		h.logf("== %s (background CPU %.0f%%, load %s)", s.title, h.bgCPU, loadAverage())
		t0 := time.Now()
		sec := h.safeRun(s.run)
		sec.Key, sec.Title, sec.Took, sec.Background = s.key, s.title, time.Since(t0), h.bgCPU
		sections = append(sections, sec)
		h.logf("   %s took %v", s.key, sec.Took.Round(time.Second))
	}
	report := h.render(machine, load, sections)
	if old, err := os.ReadFile(out); err == nil {
		report = keepAnalysis(string(old), report)
	}
	if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
		h.logf("%v", err)
		return 1
	}
	h.logf("wrote %s in %v", out, time.Since(h.started).Round(time.Second))
	failed := 0
	for _, s := range sections {
		if s.Err != "" {
			failed++
		}
	}
	if failed > 0 {
		h.logf("%d measurement(s) failed to run; see %s", failed, out)
		return 1
	}
	return 0
}

// safeRun runs a measurement; a panic or an error becomes the section's
// error rather than the end of the whole run, and every server it started
// is stopped before the next measurement.
func (h *Harness) safeRun(run func(*Harness) *Section) (sec *Section) {
	mark := h.cleanupMark()
	defer func() {
		if r := recover(); r != nil {
			sec = &Section{Err: fmt.Sprint(r)}
			if e, ok := r.(benchError); ok {
				sec.Err = e.msg
			}
			h.logf("   failed: %s", sec.Err)
		}
		h.cleanupTo(mark)
	}()
	return run(h)
}

// benchError aborts a measurement (h.fail); safeRun turns it into text.
type benchError struct{ msg string }

func (h *Harness) fail(format string, args ...any) {
	panic(benchError{fmt.Sprintf(format, args...)})
}

func (h *Harness) check(err error) {
	if err != nil {
		h.fail("%v", err)
	}
}

func (h *Harness) setup(work string, keep bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root: Postfix instances need it (qmgate drops to nobody)")
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		return fmt.Errorf("run from inside the qmgate module: %v", err)
	}
	h.repo = filepath.Dir(strings.TrimSpace(string(out)))
	if work == "" {
		work, err = os.MkdirTemp("/var/tmp", "qmgate-bench-")
		if err != nil {
			return err
		}
		if !keep {
			h.onCleanup(func() { os.RemoveAll(work) })
		}
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	// Postfix's and qmgate's unprivileged processes must reach their dirs.
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	for d := filepath.Dir(work); ; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s: its parent %s is not searchable by others (mode %v): Postfix's and qmgate's unprivileged processes could not reach their files", work, d, st.Mode().Perm())
		}
		if d == "/" || d == "." {
			break
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(work, &st); err == nil && st.Type == 0x01021994 {
		return fmt.Errorf("%s is on tmpfs: a durable queue needs a disk (use -work)", work)
	}
	h.work = work
	h.disk = blockDevice(work)
	h.logDir = filepath.Join(work, "logs")
	h.binDir = filepath.Join(work, "bin")
	for _, d := range []string{h.logDir, h.binDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if h.pprofDir != "" {
		if err := os.MkdirAll(h.pprofDir, 0o755); err != nil {
			return err
		}
	}
	raiseFileLimit()
	h.logf("work directory %s (disk %s); building", work, h.disk)
	for _, pkg := range []string{"./cmd/qmgate", "./bench/qmtp-source", "./bench/qmtp-sink", "./bench/flushrate"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(h.binDir, filepath.Base(pkg)), pkg)
		cmd.Dir = h.repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	h.qmgateBin = h.bin("qmgate")
	for _, p := range []string{"qmqp-source", "qmqp-sink", "smtp-source", "smtp-sink", "postfix"} {
		if h.peer(p) == "" {
			return fmt.Errorf("%s is not installed (bench/run installs Postfix: bash .ci/deps)", p)
		}
	}
	return nil
}

// raiseFileLimit lifts the soft descriptor limit to the hard one: the idle
// connection measurement holds thousands of sockets.
func raiseFileLimit() {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}

func fileLimit() uint64 {
	var rl syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	return rl.Cur
}

func (h *Harness) bin(name string) string { return filepath.Join(h.binDir, name) }

// peer finds a Postfix program: on PATH, or in Postfix's daemon directory.
func (h *Harness) peer(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/lib/postfix/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

func (h *Harness) logf(format string, args ...any) {
	log.Printf(format, args...)
}

func (h *Harness) vlog(format string, args ...any) {
	if h.verbose {
		log.Printf(format, args...)
	}
}

func (h *Harness) nextLog() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logN++
	return h.logN
}

func (h *Harness) onCleanup(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cleanups = append(h.cleanups, f)
}

func (h *Harness) cleanupMark() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.cleanups)
}

// cleanupTo runs, newest first, the cleanups registered since mark.
func (h *Harness) cleanupTo(mark int) {
	for {
		h.mu.Lock()
		if len(h.cleanups) <= mark {
			h.mu.Unlock()
			return
		}
		f := h.cleanups[len(h.cleanups)-1]
		h.cleanups = h.cleanups[:len(h.cleanups)-1]
		h.mu.Unlock()
		f()
	}
}

// cleanup stops everything: the run-wide servers first, then what setup
// registered (the work directory's removal last of all: "postfix stop"
// needs the instance's configuration directory).
func (h *Harness) cleanup() {
	h.mu.Lock()
	rc := h.runCleanups
	h.runCleanups = nil
	h.mu.Unlock()
	for i := len(rc) - 1; i >= 0; i-- {
		rc[i]()
	}
	h.cleanupTo(0)
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// background measures how busy the cores are while the harness runs
// nothing: other processes on a shared machine, which every figure after it
// has to live with. It waits up to idleWait for them to calm down.
func (h *Harness) background() float64 {
	d := time.Second
	if h.quick {
		d = 200 * time.Millisecond
	}
	deadline := time.Now().Add(h.idleWait)
	for {
		a := h.sample()
		time.Sleep(d)
		bg := since(a, h).CPUPercent()
		if h.quick || bg < 25 || time.Now().After(deadline) {
			return bg
		}
		h.logf("   waiting for other processes: the cores are %.0f%% busy", bg)
		time.Sleep(5 * time.Second)
	}
}

// analysisHeading starts the part of the report written by hand (where a
// message's time goes, from profiles): a run carries it over from the
// report it replaces, at the end.
const analysisHeading = "## Where the time goes"

// keepAnalysis appends old's hand-written analysis, from analysisHeading
// to the end, to report.
func keepAnalysis(old, report string) string {
	i := strings.Index(old, "\n"+analysisHeading)
	if i < 0 || strings.Contains(report, "\n"+analysisHeading) {
		return report
	}
	return strings.TrimRight(report, "\n") + "\n" + old[i:]
}
