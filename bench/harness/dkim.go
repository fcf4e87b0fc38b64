//go:build linux

package main

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/qmgate/qmgate/internal/dkim"
)

// dkimDomain is the signing domain: the domain of the From: field that
// qmqp-source writes (benchSender's).
const dkimDomain = "bench.test"

// minSignatureBytes is the least a DKIM-Signature field adds to a message
// (an Ed25519 one is about 350 bytes; RSA-2048 about 550). A signed
// variant whose messages grew by less at the sink was not signed.
const minSignatureBytes = 200

// signedBlock stands for what a DKIM signature covers besides the body
// hash: the signed header fields and the DKIM-Signature field itself, as
// RFC 6376 section 3.7 hashes them (relaxed canonicalization).
var signedBlock = []byte("from:<bench@bench.test>\r\nto:<foo@example.com>\r\ndate:Wed, 2 Dec 2026 10:58:17 +0000 (UTC)\r\n" +
	"message-id:<14813@vm>\r\ndkim-signature:v=1; a=rsa-sha256; c=relaxed/relaxed; d=bench.test; s=bench; t=1796204297; " +
	"h=from:from:to:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=")

// dkimVariant is one hub set-up of the DKIM measurement: unsigned, or
// signing with one key.
type dkimVariant struct {
	name  string
	algo  string        // "" when unsigned
	key   crypto.Signer // nil when unsigned
	q     *Qmgate
	sink  *Sink
	runs  []dkimRun  // one per round
	signs []signRate // one per round, signed variants only
}

// dkimRun is one round's end-to-end run of a variant.
type dkimRun struct {
	accepted int64
	elapsed  time.Duration // from the first message sent until the sink had every accepted one
	cpu      time.Duration // qmgate's CPU time
	bytes    int64         // bytes the sink received
	machine  float64       // the machine's CPU, percent
}

func (r dkimRun) rate() float64 { return perSecond(r.accepted, r.elapsed) }

func (r dkimRun) cpuPer() float64 { return perMessage(r.cpu, r.accepted) }

// signRate is the bare signing rate of the machine's cores for one key:
// every core signing at once, as a hub under full load would.
type signRate struct {
	n       int64
	elapsed time.Duration
	cpu     time.Duration
}

func (r signRate) rate() float64 { return perSecond(r.n, r.elapsed) }

func (r signRate) cpuPer() float64 { return perMessage(r.cpu, r.n) }

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// perMessage is CPU microseconds per message.
func perMessage(d time.Duration, n int64) float64 {
	if n <= 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(n)
}

// measureSigning signs for d on every core with k, as the hub signs: one
// SHA-256 of the signed header block and the key's Sign over that hash
// (RFC 6376 section 3.7 for RSA-SHA256; RFC 8463 section 3 for Ed25519,
// which signs the SHA-256 hash with PureEdDSA). It uses Go's crypto, the
// same code the hub signs with, so the ratio to it is what the hub adds,
// not a difference between two crypto libraries. CPU time is the
// process's own (getrusage), which the harness spends on nothing else
// meanwhile.
func measureSigning(k crypto.Signer, d time.Duration) (signRate, error) {
	opts := crypto.Hash(0)
	if _, ok := k.Public().(*rsa.PublicKey); ok {
		opts = crypto.SHA256
	}
	var n atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	r0 := rusageCPU()
	t0 := time.Now()
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sum := sha256.Sum256(signedBlock)
				if _, err := k.Sign(nil, sum[:], opts); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		}()
	}
	time.Sleep(d)
	close(stop)
	wg.Wait()
	r := signRate{n: n.Load(), elapsed: time.Since(t0), cpu: rusageCPU() - r0}
	if err, _ := firstErr.Load().(error); err != nil {
		return r, err
	}
	return r, nil
}

