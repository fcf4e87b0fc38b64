package queue

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// Admin is what `qmgate queue` needs. *Queue implements it in-process; the
// client returned by OpenAdmin implements it over the daemon's control
// socket. Every method is safe while the daemon delivers.
type Admin interface {
	// List returns one row per message, oldest first.
	List(ctx context.Context) ([]Row, error)
	// Stat returns counts by state and the age shape per domain.
	Stat(ctx context.Context) (*Stats, error)
	// Show returns everything about one message; ErrNotFound if unknown.
	Show(ctx context.Context, id string) (*Detail, error)
	// Hold stops delivery of the messages until Release.
	Hold(ctx context.Context, ids ...string) error
	// Release puts held messages back on their schedule.
	Release(ctx context.Context, ids ...string) error
	// Remove deletes the messages without a bounce.
	Remove(ctx context.Context, ids ...string) error
	// Flush makes the messages (all of them when ids is empty) due now,
	// ignoring retry times and destination backoff.
	Flush(ctx context.Context, ids ...string) error
	Close() error
}

// Message states in listings.
const (
	RowQueued   = "queued"   // never tried yet
	RowDeferred = "deferred" // tried, waiting for a retry
	RowActive   = "active"   // being delivered now
	RowHeld     = "held"     // on hold
)

// Row is one message in `qmgate queue list`.
type Row struct {
	ID         string    `json:"id"`
	Received   time.Time `json:"received"`
	AgeSeconds int64     `json:"age_seconds"`
	Size       int64     `json:"size"`
	Sender     string    `json:"sender"`
	State      string    `json:"state"`
	Recipients int       `json:"recipients"`
	Pending    []string  `json:"pending"`
	Attempts   int       `json:"attempts"`
	// NextAttempt is the earliest next attempt of a pending recipient,
	// zero if none is scheduled; NextInSeconds is relative to the listing
	// (zero or negative: due now).
	NextAttempt   time.Time `json:"next_attempt,omitzero"`
	NextInSeconds int64     `json:"next_in_seconds"`
	// LastError is the latest failed attempt of any pending recipient;
	// PendingErrors holds each pending recipient's own, in the order of
	// Pending ("" for one not tried yet, or whose last try was not a
	// failure).
	LastError     string   `json:"last_error,omitempty"`
	PendingErrors []string `json:"pending_errors"`
}

// Attempt is one delivery attempt in `qmgate queue show`.
type Attempt struct {
	Time   time.Time `json:"time"`
	Route  string    `json:"route,omitempty"`
	Host   string    `json:"host,omitempty"`
	Result string    `json:"result"` // accept, temporary, permanent
	Reply  string    `json:"reply"`  // as an SMTP reply: "451 4.4.1 text"
	// TLSPolicy is the TLS policy the attempt was made under: none,
	// opportunistic, required, smarthost-required, mta-sts-enforce or
	// mta-sts-testing; empty where TLS does not apply.
	TLSPolicy string `json:"tls_policy,omitempty"`
}

