package queue

import (
	"context"
	"testing"
	"time"
)

// TestAttemptTLSPolicy: the TLS policy of an attempt is kept with it, comes
// back in Show apart from the route, and survives a reopen (replay) of the
// journal; an attempt without one shows none.
func TestAttemptTLSPolicy(t *testing.T) {
	clk := newFakeClock()
	dir := t.TempDir()
	q := openT(t, dir, testOptions(clk))
	ctx := context.Background()
	id := putT(t, q, "s@x", []byte("a\n"), "r@sts.example")
	ds := claimAll(q)
	rs := results(ds[0], tempFail, "mx1.sts.example")
	rs[0].Route, rs[0].TLSPolicy = "mx", "mta-sts-enforce"
	if err := q.Record(ctx, ds[0], rs); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	ds = claimAll(q)
	rs = results(ds[0], tempFail, "mx1.sts.example")
	rs[0].Route = "mx"
	if err := q.Record(ctx, ds[0], rs); err != nil {
		t.Fatal(err)
	}
	check := func(q *Queue) {
		t.Helper()
		det, err := q.Show(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		h := det.Recipient[0].History
		if len(h) != 2 || h[0].Route != "mx" || h[0].TLSPolicy != "mta-sts-enforce" || h[1].Route != "mx" || h[1].TLSPolicy != "" {
			t.Fatalf("history %+v", h)
		}
	}
	check(q)
	q.Close()
	q = openT(t, dir, testOptions(clk))
	defer q.Close()
	check(q)
}
