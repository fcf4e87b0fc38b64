//go:build linux

package main

import (
	"strings"
	"testing"
	"time"
)

func TestLargeReport(t *testing.T) {
	relay := func(n int64, el time.Duration) hubRelay {
		return hubRelay{load: Load{Accepted: n}, delivered: n, elapsed: el, cpuA: time.Duration(n) * time.Millisecond, cpuB: time.Duration(n) * time.Millisecond,
			usage: Usage{Elapsed: el, Busy: el, Flushes: n / 2}}
	}
	drain := func(n int64, el time.Duration) drainRun {
		return drainRun{queued: n, got: n, usage: Usage{Elapsed: el, Busy: el, Flushes: n}, cpu: time.Duration(n) * 500 * time.Microsecond}
	}
	pts := []largePoint{
		{size: 64 << 10, msgs: 4000, disk: 4000, relay: relay(4000, 2*time.Second), drain: drain(4000, time.Second)},
		{size: 256 << 10, msgs: 2000, disk: 1000, best: "log-parallel, 10 writer(s), 10 per fdatasync", relay: relay(2000, 2*time.Second), drain: drain(2000, 4*time.Second)},
		{size: 1 << 20, msgs: 512, disk: 0, relay: relay(512, time.Second), drain: drain(512, time.Second)},
	}
	rows, targets := largeReport(pts)
	if len(rows) != 4 {
		t.Fatalf("%d rows", len(rows))
	}
	want := []string{"256 KiB", "2000", "1000 (262)", "log-parallel, 10 writer(s), 10 per fdatasync", "1000 (262)", "100%", "2000 (1000 + 1000)", "500 (131)", "50%", "500"}
	for j, w := range want {
		if got := rows[2][j]; got != w {
			t.Errorf("256 KiB row, column %q = %q, want %q", rows[0][j], got, w)
		}
	}
	// No disk rate: no ratio rather than a made-up one.
	if rows[3][2] != "–" || rows[3][3] != "–" || rows[3][5] != "–" {
		t.Errorf("1 MiB row without a disk rate: %q", rows[3])
	}
	// Targets only at 256 KiB: the relay passes, the drain fails and says why.
	if len(targets) != 2 {
		t.Fatalf("targets %+v", targets)
	}
	if r := targets[0]; !r.Pass || !strings.Contains(r.Name, "hub to hub at 256 KiB") || r.Limit != "" {
		t.Errorf("relay target %+v", r)
	}
	if d := targets[1]; d.Pass || !strings.Contains(d.Name, "drain") || !strings.HasPrefix(d.Got, "50%") || !strings.Contains(d.Limit, "1.00 per message") {
		t.Errorf("drain target %+v", d)
	}
}

func TestBestFlush(t *testing.T) {
	r, mode := bestFlush([]flushResult{{Name: "file", Writers: 1, Batch: 1, PerSec: 300}, {Name: "file", Writers: 10, Batch: 1, PerSec: 1577},
		{Name: "log-parallel", Writers: 10, Batch: 10, PerSec: 1200}})
	if r != 1577 || mode != "file, 10 writer(s), 1 per fdatasync" {
		t.Errorf("bestFlush = %v, %q", r, mode)
	}
	if r, mode := bestFlush(nil); r != 0 || mode != "" {
		t.Errorf("bestFlush(nil) = %v, %q", r, mode)
	}
}
