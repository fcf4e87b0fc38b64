package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/logging"
	"github.com/qmgate/qmgate/internal/privdrop"
	"github.com/qmgate/qmgate/internal/safedir"
	"github.com/qmgate/qmgate/relay"
)

func init() {
	register(&command{name: "serve", summary: "run the hub: SMTP, QMTP and QMQP in, the queue, deliveries out", run: runServe})
}

// shutdownGrace is how long SIGTERM lets sessions and deliveries finish.
const shutdownGrace = 30 * time.Second

func runServe(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, cfgPath := helpFlags("serve", stderr)
	if err := fs.Parse(args); err != nil {
		return 64
	}
	path := config.Locate(*cfgPath)
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 78
	}
	// Log lines are batched (at most logging.DefaultInterval late); the
	// deferred Close flushes them on every way out. fail() writes to stderr
	// directly, so flush first where both are used.
	lw := logging.NewWriter(stderr, 0)
	defer lw.Close()
	log := newLogger(cfg, lw)

	var drop *user.User
	if os.Geteuid() == 0 {
		if cfg.User == "" {
			return failFlushed(lw, stderr, "serve", 78, "running as root: %s so qmgate can drop privileges after binding (or start it as an ordinary user, e.g. under systemd with CAP_NET_BIND_SERVICE)", rootNeedsUser(cfg))
		}
		drop, err = user.Lookup(cfg.User)
		if err != nil {
			return failFlushed(lw, stderr, "serve", 78, "user %q: %v", cfg.User, err)
		}
	}

	// Catch the signals before anything listens: once a listener answers,
	// a supervisor (or a test) may send SIGHUP or SIGTERM at any moment,
	// and the default action would end the process on the spot. A signal
	// that comes during start-up waits in the channel.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	hub, err := relay.New(cfg, log)
	if err != nil {
		return failFlushed(lw, stderr, "serve", 78, "%v", err)
	}
	ver, rev, gover := buildVersion()
	hub.SetBuildInfo(relay.BuildInfo{Version: ver, Revision: rev, GoVersion: gover})
	log.Info("starting", "version", ver, "revision", rev, "go", gover)
	if err := hub.Listen(); err != nil {
		return failFlushed(lw, stderr, "serve", 71, "%v", err)
	}
	if drop != nil {
		if err := dropPrivileges(drop, cfg, hub.UnixSockets()); err != nil {
			return failFlushed(lw, stderr, "serve", 71, "dropping privileges to %s: %v", cfg.User, err)
		}
		log.Info("dropped privileges", "user", cfg.User)
	}
	if err := hub.Start(); err != nil {
		return failFlushed(lw, stderr, "serve", 75, "%v", err)
	}

	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				nc, err := config.Load(path)
				if err == nil {
					err = hub.Reload(nc)
				}
				if err != nil {
					log.Error("reload refused; the running configuration stays", "err", err)
				}
				continue
			}
			if sig == syscall.SIGTERM && len(cfg.Shutdown.Handoff) > 0 {
				return drainServe(hub, cfg, log)
			}
			log.Info("stopping", "signal", sig.String())
			ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			err := hub.Shutdown(ctx)
			cancel()
			if err != nil {
				log.Error("shutdown", "err", err)
				return 75
			}
			log.Info("stopped")
			return 0
		case <-hub.Drained(): // qmgate drain
			return drainedExit(hub, log)
		case err := <-hub.Errors():
			log.Error("fatal listener error", "err", err)
			ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			hub.Shutdown(ctx)
			cancel()
			return 71
		}
	}
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var lv slog.Level
	lv.UnmarshalText([]byte(cfg.Log.Level))
	opt := &slog.HandlerOptions{Level: lv, ReplaceAttr: logging.ReplaceAttr}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opt))
	}
	return slog.New(slog.NewTextHandler(w, opt))
}

// dropPrivileges gives the unix sockets and the queue directory to u, then
// becomes u for good, in every thread (internal/privdrop).
func dropPrivileges(u *user.User, cfg *config.Config, sockets []string) error {
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return err
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return err
	}
	if uid == 0 {
		return errors.New("refusing to \"drop\" to root")
	}
	for _, s := range sockets {
		if err := os.Lchown(s, uid, gid); err != nil {
			return err
		}
	}
	// Parents traversable, the queue itself private to u; made and given
	// away without following links, under parents no third user can
	// rename things in (safedir).
	if _, err := safedir.MakeOwned(cfg.QueueDir, 0o700, uid, gid, false); err != nil {
		return fmt.Errorf("queue_dir: %w", err)
	}
	// Local delivery roots the daemon creates are u's; existing ones (say
	// /var/mail) are left as the administrator made them.
	for _, r := range cfg.Routes {
		if r.Parsed == nil || (r.Parsed.Scheme != "maildir" && r.Parsed.Scheme != "mbox") {
			continue
		}
		if _, err := safedir.MakeOwned(config.Dir(r.Parsed), 0o700, uid, gid, true); err != nil {
			return fmt.Errorf("route %s: %w", r.Via, err)
		}
	}
	return privdrop.To(uid, gid)
}

// failFlushed writes out pending log lines before the one-line failure, so
// the failure is the last thing on stderr.
func failFlushed(lw *logging.Writer, stderr io.Writer, cmd string, code int, format string, args ...any) int {
	lw.Flush()
	return fail(stderr, cmd, code, format, args...)
}

// drainServe takes the hub away on SIGTERM when [shutdown] handoff names
// peers: it drains, hands off what is left, and exits 0 only when nothing
// remains queued.
func drainServe(hub *relay.Hub, cfg *config.Config, log *slog.Logger) int {
	timeout := cfg.Shutdown.DrainTimeout.D()
	log.Info("draining", "signal", "SIGTERM", "deliveries_for", timeout.String(), "handoff", cfg.Shutdown.Handoff)
	// The hand-off itself gets its own time after the deliveries' window.
	ctx, cancel := context.WithTimeout(context.Background(), timeout+shutdownGrace+drainHandoffGrace)
	defer cancel()
	res, err := hub.Drain(ctx, timeout, cfg.Shutdown.Handoff)
	if err != nil {
		log.Error("drain", "err", err)
	}
	if res.Remaining > 0 {
		log.Error("stopped with mail still queued", "messages", res.Remaining, "recipients", res.RemainingRecipients,
			"handed_off", res.Handoff.Recipients)
		return 75
	}
	log.Info("stopped: queue empty or handed off", "handed_off", res.Handoff.Recipients)
	return 0
}

// drainHandoffGrace bounds the hand-off after a drain's deliveries.
const drainHandoffGrace = 10 * time.Minute
