package queue

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestHoldReleaseRemoveFlush(t *testing.T) {
	clk := newFakeClock()
	dir := t.TempDir()
	opt := testOptions(clk)
	q := openT(t, dir, opt)
	ctx := context.Background()
	a := putT(t, q, "s@x", []byte("a\n"), "r@one.example")
	b := putT(t, q, "s@x", []byte("b\n"), "r@two.example")
	c := putT(t, q, "s@x", []byte("c\n"), "r@three.example")

	if err := q.Hold(ctx, a, "0000000000000", "junk id"); err == nil {
		t.Fatal("Hold of unknown IDs succeeded")
	} else if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "0000000000000") || !strings.Contains(err.Error(), "junk?id") {
		t.Fatalf("Hold error: %v", err)
	}
	if err := q.Remove(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := q.Remove(ctx, c); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove: %v", err)
	}
	ds := claimAll(q)
	if len(ds) != 1 || ds[0].ID != b {
		t.Fatalf("claimed %+v, want only %s (a held, c removed)", ds, b)
	}
	// Held and removed state survive a reopen.
	q.Close()
	q = openT(t, dir, opt)
	defer q.Close()
	rows, _ := q.List(ctx)
	if len(rows) != 2 || rows[0].ID != a || rows[0].State != RowHeld || rows[1].ID != b {
		t.Fatalf("after reopen: %+v", rows)
	}
	ds = claimAll(q)
	if len(ds) != 1 || ds[0].ID != b {
		t.Fatalf("after reopen claimed %+v", ds)
	}
	// Flush makes a deferred message due now, destination backoff and all.
	q.Record(ctx, ds[0], results(ds[0], tempFail, "mx"))
	if got := claimAll(q); len(got) != 0 {
		t.Fatal("deferred message due at once")
	}
	if err := q.Flush(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got := claimAll(q); len(got) != 1 || got[0].ID != b {
		t.Fatalf("after Flush(b) claimed %+v", got)
	}
	if err := q.Release(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got := claimAll(q); len(got) != 1 || got[0].ID != a {
		t.Fatalf("after Release claimed %+v", got)
	}
	clk.Advance(time.Hour)
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestFlushAll(t *testing.T) {
	clk := newFakeClock()
	q := openT(t, t.TempDir(), testOptions(clk))
	defer q.Close()
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		putT(t, q, "s@x", []byte("a\n"), "r@dead.example")
	}
	for _, d := range claimAll(q) {
		q.Record(ctx, d, results(d, tempFail, "mx"))
	}
	if got := claimAll(q); len(got) != 0 {
		t.Fatal("due at once")
	}
	q.Flush(ctx)
	if got := claimAll(q); len(got) != 3 {
		t.Fatalf("after Flush claimed %d, want 3", len(got))
	}
}

func TestListStatShowRender(t *testing.T) {
	clk := newFakeClock()
	q := openT(t, t.TempDir(), testOptions(clk))
	defer q.Close()
	ctx := context.Background()
	a := putT(t, q, "alice@example.org", bodyOf(2000, 1), "bob@example.com", "carol@example.com", "dave@example.net")
	clk.Advance(30 * time.Minute)
	putT(t, q, "", bodyOf(100, 2), "eve@example.com")
	for _, d := range claimAll(q) {
		if d.ID == a && d.Destination == "example.com" {
			q.Record(ctx, d, []Result{{Recipient: "bob@example.com", Status: tempFail, Route: "smtp://mx", Host: "mx.example.com"},
				{Recipient: "carol@example.com", Status: accepted, Host: "mx.example.com"}})
		}
	}
	rows, err := q.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("list: %+v", rows)
	}
	r := rows[0]
	if r.ID != a || r.AgeSeconds != 1800 || r.Size != 2000 || r.State != RowActive || r.Sender != "alice@example.org" || len(r.Pending) != 2 {
		t.Errorf("row %+v", r)
	}
	if !strings.Contains(r.LastError, "mx.example.com said: 451 4.4.1 connection refused") {
		t.Errorf("row lacks the last error: %+v", r)
	}
	if rows[1].Sender != "" || rows[1].LastError != "" {
		t.Errorf("bounce row %+v", rows[1])
	}
	// Each pending recipient has its own last error: dave was not tried.
	if len(r.PendingErrors) != 2 || !strings.Contains(r.PendingErrors[0], "451 4.4.1 connection refused") || r.PendingErrors[1] != "" {
		t.Errorf("per-recipient errors %q of %q", r.PendingErrors, r.Pending)
	}

	st, _ := q.Stat(ctx)
	if st.Messages != 2 || st.Recipients.Pending != 3 || st.Recipients.Delivered != 1 || st.OldestID != a || st.OldestAgeSeconds != 1800 {
		t.Errorf("stat %+v", st)
	}
	if len(st.Domains) != 2 || st.Domains[0].Domain != "example.com" || st.Domains[0].Total != 2 ||
		st.Domains[0].Buckets[0] != 1 || st.Domains[0].Buckets[3] != 1 {
		t.Errorf("shape %+v", st.Domains)
	}
	if st.Total.Domain != "TOTAL" || len(st.Total.Buckets) != len(ShapeBucketMinutes)+1 {
		t.Errorf("stat total %+v", st.Total)
	}
	if len(st.Destinations) != 2 || st.Destinations[0].Destination != "example.com" || st.Destinations[0].Total != 2 ||
		st.Destinations[1].Total != 1 {
		t.Errorf("destinations %+v", st.Destinations)
	}
	// Next hop health comes from the daemon; without one it is not known.
	if st.Daemon || len(st.NextHops) != 0 {
		t.Errorf("next hops without a daemon: %v %+v", st.Daemon, st.NextHops)
	}
	q.SetNextHops(func() []NextHop {
		return []NextHop{{Host: "smtp://a", Up: false, Failures: 2, LastError: "connection refused"}}
	})
	if st, _ := q.Stat(ctx); !st.Daemon || len(st.NextHops) != 1 || st.NextHops[0].LastError != "connection refused" {
		t.Errorf("next hops from the daemon: %v %+v", st.Daemon, st.NextHops)
	}

	det, err := q.Show(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(det.Header, "Received: from test\n") || strings.Contains(det.Header, "\n\n") {
		t.Errorf("header %q", det.Header)
	}
	if d := det.Recipient[0]; d.Address != "bob@example.com" || d.State != Pending || len(d.History) != 1 ||
		d.History[0].Route != "smtp://mx" || d.History[0].Host != "mx.example.com" || det.Recipient[1].State != Delivered {
		t.Errorf("show %+v", det.Recipient)
	}
	if _, err := q.Show(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Show unknown: %v", err)
	}
}

func TestIDs(t *testing.T) {
	var g idGen
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	prev := ""
	for i := 0; i < 100000; i++ {
		id := g.next(now) // one millisecond: the sequence overflows into the next
		if len(id) != IDLen || !ValidID(id) || id <= prev {
			t.Fatalf("ID %q after %q", id, prev)
		}
		prev = id
	}
	// A clock that steps back never repeats an ID.
	id := g.next(now.Add(-time.Hour))
	if id <= prev {
		t.Fatalf("ID went back: %q after %q", id, prev)
	}
	var g2 idGen
	g2.observe(id)
	if id2 := g2.next(now.Add(-time.Hour)); id2 <= id {
		t.Fatalf("observe did not seed: %q after %q", id2, id)
	}
	if ts, ok := IDTime(g.next(now.Add(time.Hour))); !ok || ts.Before(now) {
		t.Fatalf("IDTime %v", ts)
	}
	for _, bad := range []string{"", "0123456789abu", "0123456789ab", "../../etc/pas"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q)", bad)
		}
	}
}

