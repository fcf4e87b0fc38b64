package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/qmail"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
	"github.com/qmgate/qmgate/relay"
)

const queueUsage = `usage: qmgate queue COMMAND [ID ...] [-config FILE] [-json]
  list              one row per message (qmgate mailq: Postfix's layout)
  stat              counts by state, the age shape per domain and per route,
                    and the health of next hops (from the daemon)
  show ID           envelope, per-recipient state, attempt history, headers
  hold ID...        stop delivering the messages
  release ID...     resume delivering held messages
  remove ID...      delete the messages without a bounce
  flush [ID...]     make the messages (all without IDs) due now
  handoff [-held] [qmtp://PEER[,qmtps://PEER2:PORT...]]
                    move every queued message to a peer hub
Flags may come before or after the IDs. Safe while qmgate serve runs: the
commands then go through the daemon's control socket in the queue directory.

flags:
  -config FILE     ` + configDefaultHelp + `
  -json            list, stat, show: machine-readable output (default: false)
qmgate queue COMMAND -h shows one command's help.`

var queueSubUsage = map[string]string{
	"list":    "usage: qmgate queue list [-config FILE] [-json]\n\nOne row per message: ID AGE SIZE STATE NEXT SENDER NPENDING PENDING LAST-ERROR.\nWith -json, one JSON object per message per line (postqueue -j's fields and qmgate's own).",
	"stat":    "usage: qmgate queue stat [-config FILE] [-json]\n\nCounts by state, then the pending recipients per destination domain by message age\nin minutes (Postfix's qshape), the same per route and next hop, and the health\nof the next hops of routes with several (up or down, since when, the last\nerror), which only the running daemon knows.",
	"show":    "usage: qmgate queue show ID [-config FILE] [-json]\n\nThe message's envelope, each recipient's state and attempt history, and its header.",
	"hold":    "usage: qmgate queue hold ID... [-config FILE]\n\nStop delivering the messages until they are released.",
	"release": "usage: qmgate queue release ID... [-config FILE]\n\nResume delivering held messages.",
	"remove":  "usage: qmgate queue remove ID... [-config FILE]\n\nDelete the messages; no bounce is sent.",
	"flush":   "usage: qmgate queue flush [ID...] [-config FILE]\n\nMake the messages (all of them without IDs) due now.",
	"handoff": "usage: qmgate queue handoff [-held] [-config FILE] [qmtp://PEER[,qmtps://PEER2:PORT...]]\n\nMove every queued message (held ones too with -held) to the first peer hub that answers\n(the peers named, or [shutdown] handoff),\nover QMTP or QMTPS. While qmgate serve runs, the daemon does it through its control socket\n(the queue's owner or root only) and goes on running. Exit 0 when nothing is left.",
}

func init() {
	register(&command{name: "queue", summary: "list|stat|show ID|hold|release|remove|flush [ID...] [-json]: inspect and manage the queue",
		usage: queueUsage, run: runQueue})
}

