//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

// QmgateOpts configures one `qmgate serve` instance.
type QmgateOpts struct {
	// Route is the one route's via ("discard:", "qmtp://127.0.0.1:P", ...).
	Route string
	// RouteTLS is the route's tls setting (smtp:// routes).
	RouteTLS string
	// MaxMessageBytes overrides the 50 MiB default.
	MaxMessageBytes int64
	// DKIM are [[dkim]] signing keys.
	DKIM []DKIMKey
}

// DKIMKey is one [[dkim]] table.
type DKIMKey struct {
	Domain, Selector, KeyFile, Algorithm string
}

// Qmgate is a running `qmgate serve` with a generated configuration: every
// listener on a free loopback port, every domain on one route, the queue
// on the work directory's disk, metrics on.
type Qmgate struct {
	Name, Dir, Config         string
	QMQP, QMTP, SMTP, Metrics string
	Pprof                     string // loopback pprof address, when profiling
	Proc                      *Proc
	h                         *Harness
	opts                      QmgateOpts
	startCPU                  time.Duration
}

// qmgateConfig is the generated configuration; BENCHMARKS.md quotes it.
func qmgateConfig(dir string, q *Qmgate, o QmgateOpts) string {
	var b strings.Builder
	fmt.Fprintf(&b, `hostname = "qmgate.bench.test"
user = "nobody"
queue_dir = %q
rcpthosts = ["example.com", "bench.test", ".bench.test"]
`, filepath.Join(dir, "queue"))
	if o.MaxMessageBytes > 0 {
		fmt.Fprintf(&b, "max_message_bytes = %d\n", o.MaxMessageBytes)
	}
	fmt.Fprintf(&b, `
[limits]
# Postfix exempts $mynetworks from its per-client limits; so does this.
max_conns = 20000
max_conns_per_ip = 20000

[qmqp]
listen = [%q]
allow = ["127.0.0.0/8"]

[qmtp]
listen = [%q]
relay_clients = ["127.0.0.0/8"]

[smtp]
listen = [%q]
relay_clients = ["127.0.0.0/8"]

[metrics]
listen = %q

[[route]]
domains = ["*"]
via = %q
`, q.QMQP, q.QMTP, q.SMTP, q.Metrics, o.Route)
	if o.RouteTLS != "" {
		fmt.Fprintf(&b, "tls = %q\n", o.RouteTLS)
	}
	for _, k := range o.DKIM {
		fmt.Fprintf(&b, "\n[[dkim]]\ndomain = %q\nselector = %q\nkey_file = %q\nalgorithm = %q\n", k.Domain, k.Selector, k.KeyFile, k.Algorithm)
	}
	return b.String()
}

// startQmgate starts a fresh instance (a new, empty queue).
func (h *Harness) startQmgate(name string, o QmgateOpts) (*Qmgate, error) {
	dir := filepath.Join(h.work, "qmgate-"+name)
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	q := &Qmgate{Name: name, Dir: dir, Config: filepath.Join(dir, "qmgate.toml"), h: h, opts: o,
		QMQP: freePort(), QMTP: freePort(), SMTP: freePort(), Metrics: freePort()}
	if err := os.WriteFile(q.Config, []byte(qmgateConfig(dir, q, o)), 0o644); err != nil {
		return nil, err
	}
	return q, q.start()
}

