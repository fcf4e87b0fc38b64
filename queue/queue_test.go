package queue

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

func TestPutReopenIntact(t *testing.T) {
	testpeer.CheckGoroutines(t, 10*time.Second)
	dir := t.TempDir()
	clk := newFakeClock()
	opt := testOptions(clk)
	opt.InlineMax = 4096
	q := openT(t, dir, opt)
	want := map[string][]byte{}
	for i, n := range []int{0, 1, 100, 2048, 4096, 4097, 100000} {
		body := bodyOf(n, i)
		if n == 0 {
			body = nil
		}
		id := putT(t, q, "alice@example.org", body, "bob@example.com", "carol@example.net")
		want[id] = body
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openT(t, dir, opt)
	defer q.Close()
	ds := claimAll(q)
	got := byID(ds)
	if len(got) != len(want) {
		t.Fatalf("after reopen %d messages, want %d", len(got), len(want))
	}
	for id, body := range want {
		dd := got[id]
		if len(dd) != 2 {
			t.Fatalf("%s: %d deliveries, want 2 (one per domain)", id, len(dd))
		}
		for _, d := range dd {
			if b := readAll(t, d); !bytes.Equal(b, body) {
				t.Errorf("%s: body differs (%d bytes, want %d)", id, len(b), len(body))
			}
			if d.Sender != "alice@example.org" || len(d.Recipients) != 1 || d.Size != int64(len(body)) {
				t.Errorf("%s: delivery %+v", id, d)
			}
		}
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	opt := testOptions(newFakeClock())
	opt.InlineMax = 1024
	q := openT(t, dir, opt)
	defer q.Close()
	for _, n := range []int{10, 5000} {
		w, err := q.NewMessage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		w.Write(bodyOf(n, n))
		if err := w.Abort(); err != nil {
			t.Fatal(err)
		}
		w.Abort()
		if _, err := w.Commit(context.Background(), mail.Envelope{Recipients: []string{"a@b"}}); err == nil {
			t.Fatal("Commit after Abort succeeded")
		}
	}
	rows, _ := q.List(context.Background())
	if len(rows) != 0 {
		t.Fatalf("aborted messages visible: %v", rows)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "body")); len(ents) != 0 {
		t.Fatalf("aborted body files left: %v", ents)
	}
}

func TestEnvelopeChecks(t *testing.T) {
	q := openT(t, t.TempDir(), testOptions(newFakeClock()))
	defer q.Close()
	for _, env := range []mail.Envelope{
		{Sender: "a@b"},
		{Sender: "a\x00b", Recipients: []string{"c@d"}},
		{Sender: "a@b", Recipients: []string{string(make([]byte, 2000))}},
	} {
		_, err := q.Put(context.Background(), env, bytes.NewReader([]byte("x\n")))
		if err == nil || !mail.StatusOf(err).IsPermanent() {
			t.Errorf("Put(%q): %v, want a permanent status", env.Sender, err)
		}
	}
}

func TestConcurrentPutsShareFlushes(t *testing.T) {
	testpeer.CheckGoroutines(t, 10*time.Second)
	dir := t.TempDir()
	opt := testOptions(newFakeClock())
	q := openT(t, dir, opt)
	const n = 64 * 8
	ids := make([]string, n)
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 64 {
				ids[i] = putT(t, q, "s@x", bodyOf(2048, i), "r@y")
			}
		}()
	}
	wg.Wait()
	m := q.Metrics()
	if m.Messages != n {
		t.Fatalf("%d messages, want %d", m.Messages, n)
	}
	t.Logf("%d messages in %d flushes", n, m.Batches)
	if m.Batches >= n {
		t.Errorf("no group commit: %d flushes for %d messages", m.Batches, n)
	}
	q.Close()
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] || !ValidID(id) {
			t.Fatalf("bad or duplicate ID %q", id)
		}
		seen[id] = true
	}
	q = openT(t, dir, opt)
	defer q.Close()
	if got := q.Metrics().Messages; got != n {
		t.Fatalf("after reopen %d messages, want %d", got, n)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	q := openT(t, dir, testOptions(newFakeClock()))
	if _, err := Open(dir, testOptions(newFakeClock())); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	q.Close()
	q = openT(t, dir, testOptions(newFakeClock()))
	q.Close()
}

func TestQueueErrorIsTemporary(t *testing.T) {
	err := error(&Error{Op: "commit", Err: os.ErrPermission})
	if st := mail.StatusOf(err); !st.IsTemporary() || st != mail.StatusQueueTrouble {
		t.Fatalf("StatusOf = %+v", st)
	}
	if !errors.Is(err, os.ErrPermission) || errors.Unwrap(err) != os.ErrPermission {
		t.Fatal("cause not reachable")
	}
}
