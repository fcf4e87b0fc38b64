//go:build linux

package reliability

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

// Every test's servers listen on loopback addresses of their own
// (127.B.N.x, B random per run, N per test), so that ports a killed daemon
// releases are never taken by other tests' outgoing connections, which use
// 127.0.0.1 as their source.
var (
	ipBase = 100 + rand.IntN(100)
	ipNext atomic.Int32
)

// netHost is one test's loopback network: 127.B.N.0/24.
type netHost struct {
	prefix string // "127.B.N."
	next   atomic.Int32
}

func newNetHost(t *testing.T) *netHost {
	n := ipNext.Add(1)
	if n > 250 {
		t.Fatal("out of loopback networks")
	}
	h := &netHost{prefix: fmt.Sprintf("127.%d.%d.", ipBase, n)}
	h.next.Store(1)
	return h
}

// ip returns the network's address .x.
func (h *netHost) ip(x int) string { return h.prefix + strconv.Itoa(x) }

// addr returns a free TCP address on the network's first address for a
// daemon or peer to bind, reserved until the test ends (testpeer.Reserve):
// nothing else, not even the test's own listeners on port 0
// (sink.listenPerRun), can be given the port before its server binds it.
func (h *netHost) addr(t *testing.T) string {
	t.Helper()
	a, release, err := testpeer.Reserve(h.ip(1), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return a
}

// daemon is one `qmgate serve` process, restartable on the same
// configuration, queue and ports.
type daemon struct {
	t       *testing.T
	dir     string // work directory, traversable by the daemon's user
	cfgPath string
	logPath string
	metrics string // host:port of /metrics and /healthz
	pprof   string // host:port of the daemon's QMGATE_PPROF hook
	toml    string // the configuration; "{{DIR}}" is dir, "{{RUN}}" the run number
	// vars, when set, gives more substitutions for a run.
	vars func(run int) map[string]string
	// wrap, when set, is a command that runs the daemon (prlimit ...).
	wrap []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
	runs    int
	history []runInfo
}

// runInfo is one run of the daemon.
type runInfo struct {
	PID     int
	Started time.Time
	Killed  time.Time // zero unless it ended by SIGKILL
}

// newDaemon prepares a daemon from a TOML document. It adds queue_dir
// ({{DIR}}/queue) unless the document sets it, a metrics listener, and when
// the tests run as root `user = "nobody"`, so every start drops privileges
// as a production start would.
func newDaemon(t *testing.T, h *netHost, doc string) *daemon {
	t.Helper()
	dir, err := os.MkdirTemp(workRoot, strings.NewReplacer("/", "-").Replace(t.Name())+"-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	d := &daemon{t: t, dir: dir, cfgPath: filepath.Join(dir, "qmgate.toml"), logPath: filepath.Join(dir, "daemon.log")}
	d.metrics = h.addr(t)
	d.pprof = h.addr(t)
	head := ""
	if os.Geteuid() == 0 {
		head += "user = \"nobody\"\n"
	}
	if !strings.Contains(doc, "queue_dir") {
		head += "queue_dir = \"{{DIR}}/queue\"\n"
	}
	d.toml = head + doc + fmt.Sprintf("\n[metrics]\nlisten = %q\n", d.metrics)
	t.Cleanup(func() {
		if d.running() {
			d.kill()
		}
		if t.Failed() {
			t.Logf("daemon log (last lines):\n%s", d.logTail(80))
		}
	})
	return d
}

func (d *daemon) writeConfig() {
	d.t.Helper()
	doc := strings.NewReplacer("{{DIR}}", d.dir, "{{RUN}}", strconv.Itoa(d.runs)).Replace(d.toml)
	if d.vars != nil {
		for k, v := range d.vars(d.runs) {
			doc = strings.ReplaceAll(doc, "{{"+k+"}}", v)
		}
	}
	if err := os.WriteFile(d.cfgPath, []byte(doc), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

// start runs the daemon and waits until it serves (its /healthz answers,
// which happens after the queue is open).
func (d *daemon) start() {
	d.t.Helper()
	if err := d.startNoWait(); err != nil {
		d.t.Fatal(err)
	}
	d.waitReady()
}

func (d *daemon) startNoWait() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		return fmt.Errorf("daemon already running")
	}
	d.runs++
	d.writeConfig()
	logf, err := os.OpenFile(d.logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== run %d at %s\n", d.runs, time.Now().Format(time.RFC3339Nano))
	args := append(append([]string(nil), d.wrap...), qmgateBin, "serve", "-config", d.cfgPath)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = d.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(cleanEnv(), "QMGATE_PPROF="+d.pprof)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	logf.Close()
	done := make(chan struct{})
	d.cmd, d.done = cmd, done
	d.history = append(d.history, runInfo{PID: cmd.Process.Pid, Started: time.Now()})
	go func() {
		err := cmd.Wait()
		d.mu.Lock()
		d.exitErr = err
		d.mu.Unlock()
		close(done)
	}()
	return nil
}

func cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "QMGATE_CONFIG=") {
			env = append(env, e)
		}
	}
	return env
}

