//go:build linux

package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Section is one measurement's part of the report.
type Section struct {
	Key, Title string
	Err        string
	Took       time.Duration
	Background float64         // other processes' CPU before it ran, percent
	Body       strings.Builder // markdown
	Targets    []Target
}

func (s *Section) printf(format string, args ...any) { fmt.Fprintf(&s.Body, format, args...) }

// table writes a markdown table; rows[0] is the header.
func (s *Section) table(rows [][]string) {
	if len(rows) == 0 {
		return
	}
	line := func(r []string) { s.Body.WriteString("| " + strings.Join(r, " | ") + " |\n") }
	line(rows[0])
	sep := make([]string, len(rows[0]))
	for i := range sep {
		sep[i] = "---"
	}
	line(sep)
	for _, r := range rows[1:] {
		line(r)
	}
	s.Body.WriteString("\n")
}

// Target is one of the targets, judged on this run's figures.
type Target struct {
	Name  string
	Want  string
	Got   string
	Pass  bool
	Limit string // for a failing target: what limits it, measured
	// Shared names other failing targets that Limit explains too.
	Shared []string
}

func (s *Section) target(t Target) { s.Targets = append(s.Targets, t) }

// Check is one "nothing acknowledged was lost" comparison.
type Check struct {
	What     string
	Acked    int64 // what the source saw accepted
	Received int64 // what the far end got
	OK       bool
	Note     string
}

func (h *Harness) addCheck(c Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, c)
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "**FAIL**"
}

