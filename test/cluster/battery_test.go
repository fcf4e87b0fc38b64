//go:build linux

package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

// Ports every hub uses on its own address.
const (
	qmqpPort = 6280
	qmtpPort = 2090
	balPort  = 6281
	sinkQP   = 2091
	sinkSP   = 2526
)

// hub is one `qmgate serve` process, restartable on the same addresses
// and queue.
type hub struct {
	t      *testing.T
	name   string
	ip     string
	dir    string
	config string
	cmd    *exec.Cmd
	done   chan struct{}
	exit   error
	runs   int
	log    *os.File
}

func (h *hub) qmqp() string { return net.JoinHostPort(h.ip, fmt.Sprint(qmqpPort)) }
func (h *hub) qmtp() string { return net.JoinHostPort(h.ip, fmt.Sprint(qmtpPort)) }

func (h *hub) start() {
	h.t.Helper()
	h.runs++
	cmd := exec.Command(qmgateBin, "serve", "-config", h.config)
	cmd.Stdout, cmd.Stderr = h.log, h.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.cmd, h.done = cmd, make(chan struct{})
	go func() {
		h.exit = cmd.Wait()
		close(h.done)
	}()
	testpeer.WaitFor(h.t, h.name+" listening", 30*time.Second, func() bool {
		c, err := net.Dial("tcp", h.qmqp())
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// stop sends sig and waits for the process to end; it returns its exit
// status.
func (h *hub) stop(sig syscall.Signal, wait time.Duration) int {
	h.t.Helper()
	h.cmd.Process.Signal(sig)
	select {
	case <-h.done:
	case <-time.After(wait):
		h.cmd.Process.Kill()
		<-h.done
		h.t.Errorf("%s did not stop within %s of %s", h.name, wait, sig)
	}
	var ee *exec.ExitError
	if errors.As(h.exit, &ee) {
		return ee.ExitCode()
	}
	return 0
}

func (h *hub) logText() string {
	b, _ := os.ReadFile(h.log.Name())
	return string(b)
}

// sent is one message a nullclient heard accepted.
type sent struct {
	marker string
	path   string // nullclient group
	rcpts  []string
	at     time.Time
}

// event is a fault injected into the cluster.
type event struct {
	what string
	at   time.Time
}

type figures struct {
	path                              string
	acked, delivered, lost, dups, bad int
}

func TestBattery(t *testing.T) {
	dur, cycles, workers := 12*time.Second, 1, 4
	if *long {
		dur, cycles, workers = 40*time.Second, 4, 8
	}
	asRoot := os.Geteuid() == 0
	net1 := fmt.Sprintf("127.%d.%d.", 100+rand.IntN(100), 1+rand.IntN(250))
	ip := func(n int) string { return fmt.Sprintf("%s%d", net1, n) }
	work, err := os.MkdirTemp(workRoot, "battery-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(work, 0o755)

	sinkQ := newSink(t, "qmtp", net.JoinHostPort(ip(20), fmt.Sprint(sinkQP)))
	sinkS := newSink(t, "smtp", net.JoinHostPort(ip(21), fmt.Sprint(sinkSP)))

	names := []string{"hub-a", "hub-b", "hub-c"}
	hubs := make([]*hub, 3)
	nextHops := make([][2]*relayProxy, 3) // each hub's way to the sinks, to cut
	for i := range hubs {
		h := &hub{t: t, name: names[i], ip: ip(1 + i), dir: filepath.Join(work, names[i])}
		os.MkdirAll(h.dir, 0o755)
		nextHops[i] = [2]*relayProxy{
			newProxy(t, net.JoinHostPort(ip(31+i), fmt.Sprint(sinkQP)), false, sinkQ.addr),
			newProxy(t, net.JoinHostPort(ip(31+i), fmt.Sprint(sinkSP)), false, sinkS.addr),
		}
		hubs[i] = h
	}
	bal := newProxy(t, net.JoinHostPort(ip(9), fmt.Sprint(balPort)), true, hubs[0].qmqp(), hubs[1].qmqp())
	for i, h := range hubs {
		var peers []string
		for j, o := range hubs {
			if j != i {
				peers = append(peers, fmt.Sprintf("%q", "qmtp://"+o.qmtp()))
			}
		}
		user := ""
		if asRoot {
			user = `user = "nobody"`
		}
		h.config = filepath.Join(h.dir, "hub.toml")
		conf := fmt.Sprintf(`hostname = "%s.test"
%s
queue_dir = "%s/queue"
rcpthosts = ["q.test", "s.test"]
[qmqp]
listen = ["%s"]
allow = ["127.0.0.0/8"]
proxy_from = ["%s"]
[qmtp]
listen = ["%s"]
relay_clients = ["127.0.0.0/8"]
[queue]
retry_min = "1s"
retry_max = "2s"
[shutdown]
handoff = [%s]
drain_timeout = "1s"
[[route]]
domains = ["q.test"]
via = "qmtp://%s"
[[route]]
domains = ["s.test"]
via = "smtp://%s"
tls = "none"
`, h.name, user, h.dir, h.qmqp(), ip(9), h.qmtp(), strings.Join(peers, ", "),
			nextHops[i][0].addr, nextHops[i][1].addr)
		if err := os.WriteFile(h.config, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if h.log, err = os.Create(filepath.Join(h.dir, "log")); err != nil {
			t.Fatal(err)
		}
		h.start()
	}
	t.Cleanup(func() {
		for _, h := range hubs {
			select {
			case <-h.done:
			default:
				h.stop(syscall.SIGINT, 30*time.Second)
			}
		}
	})

	// The fleet: direct mode with the hubs in three orders, spool mode
	// (hub A only, then the local spool), and the balancer.
	// The spool belongs to the local daemon's user, as on an app server:
	// sendmail run as root commits into it as that user.
	spool := filepath.Join(work, "spool")
	os.MkdirAll(spool, 0o700)
	if asRoot {
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		os.Chown(spool, uid, gid)
	}
	groups := map[string]string{
		"direct A,B,C": fmt.Sprintf("qmqp_servers = [%q, %q, %q]", hubs[0].qmqp(), hubs[1].qmqp(), hubs[2].qmqp()),
		"direct C,A,B": fmt.Sprintf("qmqp_servers = [%q, %q, %q]", hubs[2].qmqp(), hubs[0].qmqp(), hubs[1].qmqp()),
		"direct B,C,A": fmt.Sprintf("qmqp_servers = [%q, %q, %q]", hubs[1].qmqp(), hubs[2].qmqp(), hubs[0].qmqp()),
		"spool (A)":    fmt.Sprintf("qmqp_servers = [%q]\nspool_dir = %q", hubs[0].qmqp(), spool),
		"balancer A/B": fmt.Sprintf("qmqp_servers = [%q]", bal.addr),
	}
	var groupNames []string
	clientConf := map[string]string{}
	for g, nc := range groups {
		groupNames = append(groupNames, g)
		f := filepath.Join(work, strings.NewReplacer(" ", "-", ",", "", "(", "", ")", "", "/", "").Replace(g)+".toml")
		if err := os.WriteFile(f, []byte("[nullclient]\n"+nc+"\ntimeout = \"20s\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		clientConf[g] = f
	}
	sort.Strings(groupNames)

	var (
		mu        sync.Mutex
		acked     []sent
		events    []event
		failures  = map[string]int{}
		whyFailed = map[string]string{}
		seq       atomic.Int64
	)
	note := func(what string) {
		mu.Lock()
		events = append(events, event{what, time.Now()})
		mu.Unlock()
		t.Logf("%s %s", time.Now().Format("15:04:05.000"), what)
	}
	ctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; ctx.Err() == nil; i += workers {
				g := groupNames[i%len(groupNames)]
				n := seq.Add(1)
				marker := fmt.Sprintf("m%d", n)
				var rcpts []string
				switch n % 3 {
				case 0:
					rcpts = []string{"u" + marker + "@q.test"}
				case 1:
					rcpts = []string{"u" + marker + "@s.test"}
				default:
					rcpts = []string{"u" + marker + "@q.test", "u" + marker + "@s.test"}
				}
				msg := fmt.Sprintf("From: app@fleet.test\nTo: %s\nSubject: cluster %s\nX-Cluster-Marker: %s\n\nbody of %s\n",
					strings.Join(rcpts, ", "), marker, marker, marker)
				cmd := exec.Command(qmgateBin, append([]string{"sendmail", "-config", clientConf[g], "-f", "app@fleet.test"}, rcpts...)...)
				cmd.Stdin = strings.NewReader(msg)
				var errb bytes.Buffer
				cmd.Stderr = &errb
				err := cmd.Run()
				mu.Lock()
				if err == nil {
					acked = append(acked, sent{marker: marker, path: g, rcpts: rcpts, at: time.Now()})
				} else {
					failures[g]++
					whyFailed[g] = strings.TrimSpace(errb.String())
				}
				mu.Unlock()
			}
		})
	}

	// The faults, in cycles under the load.
	a, b, c := hubs[0], hubs[1], hubs[2]
	step := dur / 6
	handedOff := 0
	drainExit := []int{}
	for range cycles {
		time.Sleep(step)
		note("SIGKILL " + a.name)
		a.cmd.Process.Kill()
		<-a.done
		time.Sleep(step / 2)
		a.start()
		note("restarted " + a.name)

		time.Sleep(step / 2)
		// Cut B from its next hops so its queue holds mail, then
		// SIGTERM: it drains for its drain_timeout and hands the rest to
		// A and C.
		nextHops[1][0].Cut()
		nextHops[1][1].Cut()
		note("cut " + b.name + " from its next hops")
		time.Sleep(step)
		note("SIGTERM " + b.name + " (drain and hand-off)")
		drainExit = append(drainExit, b.stop(syscall.SIGTERM, 2*time.Minute))
		nextHops[1][0].Heal()
		nextHops[1][1].Heal()
		b.start()
		note("restarted " + b.name)

		nextHops[2][0].Cut()
		nextHops[2][1].Cut()
		note("partition " + c.name + " from its next hops")
		time.Sleep(step)
		nextHops[2][0].Heal()
		nextHops[2][1].Heal()
		note("healed " + c.name)
	}
	time.Sleep(step)
	stopLoad()
	testpeer.Wait(t, "the load's last messages", 10*time.Minute, &wg)
	note("load stopped")
	movedRcpts := 0
	for _, m := range regexp.MustCompile(`msg="hand-off done" messages=[0-9]+ recipients=([0-9]+)`).FindAllStringSubmatch(b.logText(), -1) {
		handedOff++
		n, _ := strconv.Atoi(m[1])
		movedRcpts += n
	}

	// What the spool kept goes out through a local daemon, as on an app
	// server whose hub was down.
	spoolConf := filepath.Join(work, "spool.toml")
	user := ""
	if asRoot {
		user = `user = "nobody"`
	}
	os.WriteFile(spoolConf, fmt.Appendf(nil, `hostname = "app.test"
%s
queue_dir = %q
[qmqp]
listen = ["%s:%d"]
allow = ["127.0.0.0/8"]
[queue]
retry_min = "1s"
retry_max = "2s"
[[route]]
domains = ["*"]
via = "qmqp://%s,%s,%s"
`, user, spool, ip(40), qmqpPort, a.qmqp(), b.qmqp(), c.qmqp()), 0o644)
	sp := &hub{t: t, name: "spool daemon", ip: ip(40), dir: spool, config: spoolConf}
	if sp.log, err = os.Create(filepath.Join(work, "spool.log")); err != nil {
		t.Fatal(err)
	}
	sp.start()
	defer sp.stop(syscall.SIGINT, 30*time.Second)
	spooled := 0
	opened := regexp.MustCompile(`msg="queue: opened" .*messages=([0-9]+)`)
	testpeer.WaitFor(t, "the spool daemon's queue", 30*time.Second, func() bool {
		m := opened.FindStringSubmatch(sp.logText())
		if m != nil {
			spooled, _ = strconv.Atoi(m[1])
		}
		return m != nil
	})

	// Every acknowledged recipient must arrive.
	want := map[string]sent{}
	for _, s := range acked {
		for _, r := range s.rcpts {
			want[s.marker+" "+r] = s
		}
	}
	got := func() map[string][]time.Time {
		m := map[string][]time.Time{}
		for _, d := range append(sinkQ.deliveries(), sinkS.deliveries()...) {
			m[d.marker+" "+d.rcpt] = append(m[d.marker+" "+d.rcpt], d.at)
		}
		return m
	}
	testpeer.Poll(3*time.Minute, 200*time.Millisecond, func() bool {
		g := got()
		for k := range want {
			if len(g[k]) == 0 {
				return false
			}
		}
		return true
	})
	g := got()
	// The fault instants after which a duplicate may come: a SIGKILL, and
	// a cut of a hub's connections to its next hops (a connection cut
	// after the sink took the message but before the hub heard so is
	// the network's crash window, RFC 1047).
	var kills []time.Time
	for _, e := range events {
		if strings.HasPrefix(e.what, "SIGKILL") || strings.HasPrefix(e.what, "cut") || strings.HasPrefix(e.what, "partition") {
			kills = append(kills, e.at)
		}
	}
	// A duplicate is allowed when its copies straddle such an instant:
	// the first before it (or inside the moment the fault took), the
	// last after.
	straddles := func(ts []time.Time) bool {
		slices.SortFunc(ts, func(x, y time.Time) int { return x.Compare(y) })
		for _, k := range kills {
			if !ts[0].After(k.Add(2*time.Second)) && !ts[len(ts)-1].Before(k) {
				return true
			}
		}
		return false
	}
	per := map[string]*figures{}
	fig := func(p string) *figures {
		if per[p] == nil {
			per[p] = &figures{path: p}
		}
		return per[p]
	}
	for k, s := range want {
		_, domain, _ := strings.Cut(k, "@")
		f := fig(s.path + " → " + map[string]string{"q.test": "QMTP sink", "s.test": "SMTP sink"}[domain])
		f.acked++
		switch n := len(g[k]); {
		case n == 0:
			f.lost++
			t.Errorf("lost: %s (accepted on path %s at %s)", k, s.path, s.at.Format("15:04:05.000"))
		default:
			f.delivered++
			f.dups += n - 1
			if n > 1 && !straddles(g[k]) {
				f.bad++
				var when []string
				for _, at := range g[k] {
					when = append(when, at.Format("15:04:05.000"))
				}
				t.Errorf("duplicate outside a crash window: %s, copies at %v (faults at %v)", k, when, kills)
			}
		}
	}
	for k := range g {
		if _, ok := want[k]; !ok {
			// Delivered but never heard accepted: the client gave up
			// (a timeout across a kill); qmail's duplicate rule allows it.
			fig("not heard accepted").delivered++
		}
	}
	if len(sinkQ.corrupt)+len(sinkS.corrupt) > 0 {
		t.Errorf("corrupt deliveries: %q %q", sinkQ.corrupt, sinkS.corrupt)
	}
	if n := sinkQ.traceHdr + sinkS.traceHdr; n > 0 {
		t.Errorf("%d deliveries still carried the hand-off trace header", n)
	}
	for i, code := range drainExit {
		if code != 0 {
			t.Errorf("drain %d of %s exited %d:\n%s", i+1, b.name, code, tail(b.logText(), 30))
		}
	}
	if handedOff == 0 {
		t.Errorf("%s never handed off", b.name)
	}
	// The balancer's hubs saw the real client, never the balancer.
	for _, h := range []*hub{a, b} {
		if strings.Contains(h.logText(), "client="+ip(9)+" ") {
			t.Errorf("%s logged the balancer as a client", h.name)
		}
	}
	if fig("balancer A/B → QMTP sink").acked+fig("balancer A/B → SMTP sink").acked == 0 {
		t.Errorf("nothing went through the balancer")
	}

	var rows []*figures
	for _, f := range per {
		rows = append(rows, f)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].path < rows[j].path })
	var tot figures
	var table strings.Builder
	for _, f := range rows {
		tot.acked += f.acked
		tot.delivered += f.delivered
		tot.lost += f.lost
		tot.dups += f.dups
		tot.bad += f.bad
		fmt.Fprintf(&table, "| %s | %d | %d | %d | %d |\n", f.path, f.acked, f.delivered, f.lost, f.dups)
	}
	fmt.Fprintf(&table, "| **all** | %d | %d | %d | %d |\n", tot.acked, tot.delivered, tot.lost, tot.dups)
	mu.Lock()
	var fl []string
	for _, g := range groupNames {
		if failures[g] > 0 {
			fl = append(fl, fmt.Sprintf("%s %d", g, failures[g]))
		}
	}
	fails := "none"
	if len(fl) > 0 {
		fails = strings.Join(fl, ", ")
	}
	if failures["spool (A)"] > 0 {
		fails += " (spool-mode refusals are sendmail processes that found the spool locked for longer than relay.SpoolLockWait)"
	}
	for g, why := range whyFailed {
		t.Logf("last refusal on path %s: %s", g, why)
	}
	mu.Unlock()
	t.Logf("per path (acknowledged, delivered, lost, duplicates):\n%s", table.String())
	t.Logf("nullclient attempts not accepted (temporary failures they reported): %s; messages spooled while their hub was down: %d; hand-offs by %s: %d (%d recipients moved), drain exit statuses %v",
		fails, spooled, b.name, handedOff, movedRcpts, drainExit)
	if *long && !t.Failed() {
		writeSection(t, cycles, workers, dur, table.String(), fails, handedOff, movedRcpts, spooled)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
