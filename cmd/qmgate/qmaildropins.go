package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/qmail"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/relay"
)

func init() {
	register(&command{name: "qmail-qmqpc", summary: "qmail-qmqpc drop-in: message on fd 0, envelope on fd 1, to control/qmqpservers", run: runQmqpc})
	register(&command{name: "qmail-queue", summary: "qmail-queue drop-in: message on fd 0, envelope on fd 1, into qmgate's queue", run: runQmailQueue})
	register(&command{name: "qmtpd", summary: "qmail-qmtpd drop-in: QMTP on stdin/stdout (tcpserver, inetd)", run: runQmtpd})
	register(&command{name: "qmqpd", summary: "qmail-qmqpd drop-in: QMQP on stdin/stdout (tcpserver, inetd)", run: runQmqpd})
}

// Exit codes of qmail-qmtpd and qmail-qmqpd: 100 for a client that broke
// the protocol, 111 for a temporary trouble (qmail's daemons exit so).
const (
	exitDaemonProtocol = 100 // the client broke the protocol
	exitDaemonTrouble  = 111 // configuration or resources
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// daemonLogger logs to stderr, which tcpserver hands to its logger.
func daemonLogger(cfg *config.Config) *slog.Logger {
	level := slog.LevelInfo
	level.UnmarshalText([]byte(cfg.Log.Level))
	o := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, o))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, o))
}

// fdFile returns the *os.File behind a standard stream, for the qmail-queue
// fd protocol, which reads fd 1.
func fdFile(v any) (*os.File, bool) {
	f, ok := v.(*os.File)
	return f, ok
}

// readQueueInput reads what qmail-queue reads: the whole message from fd 0
// into m, then the envelope from fd 1. The exit code is qmail-queue's for
// the first failure, or 0, and that failure in plain words.
func readQueueInput(m qmail.Message, stdin io.Reader, stdout io.Writer, maxRcpt int) (mail.Envelope, int, string) {
	if _, err := io.Copy(m, stdin); err != nil {
		return mail.Envelope{}, qmail.ExitReadError, "could not read the message from standard input: " + err.Error()
	}
	fd1, ok := fdFile(stdout)
	if !ok {
		return mail.Envelope{}, qmail.ExitReadError, "the envelope must come on file descriptor 1, as qmail-queue reads it"
	}
	env, err := qmail.ReadEnvelope(fd1, maxRcpt)
	if err != nil {
		var ee *qmail.EnvelopeError
		if errors.As(err, &ee) {
			return mail.Envelope{}, ee.Code, "bad envelope on file descriptor 1: " + ee.Err.Error()
		}
		return mail.Envelope{}, qmail.ExitReadError, "could not read the envelope from file descriptor 1: " + err.Error()
	}
	return env, 0, ""
}

// runQmqpc is qmail-qmqpc: the servers come from control/qmqpservers under
// -qmail DIR (default $QMAILHOME, then /var/qmail), else from qmgate's
// [nullclient] qmqp_servers; none at all is exit 55.
func runQmqpc(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, cfgPath := helpFlags("qmail-qmqpc", stderr)
	if err := fs.Parse(args); err != nil {
		return qmail.ExitConfig
	}
	servers, err := qmqpServers(fs.Lookup("qmail").Value.String(), *cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "qmgate qmail-qmqpc: %v\n", err)
		return qmail.ExitConfig
	}
	res, _ := putQueueInput(&relay.QMQPSink{Servers: servers}, nil, stdin, stdout, 0)
	reportQueueFailure(stderr, "qmail-qmqpc", res)
	return res.Exit
}

// putQueueInput reads what qmail-queue reads into a message of sink, trace
// first, and commits it. committed is false when nothing was committed
// (res.Exit says why, or is 0 for an envelope without recipients: qmail-queue
// takes one, and the message goes nowhere).
func putQueueInput(sink qmail.Sink, trace []byte, stdin io.Reader, stdout io.Writer, maxRcpt int) (res qmail.Result, committed bool) {
	m, err := sink.Begin(context.Background())
	if err != nil {
		return qmail.Result{Exit: qmail.ExitWriteError, Problem: "could not make a temporary file for the message in " + os.TempDir()}, false
	}
	m.Write(trace)
	env, code, problem := readQueueInput(m, stdin, stdout, maxRcpt)
	if code != 0 || len(env.Recipients) == 0 {
		m.Abort()
		return qmail.Result{Exit: code, Problem: problem}, false
	}
	return m.Commit(context.Background(), env), true
}

func qmailHome() string {
	if h := os.Getenv("QMAILHOME"); h != "" {
		return h
	}
	return "/var/qmail"
}

