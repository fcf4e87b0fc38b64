package queue

import (
	"cmp"
	"log/slog"
	"math/rand/v2"
	"os"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// Clock tells the queue the time; tests substitute one they can move.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Backoff is an exponential retry schedule: after n failures the wait is
// Floor·2^(n-1), at most Cap, spread by ±Jitter (a fraction, 0.25 = ±25%)
// and then kept within [Floor, Cap].
type Backoff struct {
	Floor  time.Duration
	Cap    time.Duration
	Jitter float64
}

// Delay returns the wait after n consecutive failures (n ≥ 1); r is a
// uniform random number in [0, 1).
func (b Backoff) Delay(n int, r float64) time.Duration {
	d := b.Floor
	for i := 1; i < n && d < b.Cap; i++ {
		d *= 2
	}
	d = min(d, b.Cap)
	if b.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + b.Jitter*(2*r-1)))
	}
	return max(b.Floor, min(d, b.Cap))
}

// Defaults for Options. Every limit has one; every default is safe.
const (
	DefaultLifetime    = 7 * 24 * time.Hour // qmail's queuelifetime
	DefaultDelayNotice = 4 * time.Hour
	DefaultLeaseTime   = time.Hour
	// DefaultInlineMax keeps a message sent as 256 KiB in the journal:
	// the header lines the hub adds on the way in (Received, DKIM-Signature,
	// a rewritten sender) would otherwise push it just over the line and
	// into a file of its own, which costs 2.3 times the CPU and halves the
	// rate (BENCHMARKS.md, "Where the time goes").
	DefaultInlineMax       = 256<<10 + 8<<10
	DefaultSegmentSize     = 64 << 20
	DefaultCommitLinger    = time.Millisecond
	DefaultMaxBounceHeader = 64 << 10
	DefaultMaxHistory      = 10
	DefaultMaxRecipients   = 10000
	DefaultJanitorCutoff   = 36 * time.Hour // qmail-clean's tmp cutoff
	DefaultJanitorInterval = time.Hour
	DefaultMaintenanceTick = time.Minute
	maxSealedSegments      = 16
	maxRecycledBuf         = 8 << 20
	maxBodyBuf             = 4 << 20 // larger InlineMax: body buffers grow by doubling
	// minPlacedBody is the smallest inline body its Writer places into the
	// journal itself instead of copying it into the batch (placeLocked).
	// Measured at 10 writers (BenchmarkPutSize): placing saves a third of
	// the CPU of a 256 KiB message, costs the same at 128 KiB, and at
	// 64 KiB costs 40% more (two writes and a wake-up per message instead
	// of a share of the batch's one write).
	minPlacedBody             = 128 << 10
	maxRecycledInserts        = 4096
	minSpareSegment           = 1 << 20 // smaller segments are made when needed
	maxAttemptField           = 255     // bytes of route and host kept per attempt
	defaultPostmasterUserPart = "postmaster"
)

var (
	// DefaultRetry is the per-recipient retry schedule.
	DefaultRetry = Backoff{Floor: 5 * time.Minute, Cap: time.Hour, Jitter: 0.25}
	// DefaultDestinationBackoff is the per-destination schedule after a
	// destination (next hop) fails temporarily.
	DefaultDestinationBackoff = Backoff{Floor: time.Minute, Cap: time.Hour, Jitter: 0.25}
)

