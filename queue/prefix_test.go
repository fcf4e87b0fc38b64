package queue

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
)

func TestPrefixRecord(t *testing.T) {
	now := time.Unix(1741964966, 0)
	env := mail.Envelope{Sender: "a@b", Recipients: []string{"c@d"}}
	for _, ext := range []bool{false, true} {
		plain := bodyRef{external: ext, size: 10, crc: 7}
		// Without a prefix the record is byte for byte the old format.
		old := encodeMessage(nil, "01jpak7y3g000", now, &env, plain)
		if k := old[len(old)-4-1-1]; k > 1 { // kind, size (one byte), CRC
			t.Fatalf("body kind %d for a record without prefix", k)
		}
		mm, err := decodeMessage(old)
		if err != nil || mm.body != plain {
			t.Fatalf("old record: %v %+v", err, mm.body)
		}
		withP := plain
		withP.prefix = "DKIM-Signature: v=1;\n b=x\n"
		mm, err = decodeMessage(encodeMessage(nil, "01jpak7y3g000", now, &env, withP))
		if err != nil || mm.body != withP {
			t.Fatalf("prefixed record: %v %+v", err, mm.body)
		}
		m := &message{id: "01jpak7y3g000", received: now, sender: "s", body: withP,
			rcpts: []rcpt{{addr: "x@y", state: Pending, next: now, dest: "y"}}}
		m2, err := decodeSnapshot(encodeSnapshot(nil, m))
		if err != nil || m2.body != withP || m2.rcpts[0].addr != "x@y" {
			t.Fatalf("prefixed snapshot: %v %+v", err, m2)
		}
	}
	// A prefix over the limit in a record is malformed, not allocated.
	big := bodyRef{size: 1, prefix: strings.Repeat("x", MaxPrefixBytes+1)}
	if _, err := decodeMessage(encodeMessage(nil, "01jpak7y3g000", now, &env, big)); err == nil {
		t.Error("an oversized prefix decoded")
	}
}

func TestPrefixDelivery(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	opt := testOptions(clk)
	opt.SegmentSize = 8 << 10
	opt.InlineMax = 2000
	q := openT(t, dir, opt)
	ctx := context.Background()
	prefix := []byte("DKIM-Signature: v=1; a=ed25519-sha256; d=example.net;\n\ts=s1; b=abc\n")
	want := map[string][]byte{}
	for i, size := range []int{700, 5000} { // inline, external
		body := bodyOf(size, i)
		w, err := q.NewMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(body)
		if err := w.SetPrefix(bytes.Repeat([]byte("x"), MaxPrefixBytes+1)); !errors.Is(err, ErrPrefixTooLarge) {
			t.Fatalf("oversized prefix: %v", err)
		}
		if err := w.SetPrefix(prefix); err != nil {
			t.Fatal(err)
		}
		id, err := w.Commit(ctx, envelope("s@x", "a@one.example"))
		if err != nil {
			t.Fatal(err)
		}
		want[id] = append(append([]byte{}, prefix...), body...)
	}
	plain := putT(t, q, "s@x", bodyOf(300, 9), "a@one.example")
	want[plain] = bodyOf(300, 9)
	// Filler that compaction moves past, so the kept messages are
	// rewritten as snapshots.
	for i := 0; i < 60; i++ {
		putT(t, q, "s@x", bodyOf(700, 100+i), "b@two.example")
	}
	check := func(q *Queue, what string) {
		t.Helper()
		n := 0
		for _, d := range claimAll(q) {
			if d.Destination != "one.example" {
				q.Record(ctx, d, results(d, accepted, "mx"))
				continue
			}
			got := readAll(t, d)
			if !bytes.Equal(got, want[d.ID]) || d.Size != int64(len(want[d.ID])) {
				t.Fatalf("%s: %s: size %d, read %q, want %q", what, d.ID, d.Size, got[:min(len(got), 90)], want[d.ID][:90])
			}
			q.Record(ctx, d, results(d, tempFail, "mx"))
			n++
		}
		if n != len(want) {
			t.Fatalf("%s: %d deliveries, want %d", what, n, len(want))
		}
		clk.Advance(3 * time.Hour)
	}
	check(q, "committed")
	q.Close()
	q = openT(t, dir, opt)
	check(q, "replayed")
	for i := 0; i < 5; i++ {
		q.maintain(ctx, false)
	}
	check(q, "compacted")
	q.Close()
	q = openT(t, dir, opt)
	defer q.Close()
	check(q, "compacted and replayed")
}

// TestPrefixShown: `queue show` (and a bounce, through the same reader)
// sees the message as it is delivered, prefix included.
func TestPrefixShown(t *testing.T) {
	q := openT(t, t.TempDir(), testOptions(newFakeClock()))
	defer q.Close()
	ctx := context.Background()
	prefix := []byte("Received: from app17 by hub (rewritten)\n")
	body := []byte("Subject: hi\n\nbody\n")
	w, err := q.NewMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(body)
	if err := w.SetPrefix(prefix); err != nil {
		t.Fatal(err)
	}
	id, err := w.Commit(ctx, envelope("s@x", "a@one.example"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := q.Show(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if d.Size != int64(len(prefix)+len(body)) || !bytes.HasPrefix([]byte(d.Header), prefix) {
		t.Fatalf("show: size %d, header %q", d.Size, d.Header)
	}
}
