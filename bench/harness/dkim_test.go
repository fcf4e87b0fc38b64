//go:build linux

package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/dkim"
)

// run is a dkimRun of n messages at r messages a second, cpu µs each,
// size bytes each at the sink.
func run(n int64, r, cpu, size float64) dkimRun {
	return dkimRun{accepted: n, elapsed: time.Duration(float64(n) / r * float64(time.Second)),
		cpu: time.Duration(cpu*float64(n)) * time.Microsecond, bytes: int64(size * float64(n))}
}

func sign(r, cpu float64) signRate {
	n := int64(r) * 2
	return signRate{n: n, elapsed: 2 * time.Second, cpu: time.Duration(cpu*float64(n)) * time.Microsecond}
}

func TestDKIMReport(t *testing.T) {
	unsigned := &dkimVariant{name: "unsigned", runs: []dkimRun{run(1000, 1000, 100, 2230), run(1000, 800, 110, 2230), run(1000, 900, 90, 2230)}}
	ed := &dkimVariant{name: "Ed25519", algo: dkim.AlgoEd25519,
		runs:  []dkimRun{run(1000, 950, 125, 2510), run(1000, 760, 135, 2510), run(1000, 855, 115, 2510)},
		signs: []signRate{sign(40000, 25), sign(40000, 25), sign(40000, 25)}}
	rsa := &dkimVariant{name: "RSA-2048", algo: dkim.AlgoRSA,
		runs:  []dkimRun{run(1000, 400, 1100, 2764), run(1000, 400, 1110, 2764), run(1000, 400, 1090, 2764)},
		signs: []signRate{sign(2000, 1000), sign(2000, 1000), sign(2000, 1000)}}
	rows, targets, errs := dkimReport([]*dkimVariant{unsigned, ed, rsa})
	if len(errs) != 0 {
		t.Errorf("errs %q", errs)
	}
	if len(rows) != 4 {
		t.Fatalf("%d rows, want a header and 3", len(rows))
	}
	// Ratios are taken round by round, side by side, then the median.
	for i, want := range map[int][]string{
		1: {"unsigned", "3000", "900 (800–1000)", "100 (90–110)", "2230", "–"},
		2: {"Ed25519", "3000", "855 (760–950)", "125 (115–135)", "2510", "95% (95%–95%)", "40000", "25", "2% (2%–2%)", "1.00 (1.00–1.00)"},
		3: {"RSA-2048", "3000", "400", "1100 (1090–1110)", "2764", "44% (40%–50%)", "2000", "1000", "20% (20%–20%)", "1.00 (1.00–1.00)"},
	} {
		for j, w := range want {
			if got := rows[i][j]; !strings.HasPrefix(got, w) {
				t.Errorf("row %d column %q = %q, want %q", i, rows[0][j], got, w)
			}
		}
	}
	if len(targets) != 2 {
		t.Fatalf("targets %+v", targets)
	}
	if e := targets[0]; !e.Pass || !strings.Contains(e.Name, "Ed25519") || !strings.HasPrefix(e.Got, "5% lost, worst round 5%") {
		t.Errorf("Ed25519 target %+v", e)
	}
	if r := targets[1]; r.Pass || !strings.Contains(r.Name, "RSA") || !strings.HasPrefix(r.Got, "20%") || !strings.Contains(r.Limit, "1.00") {
		t.Errorf("RSA target %+v", r)
	}
}

// A signed variant whose messages did not grow at the sink was not signed:
// its figures must not pass for a signing hub's.
func TestDKIMReportUnsigned(t *testing.T) {
	unsigned := &dkimVariant{name: "unsigned", runs: []dkimRun{run(100, 1000, 100, 2230)}}
	ed := &dkimVariant{name: "Ed25519", algo: dkim.AlgoEd25519, runs: []dkimRun{run(100, 1000, 100, 2230)}, signs: []signRate{sign(40000, 25)}}
	_, _, errs := dkimReport([]*dkimVariant{unsigned, ed})
	if len(errs) != 1 || !strings.Contains(errs[0], "did not sign") {
		t.Errorf("errs %q", errs)
	}
}

func TestMedianSpread(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median even = %v", m)
	}
	if m := median(nil); m != 0 {
		t.Errorf("median empty = %v", m)
	}
	for _, c := range []struct {
		in   []float64
		want string
	}{{nil, "–"}, {[]float64{5}, "5.00"}, {[]float64{3, 1, 2}, "2.00 (1.00–3.00)"}} {
		if got := spread(c.in, rate); got != c.want {
			t.Errorf("spread(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestMeasureSigning(t *testing.T) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r, err := measureSigning(k, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.n <= 0 || r.rate() <= 0 || r.elapsed < 20*time.Millisecond {
		t.Errorf("signing measurement %+v", r)
	}
	pem, _, err := dkim.Keygen(dkim.AlgoRSA, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := dkim.ParseKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := measureSigning(rk, 20*time.Millisecond); err != nil || r.n <= 0 {
		t.Errorf("RSA signing measurement %+v: %v", r, err)
	}
}

// A goal is judged on the worst round: a good median over a bad round does
// not pass.
func TestDKIMReportWorstRound(t *testing.T) {
	unsigned := &dkimVariant{name: "unsigned", runs: []dkimRun{run(1000, 1000, 100, 2230), run(1000, 1000, 100, 2230), run(1000, 1000, 100, 2230)}}
	ed := &dkimVariant{name: "Ed25519", algo: dkim.AlgoEd25519,
		runs:  []dkimRun{run(1000, 1000, 110, 2510), run(1000, 980, 110, 2510), run(1000, 700, 110, 2510)},
		signs: []signRate{sign(40000, 25), sign(40000, 25), sign(40000, 25)}}
	_, targets, _ := dkimReport([]*dkimVariant{unsigned, ed})
	if len(targets) != 1 || targets[0].Pass || !strings.HasPrefix(targets[0].Got, "2% lost, worst round 30%") {
		t.Errorf("targets %+v", targets)
	}
}