// rusageCPU is this process's user and system time.
func rusageCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (h *Harness) dkimSigning() *Section {
	s := &Section{}
	z := h.sizes
	s.printf("End to end: Postfix's `qmqp-source` (%d sessions, a connection per message) submits %d messages of %d bytes "+
		"(From: `%s`) to `qmgate serve`, which signs QMQP submitters' mail at acceptance and relays it over QMTP to `qmtp-sink`; "+
		"the clock stops when the sink has every message qmgate acknowledged. Three hubs, each with its own sink: unsigned, "+
		"an Ed25519 `[[dkim]]` key, an RSA-2048 key (`qmgate dkim keygen`'s kinds). They run in turn, %d rounds, each round "+
		"starting with the next one, so that the load of a shared machine falls on each alike; after each signed run the harness measures the bare signing rate of the "+
		"machine's %d cores for the same key (a Go program in the harness: one SHA-256 of a signed header block and the key's `Sign`, "+
		"every core at once for %v; Go's crypto, the code qmgate signs with, rather than `openssl speed`, whose own assembly would "+
		"make the ratio compare two libraries). Figures are medians over the rounds, ranges in brackets; ratios are taken within each round; "+
		"a goal is judged on its worst round, since on a busy machine a lucky round or median can pass it. "+
		"The sink's bytes per message show that the signed hubs did sign.\n\n",
		z.DKIMSessions, z.DKIMMsgs, z.Size, benchSender, z.DKIMRounds, runtime.NumCPU(), z.SignTime)

	dir := filepath.Join(h.work, "dkim")
	h.check(os.RemoveAll(dir))
	h.check(os.MkdirAll(dir, 0o755))
	uid, gid := -1, -1
	if u, err := user.Lookup("nobody"); err == nil {
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	variants := []*dkimVariant{{name: "unsigned"}, {name: "Ed25519", algo: dkim.AlgoEd25519}, {name: "RSA-2048", algo: dkim.AlgoRSA}}
	for _, v := range variants {
		var o QmgateOpts
		if v.algo != "" {
			pem, _, err := dkim.Keygen(v.algo, 2048)
			h.check(err)
			path := filepath.Join(dir, v.algo+".key")
			h.check(dkim.WriteKeyFile(path, pem))
			// qmgate reads its keys as the user it runs as.
			h.check(os.Chown(path, uid, gid))
			k, err := dkim.LoadKey("bench-"+v.algo, path)
			h.check(err)
			v.key = k.Signer
			o.DKIM = []DKIMKey{{Domain: dkimDomain, Selector: "bench-" + v.algo, KeyFile: path, Algorithm: v.algo}}
		}
		var err error
		v.sink, err = h.startQMTPSink(freePort())
		h.check(err)
		o.Route = "qmtp://" + v.sink.Addr
		v.q, err = h.startQmgate("dkim-"+v.algo, o)
		h.check(err)
	}

	for round := 1; round <= z.DKIMRounds; round++ {
		// Each round starts with the next variant, so none always runs
		// first, after the previous round's bare signing.
		k := (round - 1) % len(variants)
		for _, v := range append(slices.Clone(variants[k:]), variants[:k]...) {
			r := h.dkimRun(v, round)
			v.runs = append(v.runs, r)
			h.logf("   round %d %-9s %7.0f msg/s end to end, qmgate %4.0f µs CPU/msg, %5.0f bytes/msg at the sink, machine %3.0f%%",
				round, v.name, r.rate(), r.cpuPer(), float64(r.bytes)/float64(max(r.accepted, 1)), r.machine)
			if v.key != nil {
				sr, err := measureSigning(v.key, z.SignTime)
				h.check(err)
				v.signs = append(v.signs, sr)
				h.logf("   round %d %-9s bare signing on %d cores: %7.0f signatures/s, %5.0f µs CPU each", round, v.name, runtime.NumCPU(), sr.rate(), sr.cpuPer())
			}
		}
	}
	for _, v := range variants {
		v.q.Stop()
		v.sink.Proc.Stop()
	}

	rows, targets, errs := dkimReport(variants)
	s.table(rows)
	for _, e := range errs {
		s.printf("- %s\n", e)
	}
	s.printf("\n*qmgate CPU above unsigned ÷ bare signature*: what signing adds to qmgate's CPU per message, against one bare signature's CPU; " +
		"1.00 would mean signing costs exactly the signature. *Signed msg/s ÷ signatures/s*: the hub's delivered rate against what the cores " +
		"could sign if they did nothing else; here they also carry qmqp-source, qmtp-sink and the kernel's loopback work.\n\n")
	for _, t := range targets {
		s.target(t)
	}
	if len(errs) > 0 {
		h.fail("%s", errs[0])
	}
	return s
}

// dkimRun sends one round's load through variant v and waits for its sink.
func (h *Harness) dkimRun(v *dkimVariant, round int) dkimRun {
	z := h.sizes
	st0, err := v.sink.QMTPStats()
	h.check(err)
	before := h.sample()
	c0 := v.q.CPU()
	l, el, got, err := h.endToEnd(func() (Load, error) {
		return h.qmqpSource(v.q.QMQP, z.DKIMSessions, z.DKIMMsgs, z.Size)
	}, func() int64 { return v.sink.Received() - st0.Messages }, 5*time.Minute)
	u := since(before, h)
	cpu := v.q.CPU() - c0
	st1, serr := v.sink.QMTPStats()
	h.check(serr)
	h.addCheck(Check{What: fmt.Sprintf("DKIM, %s, round %d: qmqp-source → qmgate → qmtp-sink", v.name, round),
		Acked: l.Accepted, Received: got, OK: err == nil && got == l.Accepted})
	h.check(err)
	if !l.OK() {
		h.fail("DKIM, %s: qmgate accepted %d of %d messages: %s", v.name, l.Accepted, l.Messages, l.Output)
	}
	return dkimRun{accepted: l.Accepted, elapsed: el, cpu: cpu, bytes: st1.Bytes - st0.Bytes, machine: u.CPUPercent()}
}

// dkimReport turns the rounds into the table (variants[0] is unsigned),
// the targets, and the reasons a signed variant cannot be trusted.
func dkimReport(variants []*dkimVariant) (rows [][]string, targets []Target, errs []string) {
	rows = [][]string{{"hub", "messages", "delivered msg/s", "qmgate CPU µs/msg", "bytes/msg at the sink",
		"signed ÷ unsigned msg/s", "bare signatures/s, all cores", "bare signature CPU µs", "signed msg/s ÷ signatures/s",
		"qmgate CPU above unsigned ÷ bare signature"}}
	if len(variants) == 0 {
		return rows, nil, nil
	}
	base := variants[0]
	for _, v := range variants {
		var n int64
		var rates, cpus, sizes, vsBase, vsSign, extra, sigRates, sigCPU []float64
		for i, r := range v.runs {
			n += r.accepted
			rates = append(rates, r.rate())
			cpus = append(cpus, r.cpuPer())
			sizes = append(sizes, float64(r.bytes)/float64(max(r.accepted, 1)))
			if v == base || i >= len(base.runs) {
				continue
			}
			b := base.runs[i]
			if b.rate() > 0 {
				vsBase = append(vsBase, r.rate()/b.rate())
			}
			if i < len(v.signs) && v.signs[i].rate() > 0 {
				sg := v.signs[i]
				sigRates = append(sigRates, sg.rate())
				sigCPU = append(sigCPU, sg.cpuPer())
				vsSign = append(vsSign, r.rate()/sg.rate())
				extra = append(extra, (r.cpuPer()-b.cpuPer())/sg.cpuPer())
			}
			if b.accepted > 0 && r.accepted > 0 && sizes[len(sizes)-1] < float64(b.bytes)/float64(b.accepted)+minSignatureBytes {
				errs = append(errs, fmt.Sprintf("%s, round %d: the sink's messages are %.0f bytes, not %d more than unsigned ones (%.0f): the hub did not sign them",
					v.name, i+1, sizes[len(sizes)-1], minSignatureBytes, float64(b.bytes)/float64(b.accepted)))
			}
		}
		row := []string{v.name, fmt.Sprint(n), spread(rates, rate), spread(cpus, func(x float64) string { return fmt.Sprintf("%.0f", x) }),
			spread(sizes, func(x float64) string { return fmt.Sprintf("%.0f", x) })}
		if v == base {
			row = append(row, "–", "–", "–", "–", "–")
		} else {
			row = append(row, spread(vsBase, percent), spread(sigRates, rate), spread(sigCPU, func(x float64) string { return fmt.Sprintf("%.0f", x) }),
				spread(vsSign, percent), spread(extra, func(x float64) string { return fmt.Sprintf("%.2f", x) }))
		}
		rows = append(rows, row)
		switch v.algo {
		case dkim.AlgoRSA:
			got, worst := median(vsSign), minOr0(vsSign)
			targets = append(targets, Target{Name: "DKIM RSA-2048: signed delivery ≥ 80 % of the cores' signing rate", Want: "≥ 80 % in every round",
				Got:  fmt.Sprintf("%s, worst round %s (%s msg/s vs %s signatures/s)", percent(got), percent(worst), rate(median(rates)), rate(median(sigRates))),
				Pass: len(vsSign) > 0 && worst >= 0.8,
				Limit: fmt.Sprintf("The cores' signing rate is what they reach doing nothing else; end to end they also carry qmqp-source, qmtp-sink and "+
					"the kernel's loopback work. What signing adds to qmgate's CPU per message is %s of one bare signature's CPU "+
					"(1.00: the signature and nothing more).", spread(extra, func(x float64) string { return fmt.Sprintf("%.2f", x) }))})
		case dkim.AlgoEd25519:
			loss, worst := 1-median(vsBase), 1-minOr0(vsBase)
			targets = append(targets, Target{Name: "DKIM Ed25519: under 10 % throughput lost to signing", Want: "< 10 % in every round",
				Got:  fmt.Sprintf("%s lost, worst round %s (%s vs %s msg/s)", percent(loss), percent(worst), rate(median(rates)), rate(median(base.rates()))),
				Pass: len(vsBase) > 0 && worst < 0.1,
				Limit: fmt.Sprintf("Signing adds %s µs of qmgate CPU per message to %s µs unsigned; a bare Ed25519 signature costs %s µs here.",
					fmt.Sprintf("%.0f", median(cpus)-median(base.cpus())), fmt.Sprintf("%.0f", median(base.cpus())), fmt.Sprintf("%.0f", median(sigCPU)))})
		}
	}
	return rows, targets, errs
}

func (v *dkimVariant) rates() []float64 {
	var out []float64
	for _, r := range v.runs {
		out = append(out, r.rate())
	}
	return out
}

func (v *dkimVariant) cpus() []float64 {
	var out []float64
	for _, r := range v.runs {
		out = append(out, r.cpuPer())
	}
	return out
}

// percent writes a fraction as a percentage, as pct does.
func percent(x float64) string { return fmt.Sprintf("%.0f%%", 100*x) }

// minOr0 is v's least value, 0 when it is empty. A target is judged on
// its worst round: on a busy machine one lucky round, or a lucky median,
// can pass a goal that the code does not meet.
func minOr0(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return slices.Min(v)
}

// median of v (0 when empty).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread is v's median, and its range in brackets when there are several.
func spread(v []float64, f func(float64) string) string {
	if len(v) == 0 {
		return "–"
	}
	if len(v) == 1 {
		return f(v[0])
	}
	return fmt.Sprintf("%s (%s–%s)", f(median(v)), f(slices.Min(v)), f(slices.Max(v)))
}
