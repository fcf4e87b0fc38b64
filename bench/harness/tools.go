//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Load is one run of a load generator.
type Load struct {
	Tool     string
	Sessions int
	Messages int
	Size     int
	// Accepted is how many messages the generator saw accepted (K / 250
	// after DATA) for every recipient.
	Accepted int64
	// Refused counts Z/D (qmtp-source) replies; Lost, messages whose reply
	// never came. Postfix's generators stop at the first refusal, so for
	// them a shortfall shows as Messages-Accepted.
	Refused, Lost int64
	Elapsed       time.Duration
	CPU           time.Duration
	Exit          int
	Output        string
}

// Rate is accepted messages per second of the generator's wall time.
func (l Load) Rate() float64 {
	if l.Elapsed <= 0 {
		return 0
	}
	return float64(l.Accepted) / l.Elapsed.Seconds()
}

// OK reports whether every message was accepted.
func (l Load) OK() bool { return l.Exit == 0 && l.Accepted == int64(l.Messages) }

const (
	benchSender = "bench@bench.test"
	benchRcpt   = "foo@example.com"
)

// lastCounter parses the running counter Postfix's generators print with
// -c ("1\r2\r3\r...\n") and returns the last value.
func lastCounter(out string) int64 {
	f := strings.FieldsFunc(out, func(r rune) bool { return r == '\r' || r == '\n' || r == ' ' })
	for i := len(f) - 1; i >= 0; i-- {
		if n, err := strconv.ParseInt(f[i], 10, 64); err == nil {
			return n
		}
	}
	return 0
}

// qmqpSource runs Postfix's qmqp-source: one message per connection,
// LF-only, size with headers.
func (h *Harness) qmqpSource(addr string, sessions, msgs, size int) (Load, error) {
	return h.postfixSource("qmqp-source", addr, sessions, msgs, size, size)
}

// smtpSource runs Postfix's smtp-source. reuse keeps a session's
// connection for its next message (-d); otherwise every message has its
// own connection, as with qmqp-source. smtp-source's -l counts the body
// only: it is given size minus its own headers (about 150 bytes), so the
// messages are the same size as qmqp-source's.
func (h *Harness) smtpSource(addr string, sessions, msgs, size int, reuse bool) (Load, error) {
	extra := []string{"-M", "bench.test"}
	if reuse {
		extra = append(extra, "-d")
	}
	return h.postfixSource("smtp-source", addr, sessions, msgs, size, max(size-smtpSourceHeader, 1), extra...)
}

// postfixSource runs one of Postfix's generators with -l length and the
// extra arguments, and reads its running counter.
func (h *Harness) postfixSource(tool, addr string, sessions, msgs, size, length int, extra ...string) (Load, error) {
	args := append([]string{"-c", "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(msgs), "-l", strconv.Itoa(length),
		"-f", benchSender, "-t", benchRcpt}, extra...)
	r, err := h.runTool(h.toolTimeout(msgs, size), h.peer(tool), append(args, addr)...)
	l := Load{Tool: tool, Sessions: sessions, Messages: msgs, Size: size, Elapsed: r.Elapsed, CPU: r.CPU, Exit: r.Exit,
		Accepted: lastCounter(r.Stdout), Output: strings.TrimSpace(r.Stderr)}
	return l, err
}

// smtpSourceHeader approximates the header smtp-source writes (From, To,
// Date, Message-Id and the blank line).
const smtpSourceHeader = 150

// qmtpSource runs bench/qmtp-source.
func (h *Harness) qmtpSource(addr string, sessions, msgs, size, depth int, ackedFile string) (Load, error) {
	args := []string{"-json", "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(msgs), "-l", strconv.Itoa(size),
		"-d", strconv.Itoa(depth), "-f", benchSender, "-t", benchRcpt}
	if ackedFile != "" {
		args = append(args, "-acked", ackedFile)
	}
	r, err := h.runTool(h.toolTimeout(msgs, size), h.bin("qmtp-source"), append(args, addr)...)
	l := Load{Tool: "qmtp-source", Sessions: sessions, Messages: msgs, Size: size, Elapsed: r.Elapsed, CPU: r.CPU, Exit: r.Exit,
		Output: strings.TrimSpace(r.Stderr)}
	if err != nil {
		return l, err
	}
	var sum struct {
		K, Z, D, Lost int64
		Accepted      int64 `json:"accepted_messages"`
	}
	if jerr := json.Unmarshal([]byte(r.Stdout), &sum); jerr != nil {
		return l, fmt.Errorf("qmtp-source output %q: %w", r.Stdout, jerr)
	}
	l.Accepted, l.Refused, l.Lost = sum.Accepted, sum.Z+sum.D, sum.Lost
	return l, nil
}

