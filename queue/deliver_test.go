package queue

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

var (
	tempFail = mail.Temp("4.4.1", "connection refused")
	permFail = mail.Status{Class: mail.Permanent, Code: "5.1.1", Text: "no such user", SMTP: 550}
	accepted = mail.OK("ok 1234 qp 5678")
)

func TestBackoffBounds(t *testing.T) {
	b := Backoff{Floor: time.Minute, Cap: time.Hour, Jitter: 0.25}
	for n := 1; n <= 20; n++ {
		base := min(time.Minute<<(n-1), time.Hour)
		for _, r := range []float64{0, 0.1, 0.5, 0.9, 0.999999} {
			d := b.Delay(n, r)
			lo := max(b.Floor, time.Duration(float64(base)*0.75))
			hi := min(b.Cap, time.Duration(float64(base)*1.25))
			if d < lo || d > hi {
				t.Errorf("Delay(%d, %v) = %v, want within [%v, %v]", n, r, d, lo, hi)
			}
		}
	}
	nj := Backoff{Floor: time.Second, Cap: 10 * time.Second}
	for n, want := range []time.Duration{1, 1, 2, 4, 8, 10, 10} {
		if n == 0 {
			continue
		}
		if d := nj.Delay(n, 0.3); d != want*time.Second {
			t.Errorf("no jitter Delay(%d) = %v, want %v", n, d, want*time.Second)
		}
	}
	if d := nj.Delay(1000, 0.5); d != 10*time.Second {
		t.Errorf("Delay(1000) = %v, want the cap", d)
	}
}

func TestClaimGroupsByDestination(t *testing.T) {
	clk := newFakeClock()
	q := openT(t, t.TempDir(), testOptions(clk))
	defer q.Close()
	id1 := putT(t, q, "s@x", bodyOf(300, 1), "a@one.example", "b@two.example", "c@ONE.example")
	id2 := putT(t, q, "s@x", bodyOf(300, 2), "d@two.example")
	ds := claimAll(q)
	if len(ds) != 3 {
		t.Fatalf("%d deliveries, want 3", len(ds))
	}
	if ds[0].Destination != "one.example" || ds[0].ID != id1 || strings.Join(ds[0].Recipients, ",") != "a@one.example,c@ONE.example" {
		t.Errorf("first delivery %+v", ds[0])
	}
	if ds[1].Destination != "two.example" || ds[2].Destination != "two.example" || ds[1].ID == ds[2].ID {
		t.Errorf("deliveries not grouped by destination: %+v %+v", ds[1], ds[2])
	}
	_ = id2
	if again := claimAll(q); len(again) != 0 {
		t.Fatalf("leased work handed out twice: %d", len(again))
	}
	// Limit: Claim(n) hands out at most n.
	q2 := openT(t, t.TempDir(), testOptions(clk))
	defer q2.Close()
	for i := 0; i < 5; i++ {
		putT(t, q2, "s@x", []byte("x\n"), "a@x", "b@y")
	}
	total := 0
	for {
		got := q2.Claim(3)
		if len(got) > 3 {
			t.Fatalf("Claim(3) returned %d", len(got))
		}
		if len(got) == 0 {
			break
		}
		total += len(got)
	}
	if total != 10 {
		t.Fatalf("claimed %d in total, want 10", total)
	}
}

