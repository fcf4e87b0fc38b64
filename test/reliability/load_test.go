//go:build linux

package reliability

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/smtp"
)

// load runs concurrent senders over QMTP, QMQP and SMTP with qmgate's own
// clients until stopped, recording in the ledger what each was told.
type load struct {
	QMTP, QMQP, SMTP string // listener addresses; "" means no senders of that kind
	Senders          int    // per protocol
	Sender           string // envelope sender
	// Rcpts chooses a message's recipients.
	Rcpts func(r *rand.Rand) []string
	// Body makes a message; nil means bodyFor.
	Body func(marker string) []byte
	// Size, when set, fixes each message's size (the marker carries it).
	Size   func(r *rand.Rand) int
	Ledger *ledger
	// Pause between attempts after a failure to connect.
	Pause time.Duration

	stop atomic.Bool
	wg   sync.WaitGroup
	sent atomic.Int64
	busy atomic.Int64 // transfers under way
	id   atomic.Int64
	tag  string
}

func (ld *load) start(tag string) {
	ld.tag = tag
	if ld.Pause == 0 {
		ld.Pause = 20 * time.Millisecond
	}
	if ld.Body == nil {
		ld.Body = bodyFor
	}
	for i := 0; i < ld.Senders; i++ {
		for _, s := range []struct {
			addr string
			run  func(int)
		}{{ld.QMTP, ld.runQMTP}, {ld.QMQP, ld.runQMQP}, {ld.SMTP, ld.runSMTP}} {
			if s.addr == "" {
				continue
			}
			ld.wg.Add(1)
			go func(run func(int), i int) {
				defer ld.wg.Done()
				run(i)
			}(s.run, i)
		}
	}
}

// finish stops the senders and waits for their last attempts.
func (ld *load) finish(t *testing.T) {
	t.Helper()
	ld.stop.Store(true)
	testpeer.Wait(t, "the senders' last attempts", stuckAfter, &ld.wg)
}

// stuckAfter bounds a wait for senders, clients and samplers that each
// have their own timeouts: past it one of them is stuck, and the test fails
// instead of hanging until go test's timeout.
const stuckAfter = 10 * time.Minute

func (ld *load) marker(proto string, r *rand.Rand) string {
	m := fmt.Sprintf("%s-%s-%d", ld.tag, proto, ld.id.Add(1))
	if ld.Size != nil {
		m += fmt.Sprintf("~%d", ld.Size(r))
	}
	return m
}

func (ld *load) rng() *rand.Rand { return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) }

func (ld *load) runQMTP(int) {
	r := ld.rng()
	c := &qmtp.Client{ConnectTimeout: 3 * time.Second, IOTimeout: 30 * time.Second}
	for !ld.stop.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		conn, err := c.Dial(ctx, ld.QMTP)
		if err != nil {
			cancel()
			time.Sleep(ld.Pause)
			continue
		}
		// A few pipelined packages per connection.
		n := 1 + r.IntN(4)
		msgs := make([]*qmtp.Message, n)
		markers := make([]string, n)
		for i := range msgs {
			markers[i] = ld.marker("qmtp", r)
			body := ld.Body(markers[i])
			msgs[i] = &qmtp.Message{Envelope: mail.Envelope{Sender: ld.Sender, Recipients: ld.Rcpts(r)},
				Body: bytes.NewReader(body), Size: int64(len(body))}
			ld.Ledger.attempt(markers[i])
		}
		ld.busy.Add(1)
		res, _ := conn.Send(ctx, msgs...)
		ld.busy.Add(-1)
		conn.Close()
		cancel()
		for i, m := range msgs {
			for j, rcpt := range m.Envelope.Recipients {
				st := mail.Temp("4.3.0", "no reply")
				if i < len(res) && j < len(res[i]) {
					st = res[i][j]
				}
				ld.Ledger.result("QMTP", markers[i], rcpt, st)
			}
		}
		ld.sent.Add(int64(n))
	}
}

func (ld *load) runQMQP(int) {
	r := ld.rng()
	c := &qmqp.Client{Servers: []string{ld.QMQP}, ConnectTimeout: 3 * time.Second, IOTimeout: 30 * time.Second}
	for !ld.stop.Load() {
		marker := ld.marker("qmqp", r)
		body := ld.Body(marker)
		env := mail.Envelope{Sender: ld.Sender, Recipients: ld.Rcpts(r)}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		ld.Ledger.attempt(marker)
		ld.busy.Add(1)
		res, err := c.Send(ctx, env, bytes.NewReader(body), int64(len(body)))
		ld.busy.Add(-1)
		cancel()
		for _, rcpt := range env.Recipients {
			ld.Ledger.result("QMQP", marker, rcpt, res.Status)
		}
		ld.sent.Add(1)
		if _, ok := err.(*qmqp.ConnectError); ok {
			time.Sleep(ld.Pause)
		}
	}
}

func (ld *load) runSMTP(int) {
	r := ld.rng()
	c := &smtp.Client{TLS: smtp.TLSNone, LocalName: "sender.reliability.test",
		ConnectTimeout: 3 * time.Second, CommandTimeout: 30 * time.Second, DataTimeout: 30 * time.Second,
		ErrorLog: quietLog}
	for !ld.stop.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		conn, err := c.Dial(ctx, "smtp://"+ld.SMTP)
		if err != nil {
			cancel()
			time.Sleep(ld.Pause)
			continue
		}
		// A few transactions per connection.
		for n := 1 + r.IntN(4); n > 0 && !ld.stop.Load() && !conn.Broken(); n-- {
			marker := ld.marker("smtp", r)
			body := ld.Body(marker)
			env := mail.Envelope{Sender: ld.Sender, Recipients: ld.Rcpts(r)}
			ld.Ledger.attempt(marker)
			ld.busy.Add(1)
			sts, _ := conn.Send(ctx, env, bytes.NewReader(body))
			ld.busy.Add(-1)
			for j, rcpt := range env.Recipients {
				st := mail.Temp("4.3.0", "no reply")
				if j < len(sts) {
					st = sts[j]
				}
				ld.Ledger.result("SMTP", marker, rcpt, st)
			}
			ld.sent.Add(1)
		}
		conn.Close()
		cancel()
	}
}

// quietLog swallows the clients' connection-failure lines, which a kill
// makes by the hundred.
var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// pickRcpts returns a chooser of 1 to max recipients among users at domain
// (users u0..u{n-1}).
func pickRcpts(domain string, users, max int) func(r *rand.Rand) []string {
	return func(r *rand.Rand) []string {
		k := 1 + r.IntN(max)
		perm := r.Perm(users)
		out := make([]string, k)
		for i := range out {
			out[i] = fmt.Sprintf("u%d@%s", perm[i], domain)
		}
		return out
	}
}
