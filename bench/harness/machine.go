//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Machine describes where the figures were taken.
type Machine struct {
	CPU        string
	Cores      int
	MemTotal   string
	Kernel     string
	OS         string
	Go         string
	Postfix    string
	WorkDir    string
	Filesystem string // type and mount options of WorkDir's filesystem
	Disk       string // the block device under it
	Virt       string
}

func describeMachine(workDir string) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), WorkDir: workDir}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(v)
				if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					m.MemTotal = fmt.Sprintf("%.1f GiB", float64(n)/(1<<20))
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	if out, err := exec.Command("postconf", "-d", "-h", "mail_version").Output(); err == nil {
		m.Postfix = "Postfix " + strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("systemd-detect-virt").Output(); err == nil {
		m.Virt = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "--target", workDir).Output(); err == nil {
		m.Filesystem = strings.TrimSpace(string(out))
	}
	if dev := blockDevice(workDir); dev != "" {
		m.Disk = dev
		base := "/sys/block/" + dev
		var parts []string
		if b, err := os.ReadFile(base + "/size"); err == nil {
			if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
				parts = append(parts, fmt.Sprintf("%.0f GiB", float64(n*512)/(1<<30)))
			}
		}
		if b, err := os.ReadFile(base + "/queue/rotational"); err == nil {
			if strings.TrimSpace(string(b)) == "1" {
				parts = append(parts, "rotational (as the kernel reports it)")
			} else {
				parts = append(parts, "non-rotational")
			}
		}
		if b, err := os.ReadFile(base + "/queue/write_cache"); err == nil {
			parts = append(parts, "write cache: "+strings.TrimSpace(string(b)))
		}
		if strings.HasPrefix(dev, "vd") {
			parts = append(parts, "virtio block device")
		}
		if len(parts) > 0 {
			m.Disk += " (" + strings.Join(parts, ", ") + ")"
		}
	}
	return m
}

// blockDevice names the whole disk (as in /sys/block) under path's
// filesystem, or "".
func blockDevice(path string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return ""
	}
	major, minor := (st.Dev>>8)&0xfff, (st.Dev&0xff)|((st.Dev>>12)&0xfff00)
	link, err := filepath.EvalSymlinks(fmt.Sprintf("/sys/dev/block/%d:%d", major, minor))
	if err != nil {
		return ""
	}
	if _, err := os.Stat(filepath.Join(link, "partition")); err == nil {
		link = filepath.Dir(link)
	}
	return filepath.Base(link)
}

// SysSample is a snapshot of machine-wide counters.
type SysSample struct {
	At      time.Time
	Busy    time.Duration // all CPUs, not idle and not iowait
	IOWait  time.Duration
	Flushes int64 // cache flushes completed by the disk (fsync/fdatasync reach it as these)
	Writes  int64 // write requests completed
}

func (h *Harness) sample() SysSample {
	s := SysSample{At: time.Now()}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		if len(f) >= 9 && f[0] == "cpu" {
			var v [8]int64
			for i := range v {
				v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
			}
			// user nice system idle iowait irq softirq steal
			tick := func(n int64) time.Duration { return time.Duration(n) * time.Second / clockTick }
			s.Busy = tick(v[0] + v[1] + v[2] + v[5] + v[6] + v[7])
			s.IOWait = tick(v[4])
		}
	}
	if h.disk != "" {
		if b, err := os.ReadFile("/proc/diskstats"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				f := strings.Fields(line)
				if len(f) >= 20 && f[2] == h.disk {
					s.Writes, _ = strconv.ParseInt(f[7], 10, 64)
					s.Flushes, _ = strconv.ParseInt(f[18], 10, 64)
				}
			}
		}
	}
	return s
}

// Usage is what the machine did between two samples.
type Usage struct {
	Elapsed time.Duration
	Busy    time.Duration // CPU time of all cores
	Flushes int64
	Writes  int64
}

func since(a SysSample, h *Harness) Usage {
	b := h.sample()
	return Usage{Elapsed: b.At.Sub(a.At), Busy: b.Busy - a.Busy, Flushes: b.Flushes - a.Flushes, Writes: b.Writes - a.Writes}
}

// CPUPercent is the machine's busy share: 100 per core.
func (u Usage) CPUPercent() float64 {
	if u.Elapsed <= 0 {
		return 0
	}
	return 100 * u.Busy.Seconds() / u.Elapsed.Seconds()
}