// waitReady waits for /healthz, failing the test if the process exits.
func (d *daemon) waitReady() {
	d.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		d.mu.Lock()
		done := d.done
		d.mu.Unlock()
		select {
		case <-done:
			d.t.Fatalf("qmgate serve exited during start-up: %v\n%s", d.exitErr, d.logTail(30))
		default:
		}
		resp, err := c.Get("http://" + d.metrics + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("qmgate serve not ready after a minute: %v\n%s", err, d.logTail(30))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (d *daemon) running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// alive reports whether the process started last is still running (it
// must not have died on its own).
func (d *daemon) alive() bool { return d.running() }

func (d *daemon) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// kill sends SIGKILL and waits for the process to be gone.
func (d *daemon) kill() {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
	d.mu.Lock()
	d.cmd = nil
	for i := range d.history {
		if d.history[i].PID == cmd.Process.Pid && d.history[i].Killed.IsZero() {
			d.history[i].Killed = time.Now()
		}
	}
	d.mu.Unlock()
}

// run returns what is known of the run with process id pid.
func (d *daemon) run(pid int) (runInfo, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := len(d.history) - 1; i >= 0; i-- {
		if d.history[i].PID == pid {
			return d.history[i], true
		}
	}
	return runInfo{}, false
}

// stop sends SIGTERM and expects a clean exit within the daemon's grace.
func (d *daemon) stop() {
	d.t.Helper()
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		d.kill()
		d.t.Fatal("qmgate serve did not stop within a minute of SIGTERM")
	}
	d.mu.Lock()
	err := d.exitErr
	d.cmd = nil
	d.mu.Unlock()
	if err != nil {
		d.t.Errorf("qmgate serve exited with %v after SIGTERM", err)
	}
}

func (d *daemon) log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

func (d *daemon) logTail(n int) string {
	lines := strings.Split(strings.TrimRight(d.log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// metric reads one unlabelled (or first labelled) sample from /metrics.
func (d *daemon) metric(name string) (float64, bool) {
	all := d.metricsText()
	sc := bufio.NewScanner(strings.NewReader(all))
	sum, found := 0.0, false
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}

func (d *daemon) metricsText() string {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// goroutineDump returns the daemon's goroutines, grouped by stack.
func (d *daemon) goroutineDump() string {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + d.pprof + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// goroutines is the daemon's goroutine count (go_goroutines).
func (d *daemon) goroutines() int {
	v, _ := d.metric("go_goroutines")
	return int(v)
}

// queued is the daemon's queue gauge (refreshed by the daemon once a
// second).
func (d *daemon) queued() int {
	v, ok := d.metric("qmgate_queue_messages")
	if !ok {
		return -1
	}
	return int(v)
}

// procStatus reads a kB field (VmRSS, VmHWM) of the daemon's
// /proc/PID/status, in bytes.
func (d *daemon) procStatus(field string) int64 {
	pid := d.pid()
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

// uids returns the Uid line of /proc/PID/status: real, effective, saved, fs.
func (d *daemon) uids() []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.pid()))
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			return strings.Fields(v)
		}
	}
	return nil
}

// openFDs counts the daemon's open descriptors.
func (d *daemon) openFDs() int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.pid()))
	return len(ents)
}

// sample watches the daemon's descriptors and RSS until the returned
// function is called, which reports the peaks.
func (d *daemon) sample() func() (fds int, rss int64) {
	stop := make(chan struct{})
	done := make(chan struct{})
	var fds int
	var rss int64
	go func() {
		defer close(done)
		for {
			fds = max(fds, d.openFDs())
			rss = max(rss, d.procStatus("VmRSS"))
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() (int, int64) {
		close(stop)
		<-done
		return fds, rss
	}
}

// waitQueueEmpty waits until the daemon's queue holds nothing.
func (d *daemon) waitQueueEmpty(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if d.queued() == 0 {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// logCount counts log lines containing s.
func (d *daemon) logCount(s string) int {
	return bytes.Count([]byte(d.log()), []byte(s))
}

// grepLog returns up to n log lines containing s.
func grepLog(log, s string, n int) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
			if len(out) == n {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
