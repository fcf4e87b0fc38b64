package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/queue"
)

// HandoffHeader is the trace header a hub puts on each message it hands to
// a peer: the original arrival time and the most attempts made so far, so
// that the peer's lifetime and delay notices can continue where they were.
const HandoffHeader = "X-Qmgate-Handoff"

// handoffBatch is how many messages one QMTP connection carries per
// pipelined round during a hand-off.
const handoffBatch = 64

// HandoffResult counts what a hand-off moved and what it left.
type HandoffResult struct {
	Messages   int // messages of which at least one recipient moved
	Recipients int // recipients a peer accepted (and that left the queue)
	Refused    int // recipients every peer refused; they stay queued
}

// Handoff moves every pending recipient of q (of held messages too, with
// held) to a peer hub over QMTP. peers are tried in order
// ("qmtp://host[:port]" or "host[:port]"); a recipient leaves the local
// journal only once a peer acknowledged it, so an interrupted hand-off
// loses nothing and a new one resumes with what is left. Recipients a
// peer refuses stay queued untouched (no attempt is counted). It returns
// an error when no peer answers.
func Handoff(ctx context.Context, q *queue.Queue, peers []string, held bool, log *slog.Logger) (HandoffResult, error) {
	var res HandoffResult
	if len(peers) == 0 {
		return res, errors.New("hand-off: no peer named")
	}
	addrs := make([]string, len(peers))
	for i, p := range peers {
		addrs[i] = strings.TrimSuffix(strings.TrimPrefix(p, "qmtp://"), "/")
	}
	refused := map[string]bool{} // id + rcpt a peer refused this run
	for ctx.Err() == nil {
		ds := q.ClaimAll(handoffBatch, held)
		var todo []*queue.Delivery
		for _, d := range ds {
			keep := d.Recipients[:0:0]
			for _, r := range d.Recipients {
				if !refused[d.ID+"\x00"+r] {
					keep = append(keep, r)
				}
			}
			if len(keep) == 0 {
				q.Record(ctx, d, nil) // give the lease back
				continue
			}
			d.Recipients = keep
			todo = append(todo, d)
		}
		if len(todo) == 0 {
			return res, ctx.Err()
		}
		sts, peer, err := sendHandoff(ctx, addrs, todo)
		results := make([][]queue.Result, len(todo))
		for i, d := range todo {
			var accepted []queue.Result
			moved := false
			for j, r := range d.Recipients {
				if sts == nil || j >= len(sts[i]) {
					continue
				}
				st := sts[i][j]
				if st.IsAccept() {
					accepted = append(accepted, queue.Result{Recipient: r, Status: st,
						Route: "handoff qmtp://" + peer, Host: peer})
					res.Recipients++
					moved = true
				} else if st.IsPermanent() || err == nil {
					refused[d.ID+"\x00"+r] = true
					res.Refused++
					log.Warn("hand-off refused", "id", d.ID, "rcpt", r, "peer", peer, "status", st.Text)
				}
			}
			if moved {
				res.Messages++
			}
			results[i] = accepted
		}
		// Recorded at once, so that the records share group commits
		// instead of waiting for one flush each.
		errs := make([]error, len(todo))
		var wg sync.WaitGroup
		for i, d := range todo {
			wg.Go(func() { errs[i] = q.Record(context.WithoutCancel(ctx), d, results[i]) })
		}
		wg.Wait()
		for i, rerr := range errs {
			if rerr != nil {
				return res, fmt.Errorf("hand-off: recording %s: %w", todo[i].ID, rerr)
			}
		}
		if err != nil {
			return res, err
		}
	}
	return res, ctx.Err()
}

// sendHandoff sends the Deliveries to the first peer that takes the
// connection; it returns the per-recipient statuses and the peer used.
func sendHandoff(ctx context.Context, addrs []string, ds []*queue.Delivery) ([][]mail.Status, string, error) {
	var last error
	for _, addr := range addrs {
		msgs := make([]*qmtp.Message, len(ds))
		var closers []io.Closer
		ok := true
		for i, d := range ds {
			body, err := d.Open()
			if err != nil {
				last, ok = fmt.Errorf("hand-off: message %s: %w", d.ID, err), false
				break
			}
			closers = append(closers, body)
			hdr := handoffHeaderLine(d.Received, d.Attempts, d.DelayNotified())
			msgs[i] = &qmtp.Message{Envelope: d.Envelope(), Body: io.MultiReader(strings.NewReader(hdr), body), Size: int64(len(hdr)) + d.Size}
		}
		if !ok {
			for _, c := range closers {
				c.Close()
			}
			return nil, addr, last
		}
		sts, err := qmtp.Send(ctx, addr, msgs...)
		for _, c := range closers {
			c.Close()
		}
		var de *qmtp.DialError
		if errors.As(err, &de) {
			last = fmt.Errorf("hand-off: peer %s: %w", addr, err)
			continue
		}
		return sts, addr, err
	}
	return nil, "", last
}
