package dotqmail

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/qmgate/qmgate/mail"
)

// recorder is a Target that records what it is asked to do and fails or
// stops where told.
type recorder struct {
	done []string
	fail map[string]error
}

func (r *recorder) Deliver(ctx context.Context, p *Plan, d Delivery) error {
	what := d.Kind.String() + " " + d.Rel + d.Command
	r.done = append(r.done, what)
	return r.fail[what]
}

func (r *recorder) Forward(ctx context.Context, p *Plan, sender string, addrs []string) error {
	r.done = append(r.done, "forward from "+sender+" to "+strings.Join(addrs, ","))
	return r.fail["forward"]
}

func TestRunOrder(t *testing.T) {
	p := &Plan{ForwardSender: "list-owner@example.com", Deliveries: []Delivery{
		{Kind: Forward, Address: "a@example.net"},
		{Kind: Maildir, Rel: "Maildir-x"},
		{Kind: Program, Command: "prog"},
		{Kind: Forward, Address: "b@example.net"},
		{Kind: Mbox, Rel: "mbox"},
	}}
	tmp := mail.Temp("4.3.0", "disk full")
	for _, tc := range []struct {
		name string
		fail map[string]error
		want []string
		err  error
	}{
		{"all", nil, []string{"maildir Maildir-x", "program prog", "mbox mbox", "forward from list-owner@example.com to a@example.net,b@example.net"}, nil},
		{"stop", map[string]error{"program prog": ErrStop}, []string{"maildir Maildir-x", "program prog", "forward from list-owner@example.com to a@example.net"}, nil},
		{"fail", map[string]error{"program prog": tmp}, []string{"maildir Maildir-x", "program prog"}, tmp},
		{"forward fails", map[string]error{"forward": tmp}, []string{"maildir Maildir-x", "program prog", "mbox mbox", "forward from list-owner@example.com to a@example.net,b@example.net"}, tmp},
	} {
		r := &recorder{fail: tc.fail}
		err := p.Run(context.Background(), r)
		if !reflect.DeepEqual(r.done, tc.want) || !errors.Is(err, tc.err) {
			t.Errorf("%s: did %q, error %v; want %q, %v", tc.name, r.done, err, tc.want, tc.err)
		}
	}
	// Comments only: nothing to do, and success.
	r := &recorder{}
	if err := (&Plan{}).Run(context.Background(), r); err != nil || len(r.done) != 0 {
		t.Errorf("empty plan: %v %v", r.done, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Run(ctx, &recorder{}); !mail.StatusOf(err).IsTemporary() || err == nil {
		t.Errorf("cancelled: %v", err)
	}
}

func TestLoopCheck(t *testing.T) {
	p := &Plan{Recipient: "joe-lists@example.com"}
	for _, tc := range []struct {
		msg     string
		looping bool
	}{
		{"Delivered-To: joe-lists@example.com\nSubject: x\n\nbody\n", true},
		{"Subject: x\nDelivered-To: joe-lists@example.com\n\nbody\n", true},
		{"Delivered-To: joe-other@example.com\n\nDelivered-To: joe-lists@example.com\n", false}, // in the body
		{"Delivered-To: JOE-lists@example.com\n\n", false},                                      // qmail compares exactly
		{"Delivered-To: joe-lists@example.com", false},                                          // no newline: not the same line
		{"", false},
		{"Delivered-To: joe-lists@example.com\r\n\r\n", true},
	} {
		err := p.LoopCheck(strings.NewReader(tc.msg), 0)
		if (err != nil) != tc.looping {
			t.Errorf("%q: %v", tc.msg, err)
		}
		if err != nil && mail.StatusOf(err) != StatusLooping {
			t.Errorf("%q: status %v", tc.msg, err)
		}
	}
	// Bounded: a header longer than the limit is not read to its end.
	long := "X: " + strings.Repeat("a", 100) + "\nDelivered-To: joe-lists@example.com\n\n"
	if err := p.LoopCheck(strings.NewReader(long), 50); err != nil {
		t.Errorf("past the limit: %v", err)
	}
}