// TestFlushDoesNotPunish: an attempt a flush forces during an outage does
// not lengthen the wait. The retry schedule is 1m, 2m, 4m...; a message
// that failed once waits 1m; a flush 10s later fails again, and the next
// attempt is still the one at 1m (not 2m after the flush), after which the
// wait is 2m (not 4m).
func TestFlushDoesNotPunish(t *testing.T) {
	clk := newFakeClock()
	opt := testOptions(clk)
	opt.Retry = Backoff{Floor: time.Minute, Cap: time.Hour}
	q := openT(t, t.TempDir(), opt)
	defer q.Close()
	ctx := context.Background()
	id := putT(t, q, "s@x", []byte("a\n"), "r@dead.example")
	fail := func() {
		t.Helper()
		ds := claimAll(q)
		if len(ds) != 1 {
			t.Fatalf("claimed %d deliveries, want 1", len(ds))
		}
		q.Record(ctx, ds[0], results(ds[0], tempFail, "mx"))
	}
	next := func() time.Duration {
		t.Helper()
		d, err := q.Show(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return d.Recipient[0].NextAttempt.Sub(clk.Now())
	}
	t0 := clk.Now()
	fail()
	if got := next(); got != time.Minute {
		t.Fatalf("after the first failure the wait is %v, want 1m", got)
	}
	clk.Advance(10 * time.Second)
	q.Flush(ctx, id)
	fail()
	if got := clk.Now().Add(next()); !got.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after a flushed failure the next attempt is at +%v, want +1m", got.Sub(t0))
	}
	clk.Advance(50 * time.Second)
	fail()
	if got := next(); got != 2*time.Minute {
		t.Fatalf("after the second scheduled failure the wait is %v, want 2m", got)
	}
}
