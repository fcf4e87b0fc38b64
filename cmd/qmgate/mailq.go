package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/inject"
	"github.com/qmgate/qmgate/internal/qmail"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
)

const mailqUsage = `usage: mailq [-config FILE] [-json]   (also: qmgate mailq, sendmail -bp)

The queue in Postfix's mailq layout: each message's id (* while being
delivered, ! when held), size, arrival time and sender, then its last
delivery error in parentheses and each pending recipient on its own line,
and a "-- N Kbytes in M Requests." trailer. With -json, one JSON object per
message per line with postqueue -j's fields (queue_name, queue_id,
arrival_time, message_size, sender, recipients[{address, delay_reason}])
and qmgate's own (state, age_seconds, attempts, next_attempt, last_error).

On a nullclient with a spool_dir this is the spool; in direct mode there is
no queue.`

// runMailq is mailq: prog is the name the messages carry ("mailq" or
// "qmgate mailq").
func runMailq(prog string, args []string, stdout, stderr io.Writer) int {
	fs := newFlags(prog, mailqUsage)
	cfgPath := fs.String("config", "", configFlagHelp)
	asJSON := fs.Bool("json", false, "one JSON object per message per line")
	pos, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(fs, stderr, "unexpected argument %q", pos[0])
	}
	cfg, err := config.LoadFrom(config.Find(*cfgPath))
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return inject.ExitConfig
	}
	return showMailq(prog, cfg, *asJSON, stdout, stderr)
}

// showMailq lists the local queue of spool mode, else the queue of a
// daemon on this host (a hub); a pure nullclient in direct mode has none.
func showMailq(prog string, cfg *config.Config, asJSON bool, stdout, stderr io.Writer) int {
	failf := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "%s: %s\n", prog, fmt.Sprintf(format, a...))
		return inject.ExitTempFail
	}
	dir := cfg.QueueDir
	if cfg.Nullclient.SpoolDir == "" && len(cfg.Nullclient.QMQPServers) > 0 {
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			if !asJSON {
				fmt.Fprintln(stdout, "Mail queue is empty (direct mode: mail goes straight to the QMQP servers)")
			}
			return 0
		}
	}
	if err := checkQueueDir(dir, cfg); err != nil {
		return failf("%v", err)
	}
	// Root reads the queue as its owner, so that nothing it opens there
	// becomes root's.
	if err := qmail.BecomeQueueOwner(dir); err != nil {
		return failf("cannot read the queue in %s: %s", dir, plainErr(err))
	}
	adm, err := queue.OpenAdmin(dir, queue.Options{Hostname: cfg.Hostname, Logger: discardLogger()})
	if err != nil {
		return failf("cannot read the queue in %s: %s", dir, plainErr(err))
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := adm.List(ctx)
	if err != nil {
		return failf("cannot list the queue in %s: %s", dir, plainErr(err))
	}
	if asJSON {
		err = writeMailqJSON(stdout, rows)
	} else {
		err = writeMailq(stdout, rows)
	}
	if err != nil {
		return failf("%v", err)
	}
	return 0
}

// mailqTime is the arrival time as Postfix's mailq prints it.
const mailqTime = "Mon Jan _2 15:04:05"

// writeMailq renders rows in Postfix's classic mailq layout.
func writeMailq(w io.Writer, rows []queue.Row) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "Mail queue is empty")
		return err
	}
	fmt.Fprintln(w, "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------")
	var total int64
	indent := strings.Repeat(" ", 41)
	for i := range rows {
		r := &rows[i]
		total += r.Size
		mark := ' '
		switch r.State {
		case queue.RowActive:
			mark = '*'
		case queue.RowHeld:
			mark = '!'
		}
		sender := mail.OneWord(r.Sender)
		if sender == "" {
			sender = "MAILER-DAEMON"
		}
		fmt.Fprintf(w, "%-10s%c %8d %s  %s\n", mail.OneWord(r.ID), mark, r.Size, r.Received.Local().Format(mailqTime), sender)
		// As Postfix: each reason on its own line, in parentheses, above
		// the recipients it holds back; recipients not tried yet first.
		for _, g := range reasonGroups(r) {
			if g.reason != "" {
				fmt.Fprintf(w, "(%s)\n", mail.OneLine(g.reason))
			}
			for _, p := range g.rcpts {
				fmt.Fprintf(w, "%s%s\n", indent, mail.OneWord(p))
			}
		}
		fmt.Fprintln(w)
	}
	s := "s"
	if len(rows) == 1 {
		s = ""
	}
	_, err := fmt.Fprintf(w, "-- %d Kbytes in %d Request%s.\n", total/1024, len(rows), s)
	return err
}

