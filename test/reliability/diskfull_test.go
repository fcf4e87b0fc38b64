//go:build linux

package reliability

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/smtp"
)

// mountTmpfs mounts a tmpfs of the given size ("8m") on dir.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	testpeer.NeedRoot(t, "mounts a small tmpfs for the queue")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0755"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
}

func remountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT, "size="+size+",mode=0755"); err != nil {
		t.Fatalf("remount %s: %v", dir, err)
	}
}

func fsFree(dir string) int64 {
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil {
		return -1
	}
	return int64(st.Bavail) * st.Bsize
}

// probe sends one message over each protocol and returns the statuses,
// recording them in led.
func probe(qmtpA, qmqpA, smtpA, rcpt, marker string, led *ledger) map[string]mail.Status {
	out := map[string]mail.Status{}
	defer func() {
		for p, st := range out {
			m := marker + "-" + strings.ToLower(p)
			led.attempt(m)
			led.result(p, m, rcpt, st)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	env := mail.Envelope{Sender: "probe@src.test", Recipients: []string{rcpt}}
	if qmtpA != "" {
		body := makeBody(marker + "-qmtp")
		res, err := (&qmtp.Client{ConnectTimeout: 3 * time.Second, IOTimeout: 15 * time.Second}).Send(ctx, qmtpA,
			&qmtp.Message{Envelope: env, Body: bytes.NewReader(body), Size: int64(len(body))})
		if len(res) == 1 && len(res[0]) == 1 {
			out["QMTP"] = res[0][0]
		} else {
			out["QMTP"] = mail.StatusOf(err)
		}
	}
	if qmqpA != "" {
		body := makeBody(marker + "-qmqp")
		res, _ := (&qmqp.Client{Servers: []string{qmqpA}, ConnectTimeout: 3 * time.Second, IOTimeout: 15 * time.Second}).Send(ctx, env, bytes.NewReader(body), int64(len(body)))
		out["QMQP"] = res.Status
	}
	if smtpA != "" {
		body := makeBody(marker + "-smtp")
		c := &smtp.Client{TLS: smtp.TLSNone, LocalName: "probe.test", ConnectTimeout: 3 * time.Second, CommandTimeout: 15 * time.Second, ErrorLog: quietLog}
		conn, err := c.Dial(ctx, "smtp://"+smtpA)
		if err != nil {
			out["SMTP"] = mail.StatusOf(err)
		} else {
			sts, err := conn.Send(ctx, env, bytes.NewReader(body))
			conn.Close()
			if len(sts) == 1 {
				out["SMTP"] = sts[0]
			} else {
				out["SMTP"] = mail.StatusOf(err)
			}
		}
	}
	return out
}

// TestFaultDiskFull: the queue lives on a small tmpfs. While the next hop
// refuses (so nothing leaves), senders over all three protocols fill it:
// they must get temporary refusals, never a permanent one, and never an
// acknowledgement for a message that was not stored. The daemon is killed
// and restarted on the full disk. Then the next hop accepts and the queue
// must drain on the still-small filesystem; finally space returns (a
// remount) and new mail is accepted at once. Every acknowledged recipient
// is delivered, intact.
func TestFaultDiskFull(t *testing.T) {
	h := newNetHost(t)
	qs := newSink(t, "qmtp", h.addr(t))
	qs.Refuse.Store(true)
	qmtpA, qmqpA, smtpA := h.addr(t), h.addr(t), h.addr(t)
	d := newDaemon(t, h, fmt.Sprintf(`
hostname = "full.test"
queue_dir = "{{DIR}}/fs/queue"
rcpthosts = ["example.com"]
[qmtp]
listen = [%q]
[qmqp]
listen = [%q]
allow = ["127.0.0.0/8"]
[smtp]
listen = [%q]
[queue]
retry_min = "300ms"
retry_max = "1s"
[[route]]
domains = ["example.com"]
via = "qmtp://%s"
`, qmtpA, qmqpA, smtpA, qs.addr()))
	fsDir := filepath.Join(d.dir, "fs")
	size := fmt.Sprintf("%dm", scale(8, 32))
	mountTmpfs(t, fsDir, size)
	d.start()

	led := newLedger()
	ld := &load{QMTP: qmtpA, QMQP: qmqpA, SMTP: smtpA, Senders: 2, Sender: "sender@src.test",
		Rcpts: pickRcpts("example.com", 3, 2), Ledger: led,
		Size: func(r *rand.Rand) int { return 1<<10 + r.IntN(300<<10) }}
	ld.start("full")
	testpeer.WaitFor(t, "temporary refusals on every protocol once the disk is full", 2*time.Minute, func() bool {
		return led.temps("QMTP") >= 5 && led.temps("QMQP") >= 5 && led.temps("SMTP") >= 5
	})
	ackedWhenFull := led.ackedCount()
	free := fsFree(fsDir)
	if !d.alive() {
		t.Fatal("qmgate serve died on the full disk")
	}
	// A crash on a full disk must not keep the daemon from starting.
	d.kill()
	d.start()
	before := led.temps("QMTP") + led.temps("QMQP") + led.temps("SMTP")
	testpeer.WaitFor(t, "more refusals after the restart", time.Minute, func() bool {
		return led.temps("QMTP")+led.temps("QMQP")+led.temps("SMTP") >= before+30
	})
	tempText := led.lastTempReply()

	// The next hop comes back while the senders keep pushing: the queue
	// must drain although the disk stays nearly full (recording deliveries
	// needs room too), and new mail gets in as space frees up.
	qs.Refuse.Store(false)
	time.Sleep(3 * time.Second)
	ld.finish(t)
	if len(led.permFails) > 0 {
		t.Errorf("permanent refusals on a full disk: %v", led.permFails)
	}
	acked := led.ackedKeys()
	drained := testpeer.Poll(2*time.Minute, 25*time.Millisecond, func() bool { return sinkSet(qs).holdsAll(acked) })
	if !drained {
		t.Errorf("the queue did not drain on the full filesystem (%d of %d acknowledged recipients delivered)",
			led.tally(sinkSet(qs)).Delivered, len(acked))
	}

	// With the queue delivered, its space must be reusable on the same
	// small filesystem.
	t1 := time.Now()
	reclaimed := testpeer.Poll(time.Duration(scale(5, 30))*time.Second, 25*time.Millisecond, func() bool {
		sts := probe(qmtpA, qmqpA, smtpA, "u0@example.com", fmt.Sprintf("full-reuse-%d", time.Now().UnixNano()), led)
		return sts["QMTP"].IsAccept() && sts["QMQP"].IsAccept() && sts["SMTP"].IsAccept()
	})
	freeAfter, filesAfter := fsFree(fsDir), lsQueue(filepath.Join(fsDir, "queue"))
	t.Logf("after draining: free %d bytes, reclaimed %v after %s; queue files: %s", freeAfter, reclaimed, time.Since(t1), filesAfter)
	// A restart on that disk: deliveries whose records could not be written
	// come back (duplicates, never losses).
	d.kill()
	d.start()

	// Space returns: new mail is accepted at once.
	remountTmpfs(t, fsDir, "256m")
	var recovered time.Duration
	t0 := time.Now()
	ok := testpeer.Poll(30*time.Second, 25*time.Millisecond, func() bool {
		sts := probe(qmtpA, qmqpA, smtpA, "u0@example.com", fmt.Sprintf("full-probe-%d", time.Now().UnixNano()), led)
		for _, p := range []string{"QMTP", "QMQP", "SMTP"} {
			if !sts[p].IsAccept() {
				return false
			}
		}
		return true
	})
	recovered = time.Since(t0)
	if !ok {
		t.Errorf("mail still refused 30 s after space returned: %v", probe(qmtpA, qmqpA, smtpA, "u0@example.com", "full-probe-last", led))
	}
	acked = led.ackedKeys()
	testpeer.WaitFor(t, "every acknowledged recipient at the next hop", 2*time.Minute, func() bool { return sinkSet(qs).holdsAll(acked) })
	if !d.waitQueueEmpty(time.Minute) {
		t.Errorf("queue not empty at the end: %d", d.queued())
	}
	d.stop()
	tl := led.tally(sinkSet(qs))
	r := &row{
		Test:   "Full disk (queue on a tmpfs)",
		Load:   fmt.Sprintf("2 senders each over QMTP, QMQP, SMTP; 1-300 KB messages; %s tmpfs", size),
		Inputs: "ENOSPC while the next hop refuses; SIGKILL and restart on the full disk; next hop back while senders keep pushing; SIGKILL and restart after the drain; then a remount to 256 MB",
		Acked:  tl.Acked, Delivered: tl.Delivered, Lost: tl.Lost, Dups: tl.Dups,
		Notes: fmt.Sprintf("%d acknowledged before the disk filled (%d bytes left); temporary refusals QMTP %d, QMQP %d, SMTP %d (e.g. %q), no permanent ones; "+
			"the queue drained on the full filesystem: %v; after the remount all three protocols accepted again within %s.",
			ackedWhenFull, free, led.temps("QMTP"), led.temps("QMQP"), led.temps("SMTP"), tempText, drained, recovered.Round(time.Millisecond)),
	}
	if !reclaimed {
		knownIssue(t, r, "with the queue delivered, its space was not reused on the same small filesystem (%d bytes free; left: %s): "+
			"the records of those deliveries failed with ENOSPC, so the bodies and journal segments they end stay, and a restart "+
			"delivers them again (the duplicates here). The queue needs a free-space reserve for its own records (refuse new mail "+
			"below it) and must keep a delivery whose record failed pending for a retry.", freeAfter, filesAfter)
	}
	report(t, r)
	tl.check(t)
}

// lsQueue summarises what a queue directory holds.
func lsQueue(dir string) string {
	var nb, ns int
	var bb, sb int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		switch filepath.Base(filepath.Dir(p)) {
		case "body":
			nb++
			bb += fi.Size()
		case "journal":
			ns++
			sb += fi.Size()
		}
		return nil
	})
	return fmt.Sprintf("%d body files (%d bytes), %d journal segments (%d bytes)", nb, bb, ns, sb)
}