// start runs the daemon on the instance's configuration and queue (again,
// after Kill or Stop).
func (q *Qmgate) start() error {
	var env []string
	if q.h.pprofDir != "" {
		q.Pprof = freePort()
		env = append(env, "QMGATE_PPROF="+q.Pprof)
	}
	p, err := q.h.startProc("qmgate-"+q.Name, env, q.h.qmgateBin, "serve", "-config", q.Config)
	if err != nil {
		return err
	}
	q.Proc = p
	ok := testpeer.Poll(time.Minute, 20*time.Millisecond, func() bool {
		if p.Exited() {
			return true
		}
		r, err := http.Get("http://" + q.Metrics + "/healthz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	})
	if !ok || p.Exited() {
		return fmt.Errorf("qmgate serve did not start:\n%s", p.Tail(3000))
	}
	for _, a := range []string{q.QMQP, q.QMTP, q.SMTP} {
		if err := waitListening(a, time.Minute); err != nil {
			return err
		}
	}
	q.startCPU = processCPU(p.Pid())
	return nil
}

// Restart starts the daemon again on the same queue after it stopped.
func (q *Qmgate) Restart() error { return q.start() }

// Stop stops the daemon with SIGTERM.
func (q *Qmgate) Stop() { q.Proc.Stop() }

// CPU is the daemon's CPU time so far.
func (q *Qmgate) CPU() time.Duration { return processCPU(q.Proc.Pid()) }

// Memory is the daemon's resident set now and at its peak.
func (q *Qmgate) Memory() Memory {
	m, _ := readMemory(q.Proc.Pid())
	return m
}

// scrape reads the daemon's Prometheus samples, calling f with each
// sample's name (labels included) and value.
func (q *Qmgate) scrape(f func(name string, v float64)) error {
	c := http.Client{Timeout: 10 * time.Second}
	r, err := c.Get("http://" + q.Metrics + "/metrics")
	if err != nil {
		return err
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, rest, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
			f(name, v)
		}
	}
	return sc.Err()
}

// Counters reads the daemon's Prometheus counters: messages accepted (all
// protocols), recipients delivered (result="accept", all routes), messages
// in the queue.
func (q *Qmgate) Counters() (accepted, delivered, queued int64, err error) {
	err = q.scrape(func(name string, v float64) {
		switch {
		case strings.HasPrefix(name, "qmgate_messages_accepted_total"):
			accepted += int64(v)
		case strings.HasPrefix(name, "qmgate_deliveries_total") && strings.Contains(name, `result="accept"`):
			delivered += int64(v)
		case name == "qmgate_queue_messages":
			queued = int64(v)
		}
	})
	return accepted, delivered, queued, err
}

// Delivered is the count of recipients delivered so far, or -1 when the
// daemon cannot be asked.
func (q *Qmgate) Delivered() int64 {
	_, d, _, err := q.Counters()
	if err != nil {
		return -1
	}
	return d
}

// Flush makes every queued message due now (`qmgate queue flush`).
func (q *Qmgate) Flush() error {
	r, err := q.h.runTool(time.Minute, q.h.qmgateBin, "queue", "flush", "-config", q.Config)
	if err == nil && r.Exit != 0 {
		err = fmt.Errorf("qmgate queue flush: exit %d: %s%s", r.Exit, r.Stdout, r.Stderr)
	}
	return err
}

// Profile captures a CPU profile of the daemon for d into the pprof
// directory, in the background; the returned channel closes when done.
func (q *Qmgate) Profile(label string, d time.Duration) <-chan struct{} {
	done := make(chan struct{})
	if q.Pprof == "" {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		c := http.Client{Timeout: d + 30*time.Second}
		r, err := c.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", q.Pprof, int(d.Seconds()+0.5)))
		if err != nil {
			q.h.logf("pprof %s: %v", label, err)
			return
		}
		defer r.Body.Close()
		f, err := os.Create(filepath.Join(q.h.pprofDir, label+".pprof"))
		if err != nil {
			return
		}
		io.Copy(f, r.Body)
		f.Close()
	}()
	return done
}

// gauge reads one labelled sample, name{proto="P"}, or -1.
func (q *Qmgate) gauge(name, proto string) int64 {
	c := http.Client{Timeout: 10 * time.Second}
	r, err := c.Get("http://" + q.Metrics + "/metrics")
	if err != nil {
		return -1
	}
	defer r.Body.Close()
	want := name + `{proto="` + proto + `"} `
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int64(f)
			}
		}
	}
	return -1
}
