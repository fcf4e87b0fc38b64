package queue

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/qmgate/qmgate/mail"
)

func TestLowSpaceRefusesNewMail(t *testing.T) {
	free := int64(1 << 30)
	old := statfsFree
	statfsFree = func(string) (int64, error) { return free, nil }
	defer func() { statfsFree = old }()

	q, err := Open(t.TempDir(), Options{MinFreeBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx := context.Background()
	env := mail.Envelope{Sender: "s@x.test", Recipients: []string{"r@y.test"}}
	if _, err := q.Put(ctx, env, strings.NewReader("x\n")); err != nil {
		t.Fatalf("with room: %v", err)
	}
	free = 1 << 19
	q.space.at.Store(0) // forget the cached answer
	_, err = q.Put(ctx, env, strings.NewReader("x\n"))
	if !errors.Is(err, ErrLowSpace) || !mail.StatusOf(err).IsTemporary() {
		t.Fatalf("below the reserve: %v", err)
	}
	// Deliveries and records still work below the reserve.
	ds := q.Claim(10)
	if len(ds) != 1 {
		t.Fatalf("claim: %d", len(ds))
	}
	if err := q.Record(ctx, ds[0], []Result{{Recipient: "r@y.test", Status: mail.OK("done")}}); err != nil {
		t.Fatalf("record below the reserve: %v", err)
	}
	free = 1 << 30
	q.space.at.Store(0)
	if _, err := q.Put(ctx, env, strings.NewReader("x\n")); err != nil {
		t.Fatalf("after space returned: %v", err)
	}
}

func TestNoReserve(t *testing.T) {
	old := statfsFree
	statfsFree = func(string) (int64, error) { return 0, nil }
	defer func() { statfsFree = old }()
	q, err := Open(t.TempDir(), Options{MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Put(context.Background(), mail.Envelope{Recipients: []string{"r@y.test"}}, strings.NewReader("x\n")); err != nil {
		t.Fatal(err)
	}
}

// TestReserveCountsMessagesBeingWritten: messages that all start while
// there is room cannot together eat the reserve. The file system here
// answers as if nothing were ever written (statfs lags, or its answer is
// cached), so only the writers' own count stops them: with 1 MB above the
// reserve, twelve 300 kB messages written side by side get about three
// through and the rest refused with a temporary error, instead of all
// twelve (3.6 MB, most of the reserve) accepted.
func TestReserveCountsMessagesBeingWritten(t *testing.T) {
	const reserve, room, size, writers = 4 << 20, 1 << 20, 300 << 10, 12
	old := statfsFree
	statfsFree = func(string) (int64, error) { return reserve + room, nil }
	defer func() { statfsFree = old }()
	q, err := Open(t.TempDir(), Options{MinFreeBytes: reserve})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx := context.Background()
	var ws []*Writer
	for range writers {
		w, err := q.NewMessage(ctx)
		if err != nil {
			t.Fatalf("start with room: %v", err)
		}
		ws = append(ws, w)
	}
	chunk := strings.Repeat("x", 1<<10) + "\n"
	for written := 0; written < size; written += len(chunk) {
		for _, w := range ws {
			w.Write([]byte(chunk))
		}
	}
	var accepted int64
	refused := 0
	env := mail.Envelope{Sender: "s@x.test", Recipients: []string{"r@y.test"}}
	for _, w := range ws {
		n := w.Size()
		if _, err := w.Commit(ctx, env); err != nil {
			if !errors.Is(err, ErrLowSpace) || !mail.StatusOf(err).IsTemporary() {
				t.Errorf("refused with %v, want a temporary low-space error", err)
			}
			refused++
			continue
		}
		accepted += n
	}
	if accepted > room || refused == 0 {
		t.Fatalf("accepted %d bytes with %d above the reserve (%d messages refused)", accepted, room, refused)
	}
	// The refused messages' bytes are given back; the accepted ones count
	// until statfs sees them.
	if got := q.space.written.Load(); got != accepted {
		t.Fatalf("counted %d body bytes, want the %d accepted", got, accepted)
	}
}
