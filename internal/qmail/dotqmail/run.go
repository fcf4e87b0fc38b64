package dotqmail

import (
	"bufio"
	"context"
	"errors"
	"io"
	"strings"

	"github.com/qmgate/qmgate/mail"
)

// Target performs what a Plan says; the Maildir and mbox transports
// implement it.
type Target interface {
	// Deliver performs one Own, Maildir, Mbox or Program delivery. A
	// mailbox delivery starts the message with the Return-Path line and
	// p.DeliveredTo(). A program that exits 99 returns ErrStop.
	Deliver(ctx context.Context, p *Plan, d Delivery) error
	// Forward queues the message once more from sender to addrs, starting
	// with p.DeliveredTo() (and no Return-Path line), so a forwarding loop
	// ends at the hop limit or at LoopCheck.
	Forward(ctx context.Context, p *Plan, sender string, addrs []string) error
}

// ErrStop is what a program delivery returns when the program exited 99:
// the delivery succeeded and the remaining instructions are skipped
// (qmail-command(8)).
var ErrStop = errors.New("the program asked to skip the remaining delivery instructions")

// Run performs the plan in qmail-local's order: mailbox and program
// deliveries one by one in file order, stopping at the first failure, then
// all forwards at once in one message, sent with ForwardSender. A failure
// before the forwards means no forward is sent (dot-qmail(5), "ERROR
// HANDLING"); deliveries that succeeded before it are done again when the
// message is retried, as with qmail. ErrStop skips the lines after the
// program, but forwards before it are still sent. A plan with no
// deliveries succeeds and delivers nothing.
func (p *Plan) Run(ctx context.Context, t Target) error {
	var forwards []string
	for _, d := range p.Deliveries {
		if d.Kind == Forward {
			forwards = append(forwards, d.Address)
			continue
		}
		if err := ctx.Err(); err != nil {
			return mail.Temp("4.3.0", "delivery interrupted")
		}
		err := t.Deliver(ctx, p, d)
		if errors.Is(err, ErrStop) {
			break
		}
		if err != nil {
			return err
		}
	}
	if len(forwards) == 0 {
		return nil
	}
	return t.Forward(ctx, p, p.ForwardSender, forwards)
}

// DefaultMaxHeaderScan bounds how much of a message LoopCheck reads.
const DefaultMaxHeaderScan = 1 << 20

// StatusLooping is qmail-local's answer to a message that already carries
// the Delivered-To line it would add.
var StatusLooping = mail.Status{Class: mail.Permanent, Code: "5.4.6", Text: "this message is looping: it already has my Delivered-To line"}

// LoopCheck reads the header of msg (up to the blank line, at most max
// bytes; DefaultMaxHeaderScan when max <= 0) and returns StatusLooping when
// it holds p.DeliveredTo() already, as qmail-local does before delivering.
// A read error is temporary.
func (p *Plan) LoopCheck(msg io.Reader, max int64) error {
	if max <= 0 {
		max = DefaultMaxHeaderScan
	}
	want := p.DeliveredTo()
	br := bufio.NewReader(io.LimitReader(msg, max))
	for {
		line, err := br.ReadString('\n')
		if line == "\n" || line == "\r\n" {
			return nil
		}
		if line == want || strings.HasSuffix(line, "\r\n") && line[:len(line)-2]+"\n" == want {
			return StatusLooping
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return mail.Temp("4.3.0", "cannot read the message")
		}
	}
}
