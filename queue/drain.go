package queue

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Drains and hand-offs over the control socket. The queue knows nothing
// of peers or listeners: the daemon registers a Drainer, and the control
// socket passes the queue owner's (or root's) request to it and its
// report back:
//
//	{"op":"drain","drain":{"peers":["qmtp://PEER"],"timeout_ms":30000}}
//	{"op":"handoff","drain":{"peers":["qmtp://PEER"],"held":true}}
//
//	{"drain":{"handed_off_messages":3,...,"remaining_messages":0}}

// DrainRequest asks the daemon to take its hub away ("drain": stop
// accepting, deliver for Timeout, hand off the rest, stop) or only to hand
// its queue to peers while it keeps running ("handoff").
type DrainRequest struct {
	// Peers are the hand-off peers; empty: the daemon's configured ones.
	Peers []string `json:"peers,omitempty"`
	// Held hands off held messages too ("handoff" only: a drain leaves
	// them).
	Held bool `json:"held,omitempty"`
	// TimeoutMS bounds a drain's deliveries before the hand-off (0: the
	// daemon's configured time).
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// DrainReport says what a drain or hand-off moved and what remains.
type DrainReport struct {
	HandedOffMessages   int `json:"handed_off_messages"`
	HandedOffRecipients int `json:"handed_off_recipients"`
	Refused             int `json:"refused_recipients"`
	// Remaining counts the messages still queued, RemainingRecipients
	// their recipients still to deliver, RemainingHeld the held messages
	// among them.
	Remaining           int `json:"remaining_messages"`
	RemainingRecipients int `json:"remaining_recipients"`
	RemainingHeld       int `json:"remaining_held"`
	// Problem is what went wrong, in plain words; empty when nothing did.
	Problem string `json:"problem,omitempty"`
}

// Left reports whether anything the request was meant to move remains:
// any message but held ones, and held ones too when held.
func (r *DrainReport) Left(held bool) bool {
	if held {
		return r.Remaining > 0
	}
	return r.Remaining > r.RemainingHeld
}

// Drainer carries out a drain ("drain") or a hand-off ("handoff") for the
// control socket; the daemon registers it with SetDrainer. It returns
// when the work is done (for a drain: before the daemon finishes
// stopping).
type Drainer func(ctx context.Context, op string, req DrainRequest) DrainReport

// SetDrainer registers the daemon's Drainer; without one the control
// socket answers that this process cannot drain.
func (q *Queue) SetDrainer(d Drainer) { q.drainer.Store(&d) }

// MaxDrainWait bounds how long the control socket's client waits for a
// drain or a hand-off to report.
const MaxDrainWait = 2 * time.Hour

// controlDrain serves "drain" and "handoff".
func (q *Queue) controlDrain(ctx context.Context, req *controlRequest) (*DrainReport, error) {
	d := q.drainer.Load()
	if d == nil {
		return nil, errors.New("this process cannot drain: it is no hub daemon")
	}
	var dr DrainRequest
	if req.Drain != nil {
		dr = *req.Drain
	}
	if len(dr.Peers) > 16 || dr.TimeoutMS < 0 {
		return nil, errors.New("bad drain request")
	}
	// The work goes on if the client goes away; only the report is lost.
	rep := (*d)(context.WithoutCancel(ctx), req.Op, dr)
	return &rep, nil
}

// Drain asks the daemon that holds the queue in dir to drain (op "drain")
// or to hand its queue off (op "handoff"), through its control socket, and
// returns its report. Only the queue's owner and root may.
func Drain(ctx context.Context, dir, op string, req DrainRequest) (*DrainReport, error) {
	if op != "drain" && op != "handoff" {
		return nil, fmt.Errorf("queue: unknown drain operation %q", op)
	}
	c := &controlClient{dir: dir}
	resp, err := c.call(ctx, controlRequest{Op: op, Drain: &req})
	if err != nil {
		return nil, err
	}
	if resp.Drain == nil {
		return nil, errors.New("queue control: empty answer")
	}
	return resp.Drain, nil
}

// isDrainOp reports whether op is one of the drain operations, which wait
// longer than the others.
func isDrainOp(op string) bool { return op == "drain" || op == "handoff" }