// Options configure a Queue. The zero value works: every field has a
// documented default.
type Options struct {
	// Hostname names this MTA in bounces (Reporting-MTA, From:
	// MAILER-DAEMON@Hostname). Default: os.Hostname().
	Hostname string
	// Postmaster receives double bounces. Default "postmaster@" + Hostname.
	// "@" discards double bounces (qmail's doublebounceto convention).
	Postmaster string
	// Lifetime is how long a message may stay queued; after it a temporary
	// failure is permanent, with an explanation. Default 7 days.
	Lifetime time.Duration
	// DelayNotice sends one "still trying" DSN for a message deferred this
	// long. Default 4 hours; negative disables.
	DelayNotice time.Duration
	// Retry is the per-recipient schedule. Default DefaultRetry.
	Retry Backoff
	// DestinationBackoff holds back every recipient for a destination that
	// failed temporarily, so one dead hub costs one attempt per interval
	// instead of one per message. Default DefaultDestinationBackoff.
	DestinationBackoff Backoff
	// DestinationOf gives the destination key of a recipient of a
	// message from sender (as committed, VERP unexpanded) before the relay
	// has reported one (Result.Destination). Default: the recipient's
	// lower-cased domain.
	DestinationOf func(sender, rcpt string) string
	// LeaseTime bounds a claim: work claimed and not recorded within it is
	// handed out again. Default 1 hour; it must exceed any delivery.
	LeaseTime time.Duration
	// InlineMax is the largest body kept inside the journal; larger bodies
	// go to their own file. Default 264 KiB (at most 64 MiB). Each writer
	// buffers up to this much in memory. Measured (BENCHMARKS.md): a body
	// in the journal costs half the CPU of one in its own file and goes
	// two to three times as fast, but a 1 MiB body in a batch halved the
	// rate of the small messages flushed with it; in its own file, fsynced
	// by its Writer beside the batches, it took 11-42 % off them.
	InlineMax int64
	// SegmentSize is the size at which the journal moves to a new segment
	// file. Default 64 MiB.
	SegmentSize int64
	// CommitLinger caps how long after a flush the group committer may
	// hold the next batch open for callers it expects back: those of the
	// last two batches that are waiting for a processor or for the
	// queue's lock, never callers away on the network (see linger in
	// journal.go). Default 1 ms; negative turns the hold off.
	CommitLinger time.Duration
	// MaxBounceHeader bounds how much of the original header a bounce
	// attaches (text/rfc822-headers). Default 64 KiB.
	MaxBounceHeader int
	// MaxHistory bounds the attempts remembered per recipient. Default 10.
	MaxHistory int
	// MaxRecipients bounds the recipients of one message. Default 10000.
	MaxRecipients int
	// MinFreeBytes is the space kept free on the queue's file system: while
	// less is free, NewMessage refuses new mail with a temporary error, so
	// that the records of deliveries under way, retries and bounces still
	// fit (a delivery whose record cannot be written is repeated after a
	// restart). DefaultMinFreeBytes when 0; no reserve when negative.
	MinFreeBytes int64
	// JanitorCutoff is the age after which an unreferenced body file (left
	// by a crashed or abandoned writer) is removed. It must exceed any
	// writer's deadline. Default 36 hours.
	JanitorCutoff time.Duration
	// JanitorInterval is how often the janitor runs. Default 1 hour.
	JanitorInterval time.Duration
	// Passive opens the queue for administration only: no background
	// maintenance (bounces, compaction, janitor). OpenAdmin sets it.
	Passive bool
	// Clock defaults to the system clock.
	Clock Clock
	// Rand drives retry jitter. Default: randomly seeded.
	Rand *rand.Rand
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	fs fileSystem // tests inject faults here
}

func (o *Options) setDefaults() {
	o.MinFreeBytes = cmp.Or(o.MinFreeBytes, DefaultMinFreeBytes)
	if o.Hostname == "" {
		h, _ := os.Hostname()
		o.Hostname = cmp.Or(h, "localhost")
	}
	o.Postmaster = cmp.Or(o.Postmaster, defaultPostmasterUserPart+"@"+o.Hostname)
	positive(&o.Lifetime, DefaultLifetime)
	o.DelayNotice = cmp.Or(o.DelayNotice, DefaultDelayNotice)
	if o.Retry.Floor <= 0 {
		o.Retry = DefaultRetry
	}
	if o.DestinationBackoff.Floor <= 0 {
		o.DestinationBackoff = DefaultDestinationBackoff
	}
	for _, b := range []*Backoff{&o.Retry, &o.DestinationBackoff} {
		b.Cap = max(b.Cap, b.Floor)
		b.Jitter = min(max(b.Jitter, 0), 1)
	}
	if o.DestinationOf == nil {
		o.DestinationOf = func(_, rcpt string) string { return mail.Domain(rcpt) }
	}
	positive(&o.LeaseTime, DefaultLeaseTime)
	positive(&o.InlineMax, DefaultInlineMax)
	o.InlineMax = min(o.InlineMax, maxBodyLen)
	positive(&o.SegmentSize, DefaultSegmentSize)
	o.CommitLinger = cmp.Or(o.CommitLinger, DefaultCommitLinger)
	positive(&o.MaxBounceHeader, DefaultMaxBounceHeader)
	positive(&o.MaxHistory, DefaultMaxHistory)
	positive(&o.MaxRecipients, DefaultMaxRecipients)
	positive(&o.JanitorCutoff, DefaultJanitorCutoff)
	positive(&o.JanitorInterval, DefaultJanitorInterval)
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	o.Logger = cmp.Or(o.Logger, slog.Default())
	if o.fs == nil {
		o.fs = osFS{}
	}
}

// positive sets *v to def unless it is above zero.
func positive[T ~int | ~int64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}
