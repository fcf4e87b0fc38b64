package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/qmail"
	"github.com/qmgate/qmgate/queue"
	"github.com/qmgate/qmgate/relay"
)

// parsePeers reads the peer hubs named on a command line: each argument a
// peer or a comma-separated list of them.
func parsePeers(args []string) ([]string, error) {
	var peers []string
	for _, a := range args {
		for p := range strings.SplitSeq(a, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			if err := config.CheckHandoffPeer(p); err != nil {
				return nil, err
			}
			peers = append(peers, p)
		}
	}
	return peers, nil
}

// runQueueHandoff is "qmgate queue handoff": it moves every queued message
// to the first peer that answers, with the queue opened here when no
// daemon runs, or by the running daemon through its control socket.
func runQueueHandoff(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("queue handoff", queueSubUsage["handoff"])
	cfgPath := fs.String("config", "", configFlagHelp)
	held := fs.Bool("held", false, "hand off held messages too")
	pos, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	peers, err := parsePeers(pos)
	if err != nil {
		return fail(stderr, "queue handoff", 64, "%v", err)
	}
	cfg, err := config.LoadFrom(config.Find(*cfgPath))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 78
	}
	if len(peers) == 0 {
		peers = cfg.Shutdown.Handoff
	}
	if len(peers) == 0 {
		fmt.Fprintln(stderr, "qmgate queue handoff: no peer named, and none in [shutdown] handoff")
		fmt.Fprintln(stderr, "usage: qmgate queue handoff [-held] [-config FILE] [qmtp://PEER[,qmtps://PEER2:PORT...]]")
		return 64
	}
	if err := checkQueueDir(cfg.QueueDir, cfg); err != nil {
		return fail(stderr, "queue handoff", 69, "%v", err)
	}
	if err := qmail.BecomeQueueOwner(cfg.QueueDir); err != nil {
		return fail(stderr, "queue handoff", 75, "%s", plainErr(err))
	}
	log := newLogger(cfg, stderr)
	// Interrupted, it stops between batches; what was acknowledged is gone
	// from the queue and a new run resumes with the rest.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	q, err := queue.Open(cfg.QueueDir, relay.QueueOptions(cfg, log))
	if errors.Is(err, queue.ErrLocked) {
		// The daemon runs: it hands off itself, beside its deliveries.
		rep, err := queue.Drain(ctx, cfg.QueueDir, "handoff", queue.DrainRequest{Peers: peers, Held: *held})
		if err != nil {
			return fail(stderr, "queue handoff", 75, "%s", plainErr(err))
		}
		return printDrainReport(stdout, stderr, "queue handoff", rep, *held)
	}
	if err != nil {
		return fail(stderr, "queue handoff", 75, "%s", plainErr(err))
	}
	defer q.Close()
	res, err := relay.Handoff(ctx, q, relay.HandoffOptions{Peers: peers, Held: *held,
		CAFile: cfg.Shutdown.CAFile, CertFile: cfg.Shutdown.CertFile, KeyFile: cfg.Shutdown.KeyFile, Log: log})
	m := q.Metrics()
	fmt.Fprintf(stdout, "handed off %d recipients of %d messages; %d refused by the peers; %d messages (%d recipients) remain queued\n",
		res.Recipients, res.Messages, res.Refused, m.Messages, m.PendingRecipients)
	if err != nil {
		return fail(stderr, "queue handoff", 75, "%v", err)
	}
	if left := m.Messages - m.Held; left > 0 || *held && m.Messages > 0 {
		return 75
	}
	return 0
}
