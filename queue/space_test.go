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
