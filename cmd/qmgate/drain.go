package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/queue"
	"github.com/qmgate/qmgate/relay"
)

const drainUsage = `usage: qmgate drain [-config FILE] [-timeout DURATION] [qmtp://PEER[,qmtps://PEER2:PORT...]]

Take the running hub away without stranding its queue: /readyz fails at
once, the listeners close, the sessions under way finish, deliveries go on
for -timeout ([shutdown] drain_timeout by default), what is left moves to
the first peer that answers (the peers named, or [shutdown] handoff), and
the daemon stops. For a Kubernetes preStop hook or a systemd ExecStop.
Only the queue's owner or root may. Exit 0 when nothing remains queued,
75 when something does (it stays on disk and is counted here).`

func init() {
	register(&command{name: "drain", summary: "[qmtp://PEER...]: stop the running hub, hand its queue to peers", usage: drainUsage, run: runDrain})
}

// runDrain is "qmgate drain": the running daemon drains through its
// control socket and reports what it moved and what remains.
func runDrain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlags("drain", drainUsage)
	cfgPath := fs.String("config", "", configFlagHelp)
	timeout := fs.Duration("timeout", 0, "how long deliveries go on before the hand-off, a `DURATION` (default: [shutdown] drain_timeout)")
	pos, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	peers, err := parsePeers(pos)
	if err != nil {
		return fail(stderr, "drain", 64, "%v", err)
	}
	if *timeout < 0 {
		return fail(stderr, "drain", 64, "-timeout must not be negative")
	}
	cfg, err := config.LoadFrom(config.Find(*cfgPath))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 78
	}
	if err := checkQueueDir(cfg.QueueDir, cfg); err != nil {
		return fail(stderr, "drain", 69, "%v", err)
	}
	rep, err := queue.Drain(context.Background(), cfg.QueueDir, "drain",
		queue.DrainRequest{Peers: peers, TimeoutMS: timeout.Milliseconds()})
	if err != nil {
		return fail(stderr, "drain", 75, "%s", plainErr(err))
	}
	return printDrainReport(stdout, stderr, "drain", rep, true)
}

// printDrainReport prints what a drain or hand-off moved and what
// remains; the exit status is 0 only when nothing it should move is left
// (held messages count when held).
func printDrainReport(stdout, stderr io.Writer, cmd string, rep *queue.DrainReport, held bool) int {
	fmt.Fprintf(stdout, "handed off %d recipients of %d messages; %d refused by the peers; %d messages (%d recipients, %d held messages) remain queued\n",
		rep.HandedOffRecipients, rep.HandedOffMessages, rep.Refused, rep.Remaining, rep.RemainingRecipients, rep.RemainingHeld)
	if rep.Problem != "" {
		return fail(stderr, cmd, 75, "%s", rep.Problem)
	}
	if rep.Left(held) {
		return 75
	}
	return 0
}

// drainedExit is the daemon's exit once a drain asked for over the control
// socket has stopped the hub: 0 when nothing remains queued.
func drainedExit(hub *relay.Hub, log *slog.Logger) int {
	res, err := hub.DrainOutcome()
	if err != nil {
		log.Error("drain", "err", err)
	}
	if res.Remaining > 0 {
		log.Error("stopped with mail still queued", "messages", res.Remaining, "recipients", res.RemainingRecipients,
			"held", res.RemainingHeld, "handed_off", res.Handoff.Recipients)
		return 75
	}
	log.Info("stopped: queue empty or handed off", "handed_off", res.Handoff.Recipients)
	return 0
}