func qmqpServers(home, cfgPath string) ([]string, error) {
	lines, err := qmail.ReadControlLines(filepath.Join(home, "control", "qmqpservers"))
	if err == nil {
		servers, _ := qmail.ParseQMQPServers(lines)
		if len(servers) == 0 {
			return nil, fmt.Errorf("%s/control/qmqpservers names no server", home)
		}
		return servers, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if path := config.Locate(cfgPath); path != "" {
		cfg, cerr := config.Load(path)
		if cerr != nil {
			return nil, cerr
		}
		if len(cfg.Nullclient.QMQPServers) > 0 {
			return cfg.Nullclient.QMQPServers, nil
		}
	}
	return nil, fmt.Errorf("%s/control/qmqpservers is missing and no qmgate configuration names [nullclient] qmqp_servers", home)
}

// daemonSink is where qmgate's own queue takes messages from local
// programs: the daemon's unix-socket QMQP listener, then the queue
// directory itself when the daemon is down and this user may write it.
func daemonSink(cfg *config.Config) *relay.QMQPSink {
	return &relay.QMQPSink{Servers: localQMQP(cfg), QueueDir: cfg.QueueDir, Timeout: cfg.QMQP.WriteTimeout.D()}
}

// runQmailQueue is qmail-queue for qmail's front ends: any user may run it;
// the message reaches qmgate's queue through the daemon.
func runQmailQueue(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, cfgPath := helpFlags("qmail-queue", stderr)
	if err := fs.Parse(args); err != nil {
		return qmail.ExitConfig
	}
	cfg, err := config.Load(config.Locate(*cfgPath))
	if err != nil {
		fmt.Fprintf(stderr, "qmgate qmail-queue: %v\n", err)
		return qmail.ExitConfig
	}
	// qmail-queue's own trace line, on top of the message.
	b := []byte("Received: (qmgate " + strconv.Itoa(os.Getpid()) + " invoked by uid " + strconv.Itoa(os.Getuid()) + "); ")
	b = mail.AppendDate822(b, time.Now())
	res, _ := putQueueInput(daemonSink(cfg), append(b, '\n'), stdin, stdout, cfg.MaxRecipients)
	reportQueueFailure(stderr, "qmail-queue", res)
	return res.Exit
}

// reportQueueFailure tells the person or the log behind stderr why a
// message was not queued: the sink's plain reason, else the refusal in
// words (qmail's exit code stays the program's answer).
func reportQueueFailure(stderr io.Writer, name string, res qmail.Result) {
	if res.Exit == 0 {
		return
	}
	why := res.Problem
	if why == "" && res.Status.Text != "" {
		why = res.Status.Describe()
	}
	if why == "" {
		why = qmail.StatusForExit(res.Exit, nil).Describe()
	}
	fmt.Fprintf(stderr, "qmgate %s: message not queued: %s\n", name, why)
}

func runQmtpd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runDropIn("qmtpd", "QMTP", args, stdin, stdout, stderr)
}

func runQmqpd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runDropIn("qmqpd", "QMQP", args, stdin, stdout, stderr)
}

// runDropIn serves the one connection on stdin and stdout with the hub's
// QMTP or QMQP server (relay.DropIn) until it ends or SIGTERM comes. The
// sink is $QMAILQUEUE's program, else qmgate's queue through the daemon.
func runDropIn(name, proto string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, cfgPath := helpFlags(name, stderr)
	if err := fs.Parse(args); err != nil {
		return exitDaemonTrouble
	}
	cfg, err := config.Load(config.Locate(*cfgPath))
	if err != nil {
		fmt.Fprintf(stderr, "qmgate %s: %v\n", name, err)
		return exitDaemonTrouble
	}
	d := &relay.DropIn{Config: cfg, Env: qmail.ReadEnv(proto, os.LookupEnv), Sink: daemonSink(cfg), Log: daemonLogger(cfg)}
	if p := os.Getenv("QMAILQUEUE"); p != "" {
		d.Sink, d.Program = qmail.ProgramSink{Queue: &qmail.Queue{Path: p, Stderr: os.Stderr}}, true
	}
	if err := d.LoadRoutes(); err != nil {
		fmt.Fprintf(stderr, "qmgate %s: %v\n", name, err)
		return exitDaemonTrouble
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	conn := qmail.StreamConn(stdin, stdout)
	if proto == "QMTP" {
		err = d.QMTPServer().ServeConn(ctx, conn, &d.Env.Conn)
	} else {
		err = d.QMQPServer().ServeConn(ctx, conn, &d.Env.Conn)
	}
	if errors.Is(err, qmtp.ErrProtocol) || errors.Is(err, qmqp.ErrMalformed) {
		return exitDaemonProtocol
	}
	return 0
}