// reasonGroup is the pending recipients of a message held back by one
// reason ("" for those not tried yet).
type reasonGroup struct {
	reason string
	rcpts  []string
}

// reasonGroups groups r's pending recipients by their own last error:
// those without one first, then each reason in the order its first
// recipient comes in the envelope.
func reasonGroups(r *queue.Row) []reasonGroup {
	out := []reasonGroup{{}}
	at := map[string]int{"": 0}
	for i, p := range r.Pending {
		reason := pendingError(r, i)
		k, ok := at[reason]
		if !ok {
			k = len(out)
			at[reason] = k
			out = append(out, reasonGroup{reason: reason})
		}
		out[k].rcpts = append(out[k].rcpts, p)
	}
	return out
}

// pendingError is the last error of r's i-th pending recipient. A row
// from a daemon that does not report them per recipient gives the
// message's last error to each.
func pendingError(r *queue.Row, i int) string {
	if len(r.PendingErrors) != len(r.Pending) {
		return r.LastError
	}
	return r.PendingErrors[i]
}

// mailqMessage is one line of -json: postqueue -j's fields, then qmgate's.
type mailqMessage struct {
	QueueName    string           `json:"queue_name"`
	QueueID      string           `json:"queue_id"`
	ArrivalTime  int64            `json:"arrival_time"`
	MessageSize  int64            `json:"message_size"`
	ForcedExpire bool             `json:"forced_expire"`
	Sender       string           `json:"sender"`
	Recipients   []mailqRecipient `json:"recipients"`

	State         string    `json:"state"`
	AgeSeconds    int64     `json:"age_seconds"`
	RecipientsAll int       `json:"recipients_total"`
	Attempts      int       `json:"attempts"`
	NextAttempt   time.Time `json:"next_attempt,omitzero"`
	NextInSeconds int64     `json:"next_in_seconds"`
	LastError     string    `json:"last_error,omitempty"`
}

type mailqRecipient struct {
	Address     string `json:"address"`
	DelayReason string `json:"delay_reason,omitempty"`
}

// queueName maps qmgate's states onto Postfix's queue names.
func queueName(state string) string {
	switch state {
	case queue.RowHeld:
		return "hold"
	case queue.RowDeferred:
		return "deferred"
	}
	return "active"
}

// writeMailqJSON writes one JSON object per message per line, as
// postqueue -j does (nothing at all for an empty queue).
func writeMailqJSON(w io.Writer, rows []queue.Row) error {
	enc := json.NewEncoder(w)
	for i := range rows {
		r := &rows[i]
		m := mailqMessage{
			QueueName: queueName(r.State), QueueID: r.ID, ArrivalTime: r.Received.Unix(), MessageSize: r.Size,
			Sender: r.Sender, Recipients: make([]mailqRecipient, len(r.Pending)),
			State: r.State, AgeSeconds: r.AgeSeconds, RecipientsAll: r.Recipients, Attempts: r.Attempts,
			NextAttempt: r.NextAttempt, NextInSeconds: r.NextInSeconds, LastError: r.LastError,
		}
		for j, p := range r.Pending {
			m.Recipients[j] = mailqRecipient{Address: p, DelayReason: pendingError(r, j)}
		}
		if err := enc.Encode(&m); err != nil {
			return err
		}
	}
	return nil
}
