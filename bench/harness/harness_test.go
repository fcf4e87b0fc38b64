//go:build linux

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/testpeer"
)

// TestQuick runs every measurement with tiny counts, so the harness itself
// never rots: it must start every server, drive every load generator, draw
// the plot and write a report whose every run delivered what it
// acknowledged. The figures of a quick run mean nothing and are not judged.
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Postfix and qmgate instances")
	}
	testpeer.NeedRoot(t, "Postfix instances start as root")
	for _, p := range []string{"postfix", "qmqp-source", "qmqp-sink", "smtp-source", "smtp-sink"} {
		testpeer.Need(t, p)
	}
	dir := t.TempDir()
	// Not t.TempDir for the servers: its parent is mode 0700, which
	// Postfix's and qmgate's unprivileged processes could not traverse.
	work, err := os.MkdirTemp("/var/tmp", "qmgate-bench-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	out := filepath.Join(dir, "BENCHMARKS.md")
	plot := filepath.Join(dir, "scaling.png")
	h := &Harness{quick: true, sizes: quickSizes, started: time.Now()}
	if code := h.main(out, work, "", false, plot); code != 0 {
		b, _ := os.ReadFile(out)
		t.Fatalf("harness exited %d; report:\n%s", code, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	report := string(b)
	for _, s := range scenarios {
		if !strings.Contains(report, "## "+s.title) {
			t.Errorf("report lacks section %q", s.title)
		}
	}
	if strings.Contains(report, "failed to run") {
		t.Errorf("a measurement failed:\n%s", report)
	}
	// Every acknowledged message reached the far end, in every run.
	_, checks, ok := strings.Cut(report, "## Nothing acknowledged is lost")
	if !ok {
		t.Fatalf("report lacks the durability table:\n%s", report)
	}
	checks, _, _ = strings.Cut(checks, "\n## ")
	if strings.Contains(checks, "FAIL") {
		t.Errorf("an acknowledged message went missing:\n%s", checks)
	}
	if _, err := exec.LookPath("gnuplot"); err == nil {
		if st, err := os.Stat(plot); err != nil || st.Size() == 0 {
			t.Errorf("no plot at %s: %v", plot, err)
		}
	} else if testpeer.CI() {
		t.Log("gnuplot is not installed: the plot was not drawn (bench/run installs it)")
	}
}

func TestLastCounter(t *testing.T) {
	for in, want := range map[string]int64{
		"1\r2\r3\r":            3,
		"1\r2\r3\r4\r5\r\n":    5,
		"":                     0,
		"1\r2\rqmqp-source: x": 2,
	} {
		if got := lastCounter(in); got != want {
			t.Errorf("lastCounter(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestSmtpSinkCounter(t *testing.T) {
	tail := "sess=1002 quit=1002 mesg=1997\rsess=1003 quit=1003 mesg=2000\r"
	m := sinkCounter.FindAllStringSubmatch(tail, -1)
	if len(m) != 2 || m[1][1] != "2000" {
		t.Fatalf("matches %q", m)
	}
}

func TestParseSeqs(t *testing.T) {
	got := parseSeqs("1\n2\n\n10\nx\n")
	if len(got) != 3 || !got[1] || !got[2] || !got[10] {
		t.Fatalf("parseSeqs = %v", got)
	}
}

func TestQmgateConfigParses(t *testing.T) {
	q := &Qmgate{QMQP: "127.0.0.1:1", QMTP: "127.0.0.1:2", SMTP: "127.0.0.1:3", Metrics: "127.0.0.1:4"}
	for _, o := range []QmgateOpts{{Route: "discard:"}, {Route: "smtp://127.0.0.1:5", RouteTLS: "none", MaxMessageBytes: 3 << 30},
		{Route: "qmtp://127.0.0.1:5", DKIM: []DKIMKey{{Domain: dkimDomain, Selector: "bench-ed25519", KeyFile: "/nonexistent/ed25519.key", Algorithm: "ed25519"}}}} {
		text := qmgateConfig(t.TempDir(), q, o)
		if err := parseConfig(text); err != nil {
			t.Errorf("%v\n%s", err, text)
		}
	}
}

func parseConfig(text string) error {
	_, err := config.Parse("bench.toml", []byte(text))
	return err
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
BenchmarkPut/journal/writers=64-2   	  100000	     34512 ns/op	     28975 msgs/s	        18.10 p99-ms	         1.60 flush-ms
BenchmarkNextSmall-2   	 1000000	      1043 ns/op	 981.51 MB/s	        10.43 ns/netstring
BenchmarkBroken-2   	 notanumber
PASS
`
	res := parseGoBench(out)
	if len(res) != 2 {
		t.Fatalf("parsed %d results, want 2: %+v", len(res), res)
	}
	if r := res[0]; r.Name != "Put/journal/writers=64" || r.N != 100000 || r.Metrics["msgs/s"] != 28975 || r.Metrics["flush-ms"] != 1.6 {
		t.Fatalf("first result %+v", r)
	}
	if r := res[1]; r.Name != "NextSmall" || r.Metrics["MB/s"] != 981.51 || len(r.Units) != 3 || r.Units[2] != "ns/netstring" {
		t.Fatalf("second result %+v", r)
	}
}

func TestKeepAnalysis(t *testing.T) {
	old := "# Benchmarks\n\nold figures\n\n" + analysisHeading + "\n\nnotes\n"
	got := keepAnalysis(old, "# Benchmarks\n\nnew figures\n")
	if want := "# Benchmarks\n\nnew figures\n\n" + analysisHeading + "\n\nnotes\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := keepAnalysis("# Benchmarks\n", "new\n"); got != "new\n" {
		t.Errorf("without an analysis: %q", got)
	}
}
