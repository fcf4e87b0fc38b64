//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

// curvePoint is one x value of a curve: a rate per server.
type curvePoint struct {
	x     int
	n     int
	rates [3]float64 // qmgate, Postfix qmqpd, qmqp-sink
	// disk is the disk's best durable rate at this size (size curve
	// only): bench/flushrate's parallel writers into one preallocated
	// log, 10 writers, one fdatasync per 10 messages. 0: not measured.
	disk float64
	errs []string
}

var curveNames = [3]string{"qmgate serve", "Postfix qmqpd", "qmqp-sink (generator's ceiling)"}

func (h *Harness) scale() *Section {
	s := &Section{}
	z := h.sizes
	s.printf("QMQP ingest (`qmqp-source`, one message per connection) against `qmgate serve`, Postfix's `qmqpd` and `qmqp-sink`: "+
		"first against message size at 10 sessions, then against the number of sessions at %d bytes. Each point sends "+
		"min(%d, %d MiB ÷ size) messages (for the session curve, at least 1000 or 200 per session); each waits until the previous point's mail has left the queue.\n\n",
		z.Size, z.ScaleMsgs, z.ScaleBytes>>20)
	q, err := h.startQmgate("scale", QmgateOpts{Route: "discard:"})
	h.check(err)
	pf := h.discardPostfix()
	sink, err := h.startQMQPSink(freePort())
	h.check(err)

	point := func(sessions, size, n int) curvePoint {
		p := curvePoint{n: n}
		for i, sv := range []struct {
			name, addr string
			delivered  func() int64 // nil: the sink, which counts nothing we read
			wait       time.Duration
		}{{"qmgate", q.QMQP, q.Delivered, 5 * time.Minute}, {"Postfix qmqpd", pf.QMQPAddr, pf.Delivered, 10 * time.Minute}, {addr: sink.Addr}} {
			var deliveredBefore int64
			if sv.delivered != nil {
				deliveredBefore = sv.delivered()
			}
			l, err := h.qmqpSource(sv.addr, sessions, n, size)
			if err != nil || !l.OK() {
				p.errs = append(p.errs, fmt.Sprintf("%s at %d sessions, %d bytes: %d of %d accepted %v %s", curveNames[i], sessions, size, l.Accepted, n, err, l.Output))
			}
			p.rates[i] = l.Rate()
			if sv.delivered != nil {
				h.awaitDelivered(fmt.Sprintf("scale: %s, %d sessions, %d bytes", sv.name, sessions, size), l.Accepted,
					func() int64 { return sv.delivered() - deliveredBefore }, sv.wait)
			}
			if i == 1 { // Postfix's queue empties before the next run
				testpeer.Poll(2*time.Minute, 100*time.Millisecond, func() bool { return pf.QueueCount() == 0 })
			}
		}
		h.logf("   sessions=%-3d size=%-8d n=%-5d qmgate %7.0f  Postfix %7.0f  sink %7.0f msg/s", sessions, size, n, p.rates[0], p.rates[1], p.rates[2])
		return p
	}

	var bySize, bySessions []curvePoint
	for _, size := range z.ScaleSizes {
		n := max(min(z.ScaleMsgs, z.ScaleBytes/size), 50)
		p := point(10, size, n)
		p.x = size
		p.disk = h.diskRate(size)
		bySize = append(bySize, p)
	}
	for _, sessions := range z.ScaleSessions {
		n := min(z.ScaleMsgs, max(1000, 200*sessions))
		if h.quick {
			n = z.ScaleMsgs
		}
		p := point(sessions, z.Size, n)
		p.x = sessions
		bySessions = append(bySessions, p)
	}

	table := func(xname string, pts []curvePoint, xfmt func(int) string) {
		bySizes := xname == "size"
		head := []string{xname, "messages", "qmgate msg/s", "Postfix qmqpd msg/s", "qmqp-sink msg/s", "qmgate / Postfix", "qmgate / sink", "qmgate MB/s"}
		if bySizes {
			head = append(head, "disk msg/s", "qmgate / disk")
		}
		rows := [][]string{head}
		for _, p := range pts {
			size := z.Size
			if bySizes {
				size = p.x
			}
			row := []string{xfmt(p.x), fmt.Sprint(p.n), rate(p.rates[0]), rate(p.rates[1]), rate(p.rates[2]),
				ratio(p.rates[0], p.rates[1]), pct(p.rates[0], p.rates[2]), fmt.Sprintf("%.1f", p.rates[0]*float64(size)/1e6)}
			if bySizes {
				if p.disk > 0 {
					row = append(row, rate(p.disk), pct(p.rates[0], p.disk))
				} else {
					row = append(row, "-", "-")
				}
			}
			rows = append(rows, row)
		}
		s.table(rows)
		for _, p := range pts {
			for _, e := range p.errs {
				s.printf("- %s\n", e)
			}
		}
	}
	s.printf("Against message size, 10 sessions. The disk column is bench/flushrate's best durable rate at that size, measured just after the point: " +
		"10 writers placing their messages into one preallocated log, one fdatasync per 10 messages.\n\n")
	table("size", bySize, sizeLabel)
	s.printf("Against sessions, %d bytes:\n\n", z.Size)
	table("sessions", bySessions, func(x int) string { return fmt.Sprint(x) })

	if err := h.plot(bySize, bySessions); err != nil {
		s.printf("The plot was not drawn: %v\n\n", err)
	} else {
		rel := relPath(h.reportDir, h.plotPath)
		s.printf("![QMQP ingest against message size and sessions](%s)\n\n", rel)
	}
	return s
}

