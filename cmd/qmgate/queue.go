package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/qmail"
	"github.com/qmgate/qmgate/queue"
	"github.com/qmgate/qmgate/relay"
)

func init() {
	register(&command{name: "queue", summary: "list|stat|show ID|hold|release|remove|flush [ID...] [-json]: inspect and manage the queue", run: runQueue})
}

const queueUsage = `usage: qmgate queue COMMAND [-config FILE] [-json] [ID ...]
  list              one row per message (also: qmgate mailq)
  stat              counts by state and the age shape per destination domain
  show ID           envelope, per-recipient state, attempt history, headers
  hold ID...        stop delivering the messages
  release ID...     resume delivering held messages
  remove ID...      delete the messages without a bounce
  flush [ID...]     make the messages (all without IDs) due now
  handoff [-held] qmtp://PEER[,qmtp://PEER2...]
                    move every queued message to a peer hub (daemon stopped)
Safe while qmgate serve runs: the commands then go through the daemon's
control socket in the queue directory.`

func runQueue(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) < 1 {
		fmt.Fprintln(stderr, queueUsage)
		return 64
	}
	sub := args[0]
	if sub == "handoff" {
		return runQueueHandoff(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("queue "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file")
	asJSON := fs.Bool("json", false, "machine-readable output")
	fs.Usage = func() { fmt.Fprintln(stderr, queueUsage) }
	if err := fs.Parse(args[1:]); err != nil {
		return 64
	}
	ids := fs.Args()
	switch sub {
	case "list", "stat", "flush":
	case "show":
		if len(ids) != 1 {
			fmt.Fprintln(stderr, "usage: qmgate queue show ID")
			return 64
		}
	case "hold", "release", "remove":
		if len(ids) == 0 {
			fmt.Fprintf(stderr, "usage: qmgate queue %s ID...\n", sub)
			return 64
		}
	default:
		fmt.Fprintln(stderr, queueUsage)
		return 64
	}
	cfg, err := config.Load(config.Locate(*cfgPath))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 78
	}
	if _, err := os.Stat(cfg.QueueDir); err != nil {
		if os.IsNotExist(err) && (sub == "list" || sub == "stat") {
			// No queue yet is an empty queue.
			if sub == "list" {
				queue.WriteList(stdout, nil, *asJSON)
			} else {
				queue.WriteStat(stdout, &queue.Stats{}, *asJSON)
			}
			return 0
		}
		return fail(stderr, "queue", 69, "queue directory %s: %v", cfg.QueueDir, err)
	}
	// Root works on the queue as its owner (the daemon's user), so that
	// nothing it writes there becomes root's.
	if err := qmail.BecomeQueueOwner(cfg.QueueDir); err != nil {
		return fail(stderr, "queue", 75, "%v", err)
	}
	adm, err := queue.OpenAdmin(cfg.QueueDir, relay.QueueOptions(cfg, newLogger(cfg, io.Discard)))
	if err != nil {
		return fail(stderr, "queue", 75, "%v", err)
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch sub {
	case "list":
		rows, err := adm.List(ctx)
		if err == nil {
			err = queue.WriteList(stdout, rows, *asJSON)
		}
		return queueErr(stderr, sub, err)
	case "stat":
		st, err := adm.Stat(ctx)
		if err == nil {
			err = queue.WriteStat(stdout, st, *asJSON)
		}
		return queueErr(stderr, sub, err)
	case "show":
		d, err := adm.Show(ctx, ids[0])
		if err == nil {
			err = queue.WriteDetail(stdout, d, *asJSON)
		}
		return queueErr(stderr, sub, err)
	}
	var op func(context.Context, ...string) error
	switch sub {
	case "hold":
		op = adm.Hold
	case "release":
		op = adm.Release
	case "remove":
		op = adm.Remove
	case "flush":
		op = adm.Flush
	}
	// One ID at a time, so an unknown ID is named and the others still act.
	if len(ids) == 0 {
		return queueErr(stderr, sub, op(ctx))
	}
	code := 0
	for _, id := range ids {
		if err := op(ctx, id); err != nil {
			code = queueErr(stderr, sub, fmt.Errorf("%s: %w", id, err))
		}
	}
	return code
}

func queueErr(stderr io.Writer, sub string, err error) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, queue.ErrNotFound) {
		return fail(stderr, "queue "+sub, 67, "%v", err) // EX_NOUSER: no such message
	}
	return fail(stderr, "queue "+sub, 75, "%v", err)
}