// rate prints a figure with fewer decimals the larger it is.
func rate(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func ratio(a, b float64) string {
	if b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func pct(a, b float64) string {
	if b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// usPer is CPU microseconds per message.
func usPer(d time.Duration, n int64) string {
	if n <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", float64(d.Microseconds())/float64(n))
}

func (h *Harness) render(m Machine, load string, sections []*Section) string {
	var b strings.Builder
	mode := "full run"
	if h.quick {
		mode = "**quick smoke run (tiny counts: these figures mean nothing)**"
	}
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `bench/run` (%s) on %s in %v. Every figure stands beside its anchor from the same run; "+
		"a ratio is qmgate's figure divided by the anchor's. Run it again with `bench/run`; see bench/harness for how each figure is taken.\n\n",
		mode, time.Now().UTC().Format("2006-01-02 15:04 MST"), time.Since(h.started).Round(time.Second))

	fmt.Fprintf(&b, "## Machine\n\n| | |\n|---|---|\n")
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "| %s | %s |\n", k, v)
		}
	}
	row("CPU", fmt.Sprintf("%s, %d cores", m.CPU, m.Cores))
	row("memory", m.MemTotal)
	row("virtualisation", m.Virt)
	row("kernel", m.Kernel)
	row("OS", m.OS)
	row("disk", m.Disk)
	row("filesystem (work directory)", "`"+m.Filesystem+"`")
	row("Go", m.Go)
	row("Postfix", m.Postfix)
	row("load average at start", load)
	fmt.Fprintf(&b, "\nEverything runs on this one machine: load generators, servers and sinks share its %d cores, "+
		"so a server's figure is also bounded by what its load generator costs. Client and server talk over loopback.\n\n", m.Cores)
	var bgMax, bgSum float64
	for _, s := range sections {
		bgMax = max(bgMax, s.Background)
		bgSum += s.Background
	}
	if len(sections) > 0 && bgMax >= 25 {
		fmt.Fprintf(&b, "> **This machine was not idle.** Before the measurements started, other processes kept the cores %.0f%% busy on average "+
			"(up to %.0f%%, of %d%%; each section says its own). Every process here competes for the same cores, so the CPU-bound figures "+
			"(ingest above all, where qmgate, the load generator and the kernel's loopback work share them) are lower than on an idle machine, "+
			"for qmgate, Postfix and the sinks alike, and vary from run to run. Run `bench/run` on an idle machine for clean figures.\n\n",
			bgSum/float64(len(sections)), bgMax, 100*m.Cores)
	}

	// Targets summary first: the reader's question.
	var all []Target
	for _, s := range sections {
		all = append(all, s.Targets...)
	}
	if len(all) > 0 {
		fmt.Fprintf(&b, "## Targets\n\n| target | wanted | this run | |\n|---|---|---|---|\n")
		for _, t := range all {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.Name, t.Want, t.Got, passFail(t.Pass))
		}
		b.WriteString("\n")
	}

	for _, s := range sections {
		fmt.Fprintf(&b, "## %s\n\n", s.Title)
		if s.Err != "" {
			fmt.Fprintf(&b, "**This measurement failed to run:** `%s`\n\n", strings.ReplaceAll(s.Err, "\n", " "))
		}
		b.WriteString(s.Body.String())
		fmt.Fprintf(&b, "_Took %v. Before it started, other processes kept the cores %.0f%% busy (of %d%%)._\n\n", s.Took.Round(time.Second), s.Background, 100*m.Cores)
		for _, t := range s.Targets {
			if !t.Pass && t.Limit != "" {
				names := "\"" + strings.Join(append([]string{t.Name}, t.Shared...), "\" and \"") + "\""
				verb := "fails"
				if len(t.Shared) > 0 {
					verb = "fail"
				}
				fmt.Fprintf(&b, "**Why %s %s here.** %s\n\n", names, verb, t.Limit)
			}
		}
	}

	if len(h.checks) > 0 {
		fmt.Fprintf(&b, "## Nothing acknowledged is lost\n\n")
		b.WriteString("After every run the harness compares what the load generator saw accepted with what reached the far end: " +
			"recipients delivered on qmgate's `discard:` route (`qmgate_deliveries_total{result=\"accept\"}`), Postfix's " +
			"`status=sent` log lines, or the sink's own count. More at the far end is allowed only after a crash (qmail's rule: duplicates, never losses).\n\n")
		b.WriteString("| run | accepted at the source | received at the far end | |\n|---|---|---|---|\n")
		for _, c := range h.checks {
			note := passFail(c.OK)
			if c.Note != "" {
				note += " " + c.Note
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %s |\n", c.What, c.Acked, c.Received, note)
		}
		b.WriteString("\n")
	}

	fmt.Fprintf(&b, "## How the servers were set up\n\n")
	fmt.Fprintf(&b, "- **qmgate**: `qmgate serve` built from this tree, one process per measurement, started as root and dropping to `nobody`, "+
		"its queue on the disk above, logging at info level to a file, with this configuration (ports vary):\n\n```toml\n%s```\n\n",
		qmgateConfig(filepath.Join(h.work, "qmgate-NAME"), &Qmgate{QMQP: "127.0.0.1:P1", QMTP: "127.0.0.1:P2", SMTP: "127.0.0.1:P3", Metrics: "127.0.0.1:P4"},
			QmgateOpts{Route: "discard:"}))
	fmt.Fprintf(&b, "- **Postfix**: private instances started with `postfix -c DIR start` from their own configuration directory: %s.\n", postfixChanged)
	fmt.Fprintf(&b, "- **Sinks**: Postfix's `qmqp-sink` and `smtp-sink` (they parse little and store nothing: they mark what the load generator can drive), "+
		"and `bench/qmtp-sink` (qmgate's QMTP server with a handler that counts and discards).\n")
	fmt.Fprintf(&b, "- **Load**: Postfix's `qmqp-source` and `smtp-source` (one message per connection unless said otherwise; both stop at the first refusal), "+
		"and `bench/qmtp-source` (pipelined sessions; counts K/Z/D and carries on after failures). Sender `%s`, recipient `%s`.\n\n", benchSender, benchRcpt)
	return b.String()
}

// relPath is target relative to dir, for links in the report.
func relPath(dir, target string) string {
	if r, err := filepath.Rel(dir, target); err == nil {
		return r
	}
	return target
}