func sizeLabel(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// plot draws both curves side by side with gnuplot.
func (h *Harness) plot(bySize, bySessions []curvePoint) error {
	gp, err := exec.LookPath("gnuplot")
	if err != nil {
		return fmt.Errorf("gnuplot is not installed (bench/run installs gnuplot-nox)")
	}
	dir := filepath.Join(h.work, "plot")
	os.MkdirAll(dir, 0o755)
	write := func(name string, pts []curvePoint, xscale float64) (string, error) {
		var b strings.Builder
		for _, p := range pts {
			disk := "NaN" // gnuplot leaves the point out
			if p.disk > 0 {
				disk = fmt.Sprintf("%g", p.disk)
			}
			fmt.Fprintf(&b, "%g %g %g %g %s\n", float64(p.x)/xscale, p.rates[0], p.rates[1], p.rates[2], disk)
		}
		path := filepath.Join(dir, name)
		return path, os.WriteFile(path, []byte(b.String()), 0o644)
	}
	sizeDat, err := write("size.dat", bySize, 1024)
	if err != nil {
		return err
	}
	sessDat, err := write("sessions.dat", bySessions, 1)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(h.plotPath), 0o755); err != nil {
		return err
	}
	title := "QMQP ingest on this machine (qmqp-source, one message per connection, durable before K)"
	if h.quick {
		title = "QUICK SMOKE RUN, figures meaningless: " + title
	}
	script := fmt.Sprintf(`set terminal pngcairo size 1200,520 font "sans,11"
set output %q
set multiplot layout 1,2 title %q
set logscale xy
set grid xtics ytics mytics
set key below
set autoscale xfix
set offsets graph 0.03, graph 0.03, 0, 0
set ylabel "messages per second"
set format y "%%.0f"
set xlabel "message size (KiB), 10 sessions"
plot %q using 1:2:xtic(1) with linespoints lw 2 pt 7 title %q, \
     %q using 1:3 with linespoints lw 2 pt 5 title %q, \
     %q using 1:4 with linespoints lw 2 dt 2 pt 9 title %q, \
     %q using 1:5 with linespoints lw 2 dt 3 pt 3 title %q
set xlabel "sessions, %d-byte messages"
plot %q using 1:2:xtic(1) with linespoints lw 2 pt 7 title %q, \
     %q using 1:3 with linespoints lw 2 pt 5 title %q, \
     %q using 1:4 with linespoints lw 2 dt 2 pt 9 title %q
unset multiplot
`, h.plotPath, title,
		sizeDat, curveNames[0], sizeDat, curveNames[1], sizeDat, curveNames[2],
		sizeDat, "the disk (bench/flushrate, parallel writers into one log)",
		h.sizes.Size,
		sessDat, curveNames[0], sessDat, curveNames[1], sessDat, curveNames[2])
	scriptPath := filepath.Join(dir, "scaling.gp")
	if err := os.WriteFile(scriptPath, []byte(script), 0o644); err != nil {
		return err
	}
	out, err := exec.Command(gp, scriptPath).CombinedOutput()
	if err != nil {
		// pngcairo is in gnuplot-nox; the plain png terminal is a fallback.
		script = strings.Replace(script, `pngcairo size 1200,520 font "sans,11"`, "png size 1200,520", 1)
		os.WriteFile(scriptPath, []byte(script), 0o644)
		if out2, err2 := exec.Command(gp, scriptPath).CombinedOutput(); err2 != nil {
			return fmt.Errorf("gnuplot: %v %s %s", err2, out, out2)
		}
	}
	return nil
}

// diskRate is the disk's best durable rate for messages of size bytes
// (bench/flushrate's parallel preallocated log), or 0 when it cannot be
// measured; the reason goes to the log.
func (h *Harness) diskRate(size int) float64 {
	r, res, err := h.runFlushrate(2*time.Minute, size, "-writers", "10", "-batch", "10", "-modes", "parallel")
	if err != nil || len(res) != 1 {
		h.logf("   flushrate at %d bytes: %v %s", size, err, r.Stderr)
		return 0
	}
	return res[0].PerSec
}