// RecipientDetail is the state of one recipient.
type RecipientDetail struct {
	Address     string    `json:"address"`
	State       State     `json:"state"`
	Active      bool      `json:"active,omitempty"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	Destination string    `json:"destination"`
	Final       string    `json:"final,omitempty"`   // failed: the reason, as a reply
	Bounced     bool      `json:"bounced,omitempty"` // failed: the bounce is queued (or dropped)
	History     []Attempt `json:"history"`
}

// Detail is everything `qmgate queue show` prints about a message.
type Detail struct {
	Row
	Held          bool              `json:"held"`
	DelayNotified bool              `json:"delay_notified"`
	Recipient     []RecipientDetail `json:"recipient_states"`
	Header        string            `json:"header"`
}

// Stats is `qmgate queue stat`: counts and, as Postfix's qshape shows, the
// age of pending recipients per destination domain.
type Stats struct {
	Messages   int   `json:"messages"`
	Bytes      int64 `json:"bytes"`
	Queued     int   `json:"queued"`
	Deferred   int   `json:"deferred"`
	Active     int   `json:"active"`
	Held       int   `json:"held"`
	Recipients struct {
		Pending   int `json:"pending"`
		Delivered int `json:"delivered"`
		Failed    int `json:"failed"`
	} `json:"recipients"`
	OldestID         string `json:"oldest_id,omitempty"`
	OldestAgeSeconds int64  `json:"oldest_age_seconds"`
	// BucketMinutes are the upper bounds of the age buckets; each shape
	// has one more bucket, for anything older.
	BucketMinutes []int         `json:"bucket_minutes"`
	Total         DomainShape   `json:"total"`
	Domains       []DomainShape `json:"domains"`
	// Destinations shapes pending recipients by the destination key their
	// retries are kept under (Options.DestinationOf: a route's next hop,
	// or "mx:" and the domain), which the caller may name by route.
	Destinations []DestinationShape `json:"destinations"`
	// Daemon tells that a running daemon answered (through its control
	// socket); NextHops, its next hop health, is known only then.
	Daemon   bool      `json:"daemon"`
	NextHops []NextHop `json:"next_hops"`
}

// DomainShape counts pending recipients of one domain by message age.
type DomainShape struct {
	Domain  string `json:"domain"`
	Total   int    `json:"total"`
	Buckets []int  `json:"buckets"`
}

// DestinationShape counts pending recipients of one destination key by
// message age.
type DestinationShape struct {
	Destination string `json:"destination"`
	Total       int    `json:"total"`
	Buckets     []int  `json:"buckets"`
}

// NextHop is the health of one next hop of a route with several, as the
// daemon's deliveries found it.
type NextHop struct {
	Host string `json:"host"`
	Up   bool   `json:"up"`
	// Since is when the host went down or came back up; zero when it has
	// not changed since the daemon started.
	Since time.Time `json:"since,omitzero"`
	// DownUntil ends the backoff of a host that is down.
	DownUntil time.Time `json:"down_until,omitzero"`
	Failures  int       `json:"failures"`
	// LastError is the last failure, plain words, and LastErrorAt when it
	// happened; kept once the host is up again.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// SetNextHops gives Stat the daemon's next hop health, which the queue
// does not keep itself. The daemon calls it before serving the control
// socket.
func (q *Queue) SetNextHops(f func() []NextHop) { q.nextHops.Store(&f) }

// ShapeBucketMinutes are qshape's default age buckets.
var ShapeBucketMinutes = []int{5, 10, 20, 40, 80, 160, 320, 640, 1280}

func (q *Queue) rowLocked(m *message, now time.Time) Row {
	row := Row{ID: m.id, Received: m.received, AgeSeconds: int64(now.Sub(m.received) / time.Second),
		Size: m.size(), Sender: m.sender, Recipients: len(m.rcpts), Pending: []string{}, PendingErrors: []string{}}
	var next time.Time
	var last *attempt
	active, tried := false, false
	for i := range m.rcpts {
		r := &m.rcpts[i]
		if r.state != Pending {
			continue
		}
		row.Pending = append(row.Pending, r.addr)
		row.Attempts = max(row.Attempts, int(r.attempts))
		tried = tried || r.attempts > 0
		a := r.lastAttempt()
		if a != nil && a.status.Class != mail.Accept {
			row.PendingErrors = append(row.PendingErrors, describeAttempt(a))
		} else {
			row.PendingErrors = append(row.PendingErrors, "")
		}
		if r.leased(now) {
			active = true
			continue
		}
		t := r.next
		if ds := q.dests[r.dest]; ds != nil && ds.next.After(t) {
			t = ds.next
		}
		if next.IsZero() || t.Before(next) {
			next = t
		}
		if a != nil && a.status.Class != mail.Accept && (last == nil || a.at.After(last.at)) {
			last = a
		}
	}
	switch {
	case m.held:
		row.State = RowHeld
	case active:
		row.State = RowActive
	case tried:
		row.State = RowDeferred
	default:
		row.State = RowQueued
	}
	if !m.held && !next.IsZero() {
		row.NextAttempt = next
		row.NextInSeconds = int64(next.Sub(now) / time.Second)
	}
	if last != nil {
		row.LastError = describeAttempt(last)
	}
	return row
}

func describeAttempt(a *attempt) string {
	if a.host != "" {
		return a.host + " said: " + smtpReply(a.status)
	}
	return smtpReply(a.status)
}

// List implements Admin.
func (q *Queue) List(ctx context.Context) ([]Row, error) {
	now := q.now()
	q.mu.Lock()
	rows := make([]Row, 0, len(q.msgs))
	for _, m := range q.msgs {
		rows = append(rows, q.rowLocked(m, now))
	}
	q.mu.Unlock()
	slices.SortFunc(rows, func(a, b Row) int { return cmp.Compare(a.ID, b.ID) })
	return rows, nil
}

// Stat implements Admin.
func (q *Queue) Stat(ctx context.Context) (*Stats, error) {
	now := q.now()
	st := &Stats{BucketMinutes: ShapeBucketMinutes}
	nb := len(ShapeBucketMinutes) + 1
	st.Total = DomainShape{Domain: "TOTAL", Buckets: make([]int, nb)}
	domains := map[string]*DomainShape{}
	dests := map[string]*DestinationShape{}
	var oldest *message
	q.mu.Lock()
	for _, m := range q.msgs {
		st.Messages++
		st.Bytes += m.size()
		row := q.rowLocked(m, now)
		switch row.State {
		case RowHeld:
			st.Held++
		case RowActive:
			st.Active++
		case RowDeferred:
			st.Deferred++
		default:
			st.Queued++
		}
		if oldest == nil || m.received.Before(oldest.received) || m.received.Equal(oldest.received) && m.id < oldest.id {
			oldest = m
		}
		age := now.Sub(m.received)
		b := 0
		for b < len(ShapeBucketMinutes) && age >= time.Duration(ShapeBucketMinutes[b])*time.Minute {
			b++
		}
		for i := range m.rcpts {
			r := &m.rcpts[i]
			switch r.state {
			case Delivered:
				st.Recipients.Delivered++
				continue
			case Failed:
				st.Recipients.Failed++
				continue
			}
			st.Recipients.Pending++
			dom := mail.Domain(r.addr)
			ds := domains[dom]
			if ds == nil {
				ds = &DomainShape{Domain: dom, Buckets: make([]int, nb)}
				domains[dom] = ds
			}
			ds.Total++
			ds.Buckets[b]++
			dd := dests[r.dest]
			if dd == nil {
				dd = &DestinationShape{Destination: r.dest, Buckets: make([]int, nb)}
				dests[r.dest] = dd
			}
			dd.Total++
			dd.Buckets[b]++
			st.Total.Total++
			st.Total.Buckets[b]++
		}
	}
	if oldest != nil {
		st.OldestID, st.OldestAgeSeconds = oldest.id, int64(now.Sub(oldest.received)/time.Second)
	}
	q.mu.Unlock()
	for _, ds := range domains {
		st.Domains = append(st.Domains, *ds)
	}
	slices.SortFunc(st.Domains, func(a, b DomainShape) int {
		return cmp.Or(cmp.Compare(b.Total, a.Total), cmp.Compare(a.Domain, b.Domain))
	})
	if st.Domains == nil {
		st.Domains = []DomainShape{}
	}
	st.Destinations = []DestinationShape{}
	for _, dd := range dests {
		st.Destinations = append(st.Destinations, *dd)
	}
	slices.SortFunc(st.Destinations, func(a, b DestinationShape) int {
		return cmp.Or(cmp.Compare(b.Total, a.Total), cmp.Compare(a.Destination, b.Destination))
	})
	st.NextHops = []NextHop{}
	if f := q.nextHops.Load(); f != nil {
		st.Daemon = true
		st.NextHops = append(st.NextHops, (*f)()...)
	}
	return st, nil
}

// Show implements Admin.
func (q *Queue) Show(ctx context.Context, id string) (*Detail, error) {
	now := q.now()
	q.mu.Lock()
	m := q.msgs.get(id)
	if m == nil {
		q.mu.Unlock()
		return nil, notFound(id)
	}
	d := &Detail{Row: q.rowLocked(m, now), Held: m.held, DelayNotified: m.delayNotified}
	for i := range m.rcpts {
		r := &m.rcpts[i]
		rd := RecipientDetail{Address: r.addr, State: r.state, Active: r.leased(now), Attempts: int(r.attempts),
			Destination: r.dest, History: []Attempt{}}
		if r.state == Pending {
			rd.NextAttempt = r.next
		}
		if r.state == Failed {
			rd.Final = smtpReply(r.finalStatus())
			rd.Bounced = r.notified
		}
		for _, a := range r.history {
			route, tlsPolicy := splitAttemptRoute(a.route)
			rd.History = append(rd.History, Attempt{Time: a.at, Route: route, Host: a.host, TLSPolicy: tlsPolicy,
				Result: a.status.Class.String(), Reply: smtpReply(a.status)})
		}
		d.Recipient = append(d.Recipient, rd)
	}
	q.mu.Unlock()
	hdr, err := q.readHeader(m)
	if err != nil && len(hdr) == 0 {
		q.log.Warn("queue: show: header unreadable", "id", id, "err", err)
	}
	d.Header = string(hdr)
	return d, nil
}

func notFound(id string) error { return &idError{id: mail.OneWord(sanitizeField(id, 64))} }

// adminOp applies op to each message and waits for the records it wrote.
// Unknown IDs are reported, each with ErrNotFound, after the known ones
// are done.
func (q *Queue) adminOp(ctx context.Context, ids []string, op func(m *message, now time.Time) (*batch, error)) error {
	now := q.now()
	var errs []error
	var waits []*batch
	q.mu.Lock()
	for _, id := range ids {
		m := q.msgs.get(id)
		if m == nil {
			errs = append(errs, notFound(id))
			continue
		}
		b, err := op(m, now)
		if err != nil {
			errs = append(errs, &Error{Op: "admin", Err: err})
			continue
		}
		if b != nil {
			waits = append(waits, b)
		}
	}
	q.mu.Unlock()
	for _, b := range waits {
		if err := b.wait(ctx.Done()); err != nil {
			errs = append(errs, err)
			break
		}
	}
	return errors.Join(errs...)
}

// Hold implements Admin. Deliveries already out finish and are recorded.
func (q *Queue) Hold(ctx context.Context, ids ...string) error { return q.setHeld(ctx, ids, true) }

// Release implements Admin.
func (q *Queue) Release(ctx context.Context, ids ...string) error { return q.setHeld(ctx, ids, false) }

func (q *Queue) setHeld(ctx context.Context, ids []string, held bool) error {
	return q.adminOp(ctx, ids, func(m *message, now time.Time) (*batch, error) {
		if m.held == held {
			return nil, nil
		}
		m.held = held
		if held {
			m.gen++
			q.log.Info("queue: held", "id", m.id)
		} else {
			q.scheduleLocked(m, now)
			q.log.Info("queue: released", "id", m.id)
		}
		return q.appendStateLocked(m, recFlags, encodeFlags(nil, m.id, m.flags()))
	})
}

// Remove implements Admin. No bounce is sent.
func (q *Queue) Remove(ctx context.Context, ids ...string) error {
	return q.adminOp(ctx, ids, func(m *message, now time.Time) (*batch, error) {
		b, err := q.appendStateLocked(m, recRemove, encodeRemove(nil, m.id))
		if err != nil {
			return nil, err
		}
		q.dropLocked(m, b)
		q.log.Info("queue: removed", "id", m.id)
		return b, nil
	})
}

// Flush implements Admin. It changes only timing, so nothing is written:
// after a restart the old schedule applies again.
func (q *Queue) Flush(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		now := q.now()
		q.mu.Lock()
		clear(q.dests)
		for _, m := range q.msgs {
			q.flushLocked(m, now)
		}
		q.mu.Unlock()
		return nil
	}
	return q.adminOp(ctx, ids, func(m *message, now time.Time) (*batch, error) {
		q.flushLocked(m, now)
		return nil, nil
	})
}

func (q *Queue) flushLocked(m *message, now time.Time) {
	for i := range m.rcpts {
		if r := &m.rcpts[i]; r.state == Pending {
			if r.next.After(now) {
				if r.flushedFrom == 0 {
					r.flushedFrom = r.next.UnixNano()
				}
				r.next = now
			}
			if ds := q.dests[r.dest]; ds != nil {
				q.destSuccessLocked(r.dest, now)
			}
		}
	}
	q.scheduleLocked(m, now)
}

// Metrics are the numbers the daemon exports.
type Metrics struct {
	Messages          int       // messages queued
	PendingRecipients int       // recipients still to deliver
	Held              int       // messages on hold
	Active            int       // recipients being delivered
	Oldest            time.Time // arrival of the oldest message; zero if empty
	JournalBytes      int64     // bytes in journal segments
	Segments          int
	Batches           uint64 // group commits (flushes) so far
	Records           uint64 // journal records so far
	// Held batches: how many times, and for how long in all, the group
	// committer held a batch open for callers it expected back.
	Lingers    uint64
	LingerTime time.Duration
}

// OldestAge returns how long the oldest message has waited.
func (m Metrics) OldestAge(now time.Time) time.Duration {
	if m.Oldest.IsZero() {
		return 0
	}
	return now.Sub(m.Oldest)
}

// CommitStats counts the journal's group commits since Open; unlike
// Metrics it is cheap (no walk over the queue), for scrapes.
type CommitStats struct {
	Flushes  uint64        // batches written and synced
	Records  uint64        // records appended
	Holds    uint64        // batches held open for writers on their way
	HoldTime time.Duration // the time they were held, in all
}

// CommitStats returns the group commit's counters.
func (q *Queue) CommitStats() CommitStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return CommitStats{Flushes: q.nBatches, Records: q.nRecords, Holds: q.nLingers, HoldTime: q.lingerTime}
}

// Metrics returns the current counts.
func (q *Queue) Metrics() Metrics {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	mt := Metrics{Messages: len(q.msgs), Segments: len(q.segs), Batches: q.nBatches, Records: q.nRecords,
		Lingers: q.nLingers, LingerTime: q.lingerTime}
	for _, s := range q.segs {
		mt.JournalBytes += s.size
	}
	for _, m := range q.msgs {
		if m.held {
			mt.Held++
		}
		if mt.Oldest.IsZero() || m.received.Before(mt.Oldest) {
			mt.Oldest = m.received
		}
		for i := range m.rcpts {
			if r := &m.rcpts[i]; r.state == Pending {
				mt.PendingRecipients++
				if r.leased(now) {
					mt.Active++
				}
			}
		}
	}
	return mt
}
