package queue

import (
	"math"
	"slices"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// State is the delivery state of one recipient.
type State uint8

const (
	Pending   State = iota // not yet delivered; will be tried (again)
	Delivered              // accepted by the next hop
	Failed                 // failed for good; a bounce is due or sent
)

// stateNames are the states' names in logs and JSON.
var stateNames = [...]string{Pending: "pending", Delivered: "delivered", Failed: "failed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// MarshalText renders the state as its name in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a state name.
func (s *State) UnmarshalText(b []byte) error {
	i := slices.Index(stateNames[:], string(b))
	if i < 0 {
		return errBadRecord
	}
	*s = State(i)
	return nil
}

// rcpt is the in-memory state of one recipient of a queued message.
type rcpt struct {
	addr     string
	state    State
	notified bool // Failed only: the bounce (or its deliberate absence) is settled
	attempts int32
	// forced counts attempts a flush pulled forward; they are left out of
	// the retry backoff. flushedFrom is the next attempt the latest flush
	// replaced (Unix ns, 0: none). Both live in memory only: after a
	// restart each earlier forced attempt counts once more.
	forced      int32
	flushedFrom int64
	next        time.Time    // next attempt (Pending only)
	dest        string       // destination key for per-destination backoff
	final       *mail.Status // Failed only; nil keeps the index entry small
	history     []attempt    // the latest attempts, oldest first, at most Options.MaxHistory

	// lease is the claim that currently owns the recipient (0: none);
	// leases live in memory only, so a restart frees every claim.
	lease      uint64
	leaseUntil time.Time
}

func (r *rcpt) update(i int) rcptUpdate {
	return rcptUpdate{idx: i, state: r.state, notified: r.notified, attempts: int(r.attempts),
		next: r.next, dest: r.dest, final: r.finalStatus()}
}

// apply sets the recipient to the state in u and appends u's attempt to the
// history, keeping at most maxHist entries (0: no bound).
func (r *rcpt) apply(u *rcptUpdate, maxHist int) {
	r.state = u.state
	r.notified = u.notified
	r.attempts = int32(min(u.attempts, math.MaxInt32))
	r.next = u.next
	r.dest = u.dest
	r.final = nil
	if u.final != (mail.Status{}) {
		f := u.final
		r.final = &f
	}
	if u.attempt != nil {
		r.history = append(r.history, *u.attempt)
		if maxHist > 0 && len(r.history) > maxHist {
			r.history = append(r.history[:0:0], r.history[len(r.history)-maxHist:]...)
		}
	}
}

// finalStatus is the recipient's final status (zero unless Failed).
func (r *rcpt) finalStatus() mail.Status {
	if r.final == nil {
		return mail.Status{}
	}
	return *r.final
}

// settled reports whether nothing more will happen to the recipient.
func (r *rcpt) settled() bool {
	return r.state == Delivered || r.state == Failed && r.notified
}

func (r *rcpt) leased(now time.Time) bool {
	return r.lease != 0 && now.Before(r.leaseUntil)
}

// lastAttempt returns the most recent attempt, or nil.
func (r *rcpt) lastAttempt() *attempt {
	if len(r.history) == 0 {
		return nil
	}
	return &r.history[len(r.history)-1]
}

// segUse records that a message has records in a journal segment, and how
// many bytes of them: a segment can be deleted only when no live message
// uses it.
type segUse struct {
	seq   uint64
	bytes int64
}

// message is the in-memory index entry of one queued message. Bodies are
// never here: only where to find them.
type message struct {
	id            string
	received      time.Time
	sender        string
	rcpts         []rcpt
	body          bodyRef
	held          bool
	delayNotified bool

	segs       []segUse
	seg0       [1]segUse // segs' first backing array: most messages use one segment
	gen        uint64    // schedule generation: heap entries with another gen are stale
	noticeBusy bool      // a bounce or delay notice is being written
	dead       bool      // removed from the index
}

// newMessage returns an index entry with n recipients. The usual single
// recipient, and the list of segments, come in the same allocation: fewer
// objects per queued message for the garbage collector to trace.
func newMessage(n int) *message {
	var m *message
	if n == 1 {
		p := new(struct {
			m message
			r [1]rcpt
		})
		p.m.rcpts = p.r[:]
		m = &p.m
	} else {
		m = &message{rcpts: make([]rcpt, n)}
	}
	m.segs = m.seg0[:0]
	return m
}

func (m *message) flags() byte {
	var f byte
	if m.held {
		f |= mflagHeld
	}
	if m.delayNotified {
		f |= mflagDelayNotified
	}
	return f
}

func (m *message) setFlags(f byte) {
	m.held = f&mflagHeld != 0
	m.delayNotified = f&mflagDelayNotified != 0
}

// done reports whether every recipient is settled, so the message can go.
func (m *message) done() bool {
	for i := range m.rcpts {
		if !m.rcpts[i].settled() {
			return false
		}
	}
	return true
}

func (m *message) anyLeased(now time.Time) bool {
	for i := range m.rcpts {
		if m.rcpts[i].leased(now) {
			return true
		}
	}
	return false
}

// size is the message's size as delivered: its prefix and its body.
func (m *message) size() int64 { return int64(len(m.body.prefix)) + m.body.size }
