package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/inject"
	"github.com/qmgate/qmgate/internal/qmail"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/relay"
	"github.com/qmgate/qmgate/smtp"
)

func init() {
	register(&command{name: "sendmail", summary: "the nullclient sendmail (also run as sendmail or mailq)", run: runSendmail})
}

const sendmailUsage = `usage: sendmail [flags] [RECIPIENT ...]   (also: qmgate sendmail)

The nullclient sendmail: reads a message on stdin and hands it to the QMQP
servers of [nullclient] qmqp_servers (failing over between them), or keeps
it in [nullclient] spool_dir for qmgate serve to forward.

flags (sendmail's own; unknown ones are ignored, as other sendmails do):
  -t            take the recipients from To:, Cc: and Bcc: (default: off)
  -i, -oi       a line with a single dot does not end the message (default: off)
  -f ADDR       envelope sender (default: the user at default_domain)
  -F NAME       the sender's full name (default: from the password file)
  -bp           list the queue (same as mailq)
  -bs           SMTP on stdin and stdout
  -q            a queue run: nothing to do (default: off)
  -v            say what happens on stderr (default: off)
  -config FILE  ` + configDefaultHelp

// runSendmail is `qmgate sendmail` and the binary run as sendmail or mailq.
// The flags and exit codes are internal/inject's.
func runSendmail(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	// -h alone is help; "-h N" is sendmail's hop count, ignored by inject.
	if len(args) == 1 && isHelp(args[0]) || len(args) > 0 && args[0] == "--help" {
		fmt.Fprintln(stdout, sendmailUsage)
		return 0
	}
	opts, err := inject.ParseArgs(args)
	if err != nil {
		return fail(stderr, "sendmail", inject.ExitOf(err), "%v", err)
	}
	verbose := func(format string, a ...any) {
		if opts.Verbose {
			fmt.Fprintf(stderr, "qmgate sendmail: "+format+"\n", a...)
		}
	}
	for _, f := range opts.Ignored {
		verbose("ignoring %s", f)
	}
	if opts.Mode == inject.ModeNoop {
		verbose("nothing to do")
		return 0
	}
	cfg, err := config.LoadFrom(config.Find(opts.ConfigPath))
	if err != nil {
		return fail(stderr, "sendmail", inject.ExitConfig, "%v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch opts.Mode {
	case inject.ModeList:
		return showMailq("qmgate sendmail", cfg, false, stdout, stderr)
	case inject.ModeSMTP:
		return sendmailSMTP(ctx, cfg, opts, stdin, stdout, stderr)
	}
	if len(cfg.Nullclient.QMQPServers) == 0 && cfg.Nullclient.SpoolDir == "" {
		return fail(stderr, "sendmail", inject.ExitConfig, "%s: no [nullclient] qmqp_servers and no spool_dir: nowhere to send mail", cfg.Source)
	}
	c := composer(cfg)
	msg, err := c.Compose(opts, stdin)
	if err != nil {
		return fail(stderr, "sendmail", inject.ExitOf(err), "%v", err)
	}
	defer msg.Close()
	out := nullclient(cfg, verbose).Send(ctx, msg)
	code := inject.ExitCode(out.Status)
	if code != 0 {
		return fail(stderr, "sendmail", code, "%s", string(out.Status.Reply()[1:]))
	}
	verbose("accepted by %s: %s", out.Where, out.Status.SMTPText())
	return 0
}

// composer builds the Composer from the configuration and the real user.
func composer(cfg *config.Config) *inject.Composer {
	id, err := inject.SystemIdentity()
	if err != nil {
		// No password entry (a container, say): the uid still names the
		// sender, never an empty one.
		id.User = "uid" + id.UID
	}
	return &inject.Composer{
		Hostname:        cfg.Hostname,
		DefaultDomain:   cfg.DefaultDomain,
		Identity:        id,
		MaxMessageBytes: cfg.MaxMessageBytes,
		MaxRecipients:   cfg.MaxRecipients,
	}
}

func nullclient(cfg *config.Config, verbose func(string, ...any)) *inject.Nullclient {
	n := &inject.Nullclient{
		Servers:  cfg.Nullclient.QMQPServers,
		SpoolDir: cfg.Nullclient.SpoolDir,
		Timeout:  cfg.Nullclient.Timeout.D(),
		Verbose:  verbose,
	}
	if s := localQMQP(cfg); len(s) > 0 {
		n.Local = s[0]
	}
	if n.SpoolDir != "" {
		n.Commit = relay.CommitToQueue
	}
	return n
}

// localQMQP returns the daemon's unix-socket QMQP listeners ("unix:/path"),
// the way in for unprivileged local programs.
func localQMQP(cfg *config.Config) []string {
	var out []string
	for _, l := range cfg.QMQP.Listen {
		if strings.HasPrefix(l, "unix:") {
			out = append(out, l)
		}
	}
	return out
}

// sendmailSMTP is sendmail -bs: SMTP on stdin and stdout, each message
// composed and sent as the command line would.
func sendmailSMTP(ctx context.Context, cfg *config.Config, opts *inject.Options, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(cfg.Nullclient.QMQPServers) == 0 && cfg.Nullclient.SpoolDir == "" {
		return fail(stderr, "sendmail", inject.ExitConfig, "%s: no [nullclient] qmqp_servers and no spool_dir: nowhere to send mail", cfg.Source)
	}
	h := &bsHandler{c: composer(cfg), n: nullclient(cfg, func(string, ...any) {})}
	srv := &smtp.Server{
		Handler:         h,
		Hostname:        cfg.Hostname,
		MaxMessageBytes: cfg.MaxMessageBytes,
		MaxRecipients:   cfg.MaxRecipients,
		MaxHops:         cfg.MaxHops,
		ErrorLog:        discardLogger(),
	}
	info := &mail.ConnInfo{Proto: "SMTP", RemoteHost: "localhost", LocalHost: cfg.Hostname}
	if err := srv.ServeConn(ctx, qmail.StreamConn(stdin, stdout), info); err != nil {
		return fail(stderr, "sendmail", inject.ExitTempFail, "%v", err)
	}
	return 0
}

// bsHandler takes SMTP transactions from a local program.
type bsHandler struct {
	c *inject.Composer
	n *inject.Nullclient
}

func (h *bsHandler) Sender(ctx context.Context, c *mail.ConnInfo, from string) mail.Status {
	return mail.OK("")
}

func (h *bsHandler) Recipient(ctx context.Context, c *mail.ConnInfo, from, rcpt string) mail.Status {
	if len(inject.ParseAddressList(rcpt)) != 1 {
		return mail.StatusBadRecipient
	}
	return mail.OK("")
}

func (h *bsHandler) Deliver(ctx context.Context, c *mail.ConnInfo, env mail.Envelope, body io.Reader) mail.Status {
	// The server's own Received line ("from localhost") says less than the
	// one Compose adds (the uid): drop it.
	br := bufio.NewReader(body)
	for first := true; ; first = false {
		if !first {
			if c, err := br.Peek(1); err != nil || (c[0] != ' ' && c[0] != '\t') {
				break
			}
		}
		if _, err := br.ReadString('\n'); err != nil {
			return mail.StatusOf(err)
		}
	}
	opts := &inject.Options{Sender: env.Sender, SenderSet: true, Recipients: env.Recipients, IgnoreDots: true}
	msg, err := h.c.Compose(opts, br)
	if err != nil {
		io.Copy(io.Discard, br)
		if e, ok := err.(*inject.Error); ok {
			return e.Status()
		}
		return mail.StatusTempFailure
	}
	defer msg.Close()
	return h.n.Send(ctx, msg).Status
}