func TestRecordTransitions(t *testing.T) {
	clk := newFakeClock()
	dir := t.TempDir()
	opt := testOptions(clk)
	opt.DelayNotice = -1
	q := openT(t, dir, opt)
	id := putT(t, q, "s@x", bodyOf(500, 1), "ok@a.example", "temp@b.example", "perm@c.example")
	ctx := context.Background()
	for _, d := range claimAll(q) {
		var st mail.Status
		switch d.Destination {
		case "a.example":
			st = accepted
		case "b.example":
			st = tempFail
		case "c.example":
			st = permFail
		}
		if err := q.Record(ctx, d, results(d, st, "mx."+d.Destination)); err != nil {
			t.Fatal(err)
		}
	}
	det, err := q.Show(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]RecipientDetail{}
	for _, r := range det.Recipient {
		states[r.Address] = r
	}
	if s := states["ok@a.example"]; s.State != Delivered || s.Attempts != 1 || len(s.History) != 1 || s.History[0].Host != "mx.a.example" {
		t.Errorf("delivered: %+v", s)
	}
	tr := states["temp@b.example"]
	if tr.State != Pending || tr.Attempts != 1 || tr.NextAttempt.Sub(clk.Now()) < opt.Retry.Floor*3/4 {
		t.Errorf("deferred: %+v (retry %v)", tr, tr.NextAttempt.Sub(clk.Now()))
	}
	if s := states["perm@c.example"]; s.State != Failed || !s.Bounced || !strings.Contains(s.Final, "550 5.1.1") {
		t.Errorf("failed: %+v", s)
	}
	if det.State != RowDeferred || !strings.Contains(det.LastError, "mx.b.example said: 451 4.4.1") {
		t.Errorf("row: %+v", det.Row)
	}
	// One bounce was queued for the failed recipient.
	rows, _ := q.List(ctx)
	if len(rows) != 2 || rows[1].Sender != "" || rows[1].Pending[0] != "s@x" {
		t.Fatalf("want the original and a bounce to s@x, got %+v", rows)
	}
	// Nothing is due until the retry time; then only the deferred one.
	ds := claimAll(q)
	if len(ds) != 1 || ds[0].ID == id {
		t.Fatalf("claimed %v before the retry time", ds)
	}
	clk.Advance(tr.NextAttempt.Sub(clk.Now()))
	ds = claimAll(q)
	if len(ds) != 1 || ds[0].ID != id || ds[0].Recipients[0] != "temp@b.example" || ds[0].Attempts != 1 {
		t.Fatalf("after retry time: %+v", ds)
	}
	// State survives a reopen exactly.
	q.Close()
	q = openT(t, dir, opt)
	defer q.Close()
	det2, err := q.Show(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for i := range det.Recipient {
		a, b := det.Recipient[i], det2.Recipient[i]
		if a.State != b.State || a.Attempts != b.Attempts || !a.NextAttempt.Equal(b.NextAttempt) ||
			len(a.History) != len(b.History) || a.Final != b.Final || a.Bounced != b.Bounced || a.Destination != b.Destination {
			t.Errorf("after reopen %+v, before %+v", b, a)
		}
	}
	// Delivering the last one removes the message, durably.
	d := claimAll(q)
	if len(d) != 2 { // the deferred recipient (due now again after reopen) and the bounce
		t.Fatalf("after reopen claimed %d", len(d))
	}
	for _, x := range d {
		q.Record(ctx, x, results(x, accepted, "mx"))
	}
	if m := q.Metrics(); m.Messages != 0 {
		t.Fatalf("%d messages left", m.Messages)
	}
	q.Close()
	q = openT(t, dir, opt)
	if m := q.Metrics(); m.Messages != 0 {
		t.Fatalf("after reopen %d messages left", m.Messages)
	}
}

func TestDestinationBackoff(t *testing.T) {
	clk := newFakeClock()
	opt := testOptions(clk)
	opt.DestinationBackoff = Backoff{Floor: time.Minute, Cap: time.Hour}
	opt.Retry = Backoff{Floor: time.Second, Cap: time.Second}
	q := openT(t, t.TempDir(), opt)
	defer q.Close()
	ctx := context.Background()
	putT(t, q, "s@x", []byte("1\n"), "a@dead.example")
	ds := claimAll(q)
	q.Record(ctx, ds[0], results(ds[0], tempFail, "dead"))
	// New mail for the dead destination waits; mail for others goes.
	dead := putT(t, q, "s@x", []byte("2\n"), "b@dead.example")
	live := putT(t, q, "s@x", []byte("3\n"), "c@live.example")
	ds = claimAll(q)
	if len(ds) != 1 || ds[0].ID != live {
		t.Fatalf("claimed %+v, want only %s", ds, live)
	}
	clk.Advance(2 * time.Second) // past the recipient retry, not the destination's
	if ds := claimAll(q); len(ds) != 0 {
		t.Fatalf("destination backoff ignored: %+v", ds)
	}
	rows, _ := q.List(ctx)
	for _, r := range rows {
		if r.ID == dead && r.NextInSeconds < 50 {
			t.Errorf("list shows next attempt in %ds, want the destination's", r.NextInSeconds)
		}
	}
	clk.Advance(time.Minute)
	ds = claimAll(q)
	if len(ds) != 2 {
		t.Fatalf("after the destination's backoff claimed %d, want 2", len(ds))
	}
	// A second failure doubles the destination's wait.
	q.Record(ctx, ds[0], results(ds[0], tempFail, "dead"))
	clk.Advance(90 * time.Second)
	if got := claimAll(q); len(got) != 0 {
		t.Fatalf("second backoff too short: %+v", got)
	}
	// A success resets it and frees what waited at once.
	q.Record(ctx, ds[1], results(ds[1], accepted, "dead"))
	if got := claimAll(q); len(got) != 1 {
		t.Fatalf("after recovery claimed %d, want 1", len(got))
	}
}

func TestLifetimeExpiry(t *testing.T) {
	clk := newFakeClock()
	opt := testOptions(clk)
	opt.Lifetime = 24 * time.Hour
	opt.DelayNotice = -1
	q := openT(t, t.TempDir(), opt)
	defer q.Close()
	ctx := context.Background()
	id := putT(t, q, "alice@example.org", bodyOf(400, 3), "bob@slow.example")
	clk.Advance(23 * time.Hour)
	ds := claimAll(q)
	q.Record(ctx, ds[0], results(ds[0], tempFail, "mx.slow.example"))
	if det, _ := q.Show(ctx, id); det.Recipient[0].State != Pending {
		t.Fatalf("failed before the lifetime: %+v", det.Recipient[0])
	}
	clk.Advance(2 * time.Hour)
	ds = claimAll(q)
	if len(ds) != 1 {
		t.Fatalf("claimed %d", len(ds))
	}
	q.Record(ctx, ds[0], results(ds[0], tempFail, "mx.slow.example"))
	if _, err := q.Show(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired message still queued: %v", err)
	}
	rows, _ := q.List(ctx)
	if len(rows) != 1 || rows[0].Sender != "" || rows[0].Pending[0] != "alice@example.org" {
		t.Fatalf("want one bounce to alice, got %+v", rows)
	}
	b := bounceBody(t, q, rows[0].ID)
	for _, want := range []string{"too long", "Status: 5.4.7", "Diagnostic-Code: smtp; 451 4.4.1 connection refused", "Action: failed"} {
		if !strings.Contains(b, want) {
			t.Errorf("expiry bounce lacks %q:\n%s", want, b)
		}
	}
}

// bounceBody returns the body of queued message id.
func bounceBody(t *testing.T, q *Queue, id string) string {
	t.Helper()
	q.mu.Lock()
	m := q.msgs.get(id)
	q.mu.Unlock()
	if m == nil {
		t.Fatalf("%s not queued", id)
	}
	rc, err := q.openBody(m)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := rc.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return sb.String()
}

func TestDelayNoticeOnce(t *testing.T) {
	clk := newFakeClock()
	opt := testOptions(clk)
	opt.DelayNotice = 4 * time.Hour
	opt.Retry = Backoff{Floor: time.Hour, Cap: time.Hour}
	opt.DestinationBackoff = Backoff{Floor: time.Second, Cap: time.Second}
	q := openT(t, t.TempDir(), opt)
	defer q.Close()
	ctx := context.Background()
	id := putT(t, q, "alice@example.org", bodyOf(400, 4), "bob@slow.example", "carol@fast.example")
	notices := func() int {
		rows, _ := q.List(ctx)
		n := 0
		for _, r := range rows {
			if r.Sender == "" {
				n++
			}
		}
		return n
	}
	for i := 0; i < 8; i++ {
		for _, d := range claimAll(q) {
			if d.ID != id {
				continue
			}
			st := tempFail
			if d.Destination == "fast.example" {
				st = accepted
			}
			q.Record(ctx, d, results(d, st, "mx."+d.Destination))
		}
		if want := 0; i < 4 && notices() != want {
			t.Fatalf("hour %d: %d notices, want none yet", i, notices())
		}
		clk.Advance(time.Hour)
	}
	if n := notices(); n != 1 {
		t.Fatalf("%d delay notices, want exactly 1", n)
	}
	det, _ := q.Show(ctx, id)
	if !det.DelayNotified {
		t.Fatal("delay notice not recorded")
	}
}

func TestBounceRules(t *testing.T) {
	clk := newFakeClock()
	opt := testOptions(clk)
	opt.Postmaster = "postmaster@hub.example.net"
	q := openT(t, t.TempDir(), opt)
	defer q.Close()
	ctx := context.Background()
	fail := func(id string) {
		t.Helper()
		for _, d := range claimAll(q) {
			if d.ID == id {
				q.Record(ctx, d, results(d, permFail, "mx"))
			}
		}
	}
	find := func(sender string) []Row {
		rows, _ := q.List(ctx)
		var out []Row
		for _, r := range rows {
			if r.Sender == sender {
				out = append(out, r)
			}
		}
		return out
	}
	// A failed bounce goes to the postmaster from #@[].
	b := putT(t, q, "", bodyOf(300, 5), "gone@example.org")
	fail(b)
	dbl := find(mail.DoubleBounceSender)
	if len(dbl) != 1 || dbl[0].Pending[0] != "postmaster@hub.example.net" {
		t.Fatalf("double bounce: %+v", dbl)
	}
	// A failed double bounce is dropped: nothing new is queued.
	fail(dbl[0].ID)
	if rows, _ := q.List(ctx); len(rows) != 0 {
		t.Fatalf("after a failed double bounce the queue holds %+v", rows)
	}
	// Postmaster "@" discards double bounces.
	q.opt.Postmaster = "@"
	b = putT(t, q, "", bodyOf(300, 6), "gone@example.org")
	fail(b)
	if rows, _ := q.List(ctx); len(rows) != 0 {
		t.Fatalf("with postmaster @ the queue holds %+v", rows)
	}
	// VERP: the bounce goes to pre@host; delivery uses the expanded sender.
	v := putT(t, q, "owner-@list.example-@[]", bodyOf(300, 7), "user@example.org")
	ds := claimAll(q)
	if got := ds[0].SenderFor("user@example.org"); got != "owner-user=example.org@list.example" {
		t.Fatalf("SenderFor = %q", got)
	}
	q.Record(ctx, ds[0], results(ds[0], permFail, "mx"))
	rows := find("")
	if len(rows) != 1 || rows[0].Pending[0] != "owner-@list.example" {
		t.Fatalf("VERP bounce: %+v", rows)
	}
	_ = v
}

func TestOneBounceForSeveralFailures(t *testing.T) {
	clk := newFakeClock()
	q := openT(t, t.TempDir(), testOptions(clk))
	defer q.Close()
	ctx := context.Background()
	putT(t, q, "alice@example.org", bodyOf(300, 8), "a@one.example", "b@two.example", "c@three.example")
	ds := claimAll(q)
	if len(ds) != 3 {
		t.Fatal(len(ds))
	}
	for _, d := range ds {
		q.Record(ctx, d, results(d, permFail, "mx."+d.Destination))
	}
	rows, _ := q.List(ctx)
	if len(rows) != 1 {
		t.Fatalf("want a single bounce for three failures, got %+v", rows)
	}
	body := bounceBody(t, q, rows[0].ID)
	if n := strings.Count(body, "Final-Recipient:"); n != 3 {
		t.Errorf("bounce reports %d recipients, want 3", n)
	}
}

func TestLeaseExpiry(t *testing.T) {
	clk := newFakeClock()
	opt := testOptions(clk)
	opt.LeaseTime = 10 * time.Minute
	q := openT(t, t.TempDir(), opt)
	defer q.Close()
	ctx := context.Background()
	id := putT(t, q, "s@x", []byte("x\n"), "r@y")
	first := claimAll(q)
	if len(first) != 1 {
		t.Fatal(len(first))
	}
	clk.Advance(9 * time.Minute)
	if got := claimAll(q); len(got) != 0 {
		t.Fatal("handed out again within the lease")
	}
	clk.Advance(2 * time.Minute)
	second := claimAll(q)
	if len(second) != 1 || second[0].ID != id {
		t.Fatalf("not handed out after the lease: %+v", second)
	}
	// The stale holder's result still counts (the mail did go), and the
	// new holder's later result changes nothing.
	if err := q.Record(ctx, first[0], results(first[0], accepted, "mx")); err != nil {
		t.Fatal(err)
	}
	if err := q.Record(ctx, second[0], results(second[0], tempFail, "mx")); err != nil {
		t.Fatal(err)
	}
	if m := q.Metrics(); m.Messages != 0 {
		t.Fatalf("%d messages left", m.Messages)
	}
}

func TestRecordWithoutResultsReturnsWork(t *testing.T) {
	q := openT(t, t.TempDir(), testOptions(newFakeClock()))
	defer q.Close()
	putT(t, q, "s@x", []byte("x\n"), "a@y", "b@y")
	ds := claimAll(q)
	q.Record(context.Background(), ds[0], []Result{{Recipient: "a@y", Status: accepted}})
	again := claimAll(q)
	if len(again) != 1 || strings.Join(again[0].Recipients, ",") != "b@y" || again[0].Attempts != 0 {
		t.Fatalf("unrecorded recipient not returned untouched: %+v", again)
	}
}

func TestWaitWakes(t *testing.T) {
	testpeer.CheckGoroutines(t, 10*time.Second)
	q := openT(t, t.TempDir(), Options{Logger: quietLogger(), Passive: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- q.Wait(ctx) }()
	putT(t, q, "s@x", []byte("x\n"), "r@y")
	if err := <-done; err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if ds := q.Claim(10); len(ds) != 1 {
		t.Fatalf("claimed %d", len(ds))
	}
	// Nothing due: Wait blocks until the context ends or the queue closes.
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if err := q.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with nothing due: %v", err)
	}
	go func() { done <- q.Wait(ctx) }()
	q.Close()
	if err := <-done; err == nil {
		t.Fatal("Wait returned nil after Close")
	}
}

// TestBounceRetriedAfterFailure: a permanent failure whose bounce could not
// be queued keeps its bounce pending, durably, until one is queued.
func TestBounceRetriedAfterFailure(t *testing.T) {
	dir := t.TempDir()
	ffs := &faultFS{inner: osFS{}}
	clk := newFakeClock()
	opt := testOptions(clk)
	opt.fs = ffs
	q := openT(t, dir, opt)
	ctx := context.Background()
	id := putT(t, q, "alice@example.org", bodyOf(300, 1), "bob@example.com")
	ds := claimAll(q)
	syncs := 0
	var mu sync.Mutex
	ffs.set(func(op, path string) error {
		mu.Lock()
		defer mu.Unlock()
		if op == "datasync" {
			syncs++
			if syncs == 2 { // the first flush records the failure; the second carries the bounce
				return unix.EIO
			}
		}
		return nil
	})
	if err := q.Record(ctx, ds[0], results(ds[0], permFail, "mx")); err != nil {
		t.Fatal(err)
	}
	ffs.set(nil)
	rows, _ := q.List(ctx)
	if len(rows) != 1 || rows[0].ID != id {
		t.Fatalf("bounce queued despite the fault, or message gone: %+v", rows)
	}
	det, _ := q.Show(ctx, id)
	if det.Recipient[0].State != Failed || det.Recipient[0].Bounced {
		t.Fatalf("recipient %+v", det.Recipient[0])
	}
	q.Close()
	q = openT(t, dir, opt)
	defer q.Close()
	q.maintain(ctx, true) // what the daemon's maintenance does each minute
	rows, _ = q.List(ctx)
	if len(rows) != 1 || rows[0].Sender != "" || rows[0].Pending[0] != "alice@example.org" {
		t.Fatalf("after the retry: %+v", rows)
	}
	q.maintain(ctx, true)
	if rows, _ := q.List(ctx); len(rows) != 1 {
		t.Fatalf("bounce sent twice: %+v", rows)
	}
}