func runQueue(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	sub, code, ok := subcommand(args, queueUsage, stdout, stderr)
	if !ok {
		return code
	}
	if sub == "handoff" {
		return runQueueHandoff(args[1:], stdout, stderr)
	}
	text, known := queueSubUsage[sub]
	if !known {
		fmt.Fprintf(stderr, "qmgate queue: unknown command %q\n", sub)
		fmt.Fprintln(stderr, queueUsage)
		return 64
	}
	fs := newFlags("queue "+sub, text)
	cfgPath := fs.String("config", "", configFlagHelp)
	var asJSON *bool
	switch sub {
	case "list", "stat", "show":
		asJSON = fs.Bool("json", false, "machine-readable output")
	}
	ids, code, ok := parseFlags(fs, args[1:], stdout, stderr)
	if !ok {
		return code
	}
	switch sub {
	case "list", "stat":
		if len(ids) > 0 {
			return usageError(fs, stderr, "unexpected argument %q", ids[0])
		}
	case "show":
		if len(ids) != 1 {
			return usageError(fs, stderr, "want exactly one message ID")
		}
	case "hold", "release", "remove":
		if len(ids) == 0 {
			return usageError(fs, stderr, "want at least one message ID")
		}
	}
	cfg, err := config.LoadFrom(config.Find(*cfgPath))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 78
	}
	if err := checkQueueDir(cfg.QueueDir, cfg); err != nil {
		return fail(stderr, "queue "+sub, 69, "%v", err)
	}
	// Root works on the queue as its owner (the daemon's user), so that
	// nothing it writes there becomes root's.
	if err := qmail.BecomeQueueOwner(cfg.QueueDir); err != nil {
		return fail(stderr, "queue "+sub, 75, "%s", plainErr(err))
	}
	adm, err := queue.OpenAdmin(cfg.QueueDir, relay.QueueOptions(cfg, newLogger(cfg, io.Discard)))
	if err != nil {
		return fail(stderr, "queue "+sub, 75, "%s", plainErr(err))
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch sub {
	case "list":
		rows, err := adm.List(ctx)
		if err == nil {
			err = writeList(stdout, rows, *asJSON)
		}
		return queueErr(stderr, sub, "", err)
	case "stat":
		st, err := adm.Stat(ctx)
		if err == nil {
			err = writeStat(stdout, st, statRoutes(cfg), *asJSON)
		}
		return queueErr(stderr, sub, "", err)
	case "show":
		d, err := adm.Show(ctx, ids[0])
		if err == nil {
			err = writeDetail(stdout, d, *asJSON)
		}
		return queueErr(stderr, sub, ids[0], err)
	}
	var op func(context.Context, ...string) error
	var done string
	switch sub {
	case "hold":
		op, done = adm.Hold, "held"
	case "release":
		op, done = adm.Release, "released"
	case "remove":
		op, done = adm.Remove, "removed"
	case "flush":
		op, done = adm.Flush, "due now"
	}
	if len(ids) == 0 {
		if code := queueErr(stderr, sub, "", op(ctx)); code != 0 {
			return code
		}
		fmt.Fprintln(stdout, "every message: due now")
		return 0
	}
	// One ID at a time, so an unknown ID is named and the others still act.
	code = 0
	for _, id := range ids {
		if err := op(ctx, id); err != nil {
			code = queueErr(stderr, sub, id, err)
			continue
		}
		fmt.Fprintf(stdout, "%s: %s\n", id, done)
	}
	return code
}

// queueErr reports err of queue SUB about message id (if any) once, with
// the id named once.
func queueErr(stderr io.Writer, sub, id string, err error) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, queue.ErrNotFound) {
		if id != "" {
			return fail(stderr, "queue "+sub, 67, "%s: no such message", mail.OneWord(id)) // EX_NOUSER
		}
		return fail(stderr, "queue "+sub, 67, "%s", plainErr(err))
	}
	msg := plainErr(err)
	if id != "" && !strings.Contains(msg, id) {
		msg = mail.OneWord(id) + ": " + msg
	}
	return fail(stderr, "queue "+sub, 75, "%s", msg)
}

// plainErr is err's text without the package prefix the command's own
// prefix already says ("qmgate queue list: queue: ..." reads twice).
func plainErr(err error) string {
	return strings.TrimPrefix(err.Error(), "queue: ")
}

// checkQueueDir fails when the queue directory cannot be used, naming the
// path and where it came from, so that a wrong or relative path never
// passes for an empty queue.
func checkQueueDir(dir string, cfg *config.Config) error {
	_, err := os.Stat(dir)
	if err == nil {
		return nil
	}
	why := "cannot be used: " + err.Error()
	switch {
	case errors.Is(err, os.ErrNotExist):
		why = "does not exist"
	case errors.Is(err, os.ErrPermission):
		why = "cannot be read by this user (permission denied)"
	}
	abs, _ := filepath.Abs(dir)
	return fmt.Errorf("queue directory %s %s (%s)", abs, why, queueDirOrigin(dir, cfg))
}

// queueDirOrigin says where the queue directory's path came from.
func queueDirOrigin(dir string, cfg *config.Config) string {
	var b strings.Builder
	key := "queue_dir"
	if cfg.Nullclient.SpoolDir != "" && dir == cfg.Nullclient.SpoolDir {
		key = "nullclient.spool_dir"
	}
	switch {
	case cfg.Source == config.Embedded:
		fmt.Fprintf(&b, "%s %q of the embedded default configuration", key, dir)
	case cfg.IsSet(key):
		fmt.Fprintf(&b, "%s %q in %s, named by %s", key, dir, cfg.Source, cfg.Origin)
	default:
		fmt.Fprintf(&b, "the default queue_dir %q: %s, named by %s, sets none", dir, cfg.Source, cfg.Origin)
	}
	if !filepath.IsAbs(dir) {
		wd, _ := os.Getwd()
		fmt.Fprintf(&b, "; a relative path is read from the current directory %s, so run this where qmgate serve runs or name the configuration with -config", wd)
	}
	return b.String()
}
