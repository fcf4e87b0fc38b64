package queue

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// Crash test protocol: the writer prints one line per acknowledged action,
// with one write(2) each (atomic on a pipe), only after the call returned:
//
//	A <id> <rcpts>   Put returned <id> (recipients comma-separated)
//	d <id> <rcpt>    about to Record a delivery to <rcpt>
//	D <id> <rcpt>    ... and Record returned nil
//	r <id>           about to Remove <id>
//	R <id>           ... and Remove returned nil
//	BAD <text>       the writer was handed something corrupt
//
// The intent lines (d, r) say which messages may legitimately vanish
// without an acknowledgement: a crash between the flush and the print.
//
// Every body carries its own checksums, so any message found after a crash,
// acknowledged or not, can be checked:
//
//	X-Body-Sum: <sha256 of the bytes after the header>
//	X-Env-Sum: <sha256 of sender NUL rcpt NUL rcpt ...>

func envSum(sender string, rcpts []string) string {
	h := sha256.New()
	h.Write([]byte(sender))
	for _, r := range rcpts {
		h.Write([]byte{0})
		h.Write([]byte(r))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func selfCheckingBody(r *rand.Rand, sender string, rcpts []string) []byte {
	n := 50 + r.IntN(6000)
	switch r.IntN(20) {
	case 0:
		n = 9000 + r.IntN(60000) // external body
	case 1:
		n = 0
	}
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = "abcdefghij\n"[r.IntN(11)]
	}
	sum := sha256.Sum256(payload)
	hdr := fmt.Sprintf("X-Body-Sum: %x\nX-Env-Sum: %s\n\n", sum[:16], envSum(sender, rcpts))
	return append([]byte(hdr), payload...)
}

// checkSelf verifies a body against its own checksums.
func checkSelf(body []byte, sender string, rcpts []string) error {
	i := bytes.Index(body, []byte("\n\n"))
	if i < 0 {
		return fmt.Errorf("no header")
	}
	var bodySum, env string
	for _, l := range strings.Split(string(body[:i]), "\n") {
		if v, ok := strings.CutPrefix(l, "X-Body-Sum: "); ok {
			bodySum = v
		}
		if v, ok := strings.CutPrefix(l, "X-Env-Sum: "); ok {
			env = v
		}
	}
	sum := sha256.Sum256(body[i+2:])
	if bodySum != hex.EncodeToString(sum[:16]) {
		return fmt.Errorf("body checksum mismatch")
	}
	if env != envSum(sender, rcpts) {
		return fmt.Errorf("envelope checksum mismatch")
	}
	return nil
}

func crashOptions() Options {
	return Options{
		Hostname:    "crash.example",
		Logger:      quietLogger(),
		InlineMax:   8 << 10,
		SegmentSize: 256 << 10, // rotate and compact often
	}
}

// crashWriter is the helper process: Puts, deliveries and removals under
// concurrent load until it is killed.
func crashWriter() {
	dir := os.Getenv("QMGATE_QUEUE_DIR")
	seed, _ := strconv.ParseUint(os.Getenv("QMGATE_QUEUE_SEED"), 10, 64)
	q, err := Open(dir, crashOptions())
	if err != nil {
		fmt.Fprintf(os.Stdout, "BAD open: %v\n", err)
		os.Exit(1)
	}
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...) + "\n"
		outMu.Lock()
		os.Stdout.Write([]byte(line)) // one write: atomic on the pipe
		outMu.Unlock()
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := 0; ; i++ {
				sender := fmt.Sprintf("s%d@w%d.example", i, w)
				var rcpts []string
				for k := 0; k <= r.IntN(3); k++ {
					rcpts = append(rcpts, fmt.Sprintf("r%d@d%d.example", k, r.IntN(4)))
				}
				body := selfCheckingBody(r, sender, rcpts)
				id, err := q.Put(ctx, mail.Envelope{Sender: sender, Recipients: rcpts}, bytes.NewReader(body))
				if err != nil {
					say("BAD put: %v", err)
					return
				}
				say("A %s %s", id, strings.Join(rcpts, ","))
			}
		}()
	}
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 100+uint64(w)))
			for {
				if err := q.Wait(ctx); err != nil {
					return
				}
				for _, d := range q.Claim(8) {
					rc, err := d.Open()
					if errors.Is(err, ErrNotFound) {
						continue // removed meanwhile
					}
					if err != nil {
						say("BAD open %s: %v", d.ID, err)
						continue
					}
					body, err := io.ReadAll(rc)
					rc.Close()
					if err != nil {
						say("BAD read %s: %v", d.ID, err)
						continue
					}
					q.mu.Lock()
					m := d.m
					all := make([]string, len(m.rcpts))
					for i := range m.rcpts {
						all[i] = m.rcpts[i].addr
					}
					q.mu.Unlock()
					if err := checkSelf(body, d.Sender, all); err != nil {
						say("BAD %s: %v", d.ID, err)
						continue
					}
					var res []Result
					for _, rc := range d.Recipients {
						st := mail.OK("ok")
						if r.IntN(3) == 0 {
							st = mail.Temp("4.4.1", "try later")
						}
						res = append(res, Result{Recipient: rc, Status: st, Host: "mx"})
					}
					for _, x := range res {
						if x.Status.IsAccept() {
							say("d %s %s", d.ID, x.Recipient)
						}
					}
					if err := q.Record(ctx, d, res); err != nil {
						say("BAD record: %v", err)
						continue
					}
					for _, x := range res {
						if x.Status.IsAccept() {
							say("D %s %s", d.ID, x.Recipient)
						}
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(seed, 200))
		for {
			time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
			rows, _ := q.List(ctx)
			if len(rows) == 0 {
				continue
			}
			id := rows[r.IntN(len(rows))].ID
			say("r %s", id)
			if err := q.Remove(ctx, id); err == nil {
				say("R %s", id)
			}
		}
	}()
	wg.Wait()
}