// toolTimeout bounds one generator run generously: a stuck run ends the
// measurement rather than the harness.
func (h *Harness) toolTimeout(msgs, size int) time.Duration {
	return 10*time.Minute + time.Duration(msgs)*time.Millisecond + time.Duration(int64(msgs)*int64(size)/(1<<20))*time.Second/4
}

// Sink is a receiving end that counts.
type Sink struct {
	Name, Addr string
	Proc       *Proc
	count      func() int64
	stats      string // qmtp-sink's stats address
}

// Received is how many messages the sink has received, or -1 when it
// cannot say.
func (s *Sink) Received() int64 { return s.count() }

// CPU is the sink process's CPU time so far.
func (s *Sink) CPU() time.Duration { return processCPU(s.Proc.Pid()) }

var sinkCounter = regexp.MustCompile(`mesg=(\d+)`)

// startSMTPSink runs Postfix's smtp-sink with a running counter (-c) in its
// log, which Received reads.
func (h *Harness) startSMTPSink(addr string) (*Sink, error) {
	p, err := h.startProc("smtp-sink", nil, h.peer("smtp-sink"), "-c", "-u", "nobody", "-m", "1024", addr, "1024")
	if err != nil {
		return nil, err
	}
	s := &Sink{Name: "smtp-sink", Addr: addr, Proc: p}
	s.count = func() int64 {
		m := sinkCounter.FindAllStringSubmatch(p.Tail(400), -1)
		if len(m) == 0 {
			return 0
		}
		n, _ := strconv.ParseInt(m[len(m)-1][1], 10, 64)
		return n
	}
	return s, waitListening(addr, 30*time.Second)
}

// startQMQPSink runs Postfix's qmqp-sink: it counts nothing we read, since
// it only marks what qmqp-source can drive.
func (h *Harness) startQMQPSink(addr string) (*Sink, error) {
	p, err := h.startProc("qmqp-sink", nil, h.peer("qmqp-sink"), addr, "1024")
	if err != nil {
		return nil, err
	}
	s := &Sink{Name: "qmqp-sink", Addr: addr, Proc: p, count: func() int64 { return -1 }}
	return s, waitListening(addr, 30*time.Second)
}

// startQMTPSink runs bench/qmtp-sink.
func (h *Harness) startQMTPSink(addr string) (*Sink, error) {
	stats := freePort()
	p, err := h.startProc("qmtp-sink", nil, h.bin("qmtp-sink"), "-stats", stats, addr)
	if err != nil {
		return nil, err
	}
	s := &Sink{Name: "qmtp-sink", Addr: addr, Proc: p, stats: stats}
	s.count = func() int64 {
		st, err := s.QMTPStats()
		if err != nil {
			return -1
		}
		return st.Messages
	}
	if err := waitListening(stats, 30*time.Second); err != nil {
		return nil, err
	}
	return s, waitListening(addr, 30*time.Second)
}

// QMTPStats are qmtp-sink's counters.
type QMTPStats struct {
	Messages, Recipients, Bytes int64
	Unique                      int64 `json:"seqs_unique"`
	Duplicate                   int64 `json:"seqs_duplicate"`
}

func (s *Sink) QMTPStats() (QMTPStats, error) {
	var st QMTPStats
	c := http.Client{Timeout: 10 * time.Second}
	r, err := c.Get("http://" + s.stats + "/stats")
	if err != nil {
		return st, err
	}
	defer r.Body.Close()
	return st, json.NewDecoder(r.Body).Decode(&st)
}

// Seqs returns the sequence numbers qmtp-sink has seen.
func (s *Sink) Seqs() (map[int64]bool, error) {
	c := http.Client{Timeout: time.Minute}
	r, err := c.Get("http://" + s.stats + "/seqs")
	if err != nil {
		return nil, err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	return parseSeqs(string(b)), nil
}

func parseSeqs(s string) map[int64]bool {
	out := map[int64]bool{}
	for _, f := range strings.Fields(s) {
		if n, err := strconv.ParseInt(f, 10, 64); err == nil {
			out[n] = true
		}
	}
	return out
}

func readSeqs(path string) (map[int64]bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseSeqs(string(b)), nil
}