// expectation is what the test knows was acknowledged.
type expectation struct {
	acked      map[string][]string // ID -> recipients
	removed    map[string]bool
	delivered  map[string]map[string]bool
	mayRemove  map[string]bool
	mayDeliver map[string]map[string]bool
	gone       map[string]bool // acknowledged as removed or delivered, and seen gone: never to return
}

func addTo(m map[string]map[string]bool, id, rcpt string) {
	if m[id] == nil {
		m[id] = map[string]bool{}
	}
	m[id][rcpt] = true
}

func TestCrashRecovery(t *testing.T) {
	if os.Getenv("QMGATE_QUEUE_HELPER") != "" {
		t.Skip()
	}
	rounds := 50
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	exp := expectation{acked: map[string][]string{}, removed: map[string]bool{}, delivered: map[string]map[string]bool{},
		mayRemove: map[string]bool{}, mayDeliver: map[string]map[string]bool{}, gone: map[string]bool{}}
	totalAcked := 0
	for round := 0; round < rounds; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "QMGATE_QUEUE_HELPER=crashwriter", "QMGATE_QUEUE_DIR="+dir,
			"QMGATE_QUEUE_SEED="+strconv.FormatUint(seed+uint64(round), 10))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan []string, 1)
		go func() {
			var got []string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				got = append(got, sc.Text())
			}
			lines <- got
		}()
		// A random instant: sometimes during Open and replay, mostly
		// under full load.
		wait := time.Duration(r.IntN(400)) * time.Millisecond
		if round%10 == 0 {
			wait = time.Duration(r.IntN(30)) * time.Millisecond
		}
		time.Sleep(wait)
		cmd.Process.Signal(syscall.SIGKILL)
		got := <-lines
		cmd.Wait()
		acked := 0
		for _, l := range got {
			f := strings.Fields(l)
			switch {
			case len(f) == 3 && f[0] == "A":
				exp.acked[f[1]] = strings.Split(f[2], ",")
				acked++
			case len(f) == 3 && f[0] == "d":
				addTo(exp.mayDeliver, f[1], f[2])
			case len(f) == 3 && f[0] == "D":
				addTo(exp.delivered, f[1], f[2])
			case len(f) == 2 && f[0] == "r":
				exp.mayRemove[f[1]] = true
			case len(f) == 2 && f[0] == "R":
				exp.removed[f[1]] = true
			case len(f) > 0 && f[0] == "BAD":
				t.Fatalf("round %d: the writer reported: %s", round, l)
			}
		}
		totalAcked += acked
		verifyCrashRound(t, dir, round, &exp, r)
	}
	t.Logf("%d rounds, %d acknowledged messages checked", rounds, totalAcked)
}

// verifyCrashRound reopens the queue and checks every promise, then
// removes most messages so the queue stays small across rounds.
func verifyCrashRound(t *testing.T, dir string, round int, exp *expectation, r *rand.Rand) {
	t.Helper()
	opt := crashOptions()
	opt.Passive = true
	q, err := Open(dir, opt)
	if err != nil {
		t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
	}
	defer q.Close()
	verifyAfterCrash(t, q, round, exp, r)
}

// verifyAfterCrash checks a queue reopened after a crash against what was
// acknowledged before it.
func verifyAfterCrash(t *testing.T, q *Queue, round int, exp *expectation, r *rand.Rand) {
	t.Helper()
	q.mu.Lock()
	type snap struct {
		sender string
		rcpts  []string
		state  []State
		m      *message
	}
	present := map[string]snap{}
	for _, m := range q.msgs {
		id := m.id
		s := snap{sender: m.sender, m: m}
		for i := range m.rcpts {
			s.rcpts = append(s.rcpts, m.rcpts[i].addr)
			s.state = append(s.state, m.rcpts[i].state)
		}
		present[id] = s
	}
	q.mu.Unlock()
	for id, rcpts := range exp.acked {
		s, ok := present[id]
		if exp.removed[id] {
			if ok {
				t.Fatalf("round %d: %s was removed (acknowledged) but came back", round, id)
			}
			continue
		}
		if !ok {
			// Gone: only after a removal or deliveries to every recipient
			// were under way (their acknowledgement may have been lost).
			legit := exp.mayRemove[id]
			if !legit {
				legit = true
				for _, rc := range rcpts {
					legit = legit && exp.mayDeliver[id][rc]
				}
			}
			if !legit {
				t.Fatalf("round %d: acknowledged message %s is lost", round, id)
			}
			continue
		}
		if strings.Join(s.rcpts, ",") != strings.Join(rcpts, ",") {
			t.Fatalf("round %d: %s: recipients %v, acknowledged with %v", round, id, s.rcpts, rcpts)
		}
		for i, rc := range s.rcpts {
			if exp.delivered[id][rc] && s.state[i] == Pending {
				t.Fatalf("round %d: %s: delivered recipient %s is pending again", round, id, rc)
			}
		}
	}
	// Everything present, acknowledged or not, must be intact, and nothing
	// that was seen gone for good may come back.
	for id, s := range present {
		if exp.gone[id] {
			t.Fatalf("round %d: %s came back after it was gone", round, id)
		}
		rc, err := q.openBody(s.m)
		if err != nil {
			t.Fatalf("round %d: %s: open: %v", round, id, err)
		}
		body, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("round %d: %s: read: %v", round, id, err)
		}
		body = append([]byte(s.m.body.prefix), body...) // as Delivery.Open reads it
		if err := checkSelf(body, s.sender, s.rcpts); err != nil {
			t.Fatalf("round %d: %s handed out corrupt: %v", round, id, err)
		}
	}
	// Keep a few messages for the next rounds; remove the rest.
	var drop []string
	for id := range present {
		if r.IntN(20) != 0 {
			drop = append(drop, id)
		}
	}
	if err := q.Remove(context.Background(), drop...); err != nil {
		t.Fatalf("round %d: remove: %v", round, err)
	}
	for _, id := range drop {
		exp.removed[id] = true
	}
	// Forget what can no longer matter, except that it is gone.
	for id := range exp.removed {
		exp.gone[id] = true
	}
	for id := range exp.acked {
		if _, ok := present[id]; !ok {
			exp.gone[id] = true
		}
		if _, ok := present[id]; !ok || exp.removed[id] {
			delete(exp.acked, id)
			delete(exp.delivered, id)
		}
	}
	for id := range exp.removed {
		if _, ok := present[id]; !ok {
			delete(exp.removed, id)
		}
	}
	for id := range exp.mayRemove {
		if _, ok := present[id]; !ok {
			delete(exp.mayRemove, id)
		}
	}
	for id := range exp.mayDeliver {
		if _, ok := present[id]; !ok {
			delete(exp.mayDeliver, id)
		}
	}
}
