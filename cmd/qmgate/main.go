// Command qmgate is the one binary of qmgate: the hub daemon, the one-shot
// client, the nullclient sendmail, the queue tools and the qmail drop-ins.
// This file is wiring only: each subcommand parses its flags and calls into
// the packages.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/qmgate/qmgate/internal/config"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	// usage is the full help text ("usage: qmgate NAME ..." and the flags);
	// empty: helpText has it.
	usage string
	// noConfig marks commands that read no configuration file, so that a
	// global -config before them is refused rather than ignored.
	noConfig bool
	run      func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// run dispatches on the subcommand, or on the program's own name when the
// binary is invoked through a link (sendmail, mailq, qmail-qmqpc, ...).
func run(argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	self := filepath.Base(argv[0])
	switch self {
	case "mailq":
		return runMailq("mailq", argv[1:], stdout, stderr)
	case "newaliases":
		return runNewaliases(argv[1:], stdin, stdout, stderr)
	case "sendmail", "qmail-qmqpc", "qmail-queue", "qmail-qmtpd", "qmail-qmqpd":
		name := self
		switch self {
		case "qmail-qmtpd":
			name = "qmtpd"
		case "qmail-qmqpd":
			name = "qmqpd"
		}
		if c := commands[name]; c != nil {
			if name != "sendmail" && len(argv) == 2 && isHelp(argv[1]) {
				return printHelp(stdout, c)
			}
			return c.run(argv[1:], stdin, stdout, stderr)
		}
	}
	// Global flags: the ones that make sense before any command.
	args := argv[1:]
	var globalConfig string
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		a := args[0]
		switch {
		case isHelp(a):
			usage(stdout)
			return 0
		case a == "-version" || a == "--version":
			fmt.Fprintln(stdout, versionText())
			return 0
		case a == "-config" || a == "--config":
			if len(args) < 2 {
				fmt.Fprintln(stderr, "qmgate: -config needs a file name")
				return 64
			}
			globalConfig, args = args[1], args[2:]
			continue
		case strings.HasPrefix(a, "-config=") || strings.HasPrefix(a, "--config="):
			_, globalConfig, _ = strings.Cut(a, "=")
		default:
			fmt.Fprintf(stderr, "qmgate: unknown flag %s before the command (qmgate -h lists the commands; a command's own flags follow it)\n", a)
			return 64
		}
		args = args[1:]
	}
	if len(args) == 0 {
		usage(stderr)
		return 64
	}
	name, args := args[0], args[1:]
	if name == "mailq" {
		if globalConfig != "" {
			args = append([]string{"-config", globalConfig}, args...)
		}
		return runMailq("qmgate mailq", args, stdout, stderr)
	}
	c := commands[name]
	if c == nil {
		fmt.Fprintf(stderr, "qmgate: unknown command %q (qmgate help lists the commands)\n", name)
		return 64
	}
	if globalConfig != "" {
		switch {
		case c.noConfig:
			fmt.Fprintf(stderr, "qmgate: -config does not apply to %s, which reads no configuration\n", name)
			return 64
		case name == "queue" || name == "config":
			// Their flags may follow the subcommand and its arguments.
			args = append(args, "-config", globalConfig)
		default:
			args = append([]string{"-config", globalConfig}, args...)
		}
	}
	// The commands whose flag parsing lives elsewhere get their help here,
	// before they could read stdin or start anything.
	if _, ok := helpText[name]; ok {
		if len(args) > 0 && isHelp(args[0]) {
			return printHelp(stdout, c)
		}
		if a := strayArg(args); a != "" {
			fmt.Fprintf(stderr, "qmgate %s: unexpected argument %q\n", name, a)
			printHelp(stderr, c)
			return 64
		}
	}
	return c.run(args, stdin, stdout, stderr)
}

// strayArg returns the first argument that is neither a flag nor the value
// of -config or -qmail: the commands of helpText take no other.
func strayArg(args []string) string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			if i+1 < len(args) {
				return args[i+1]
			}
			return ""
		case a == "-config" || a == "--config" || a == "-qmail" || a == "--qmail":
			i++
		case !strings.HasPrefix(a, "-"):
			return a
		}
	}
	return ""
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// subcommand returns the subcommand args names. Without one it prints usage
// to stderr (exit 64); asked for help, to stdout (exit 0).
func subcommand(args []string, usage string, stdout, stderr io.Writer) (sub string, code int, ok bool) {
	switch {
	case len(args) < 1:
		fmt.Fprintln(stderr, usage)
		return "", 64, false
	case isHelp(args[0]):
		fmt.Fprintln(stdout, usage)
		return "", 0, false
	}
	return args[0], 0, true
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: qmgate [-config FILE] COMMAND [arguments and flags]")
	fmt.Fprintln(w, "       qmgate -version | -h | help COMMAND")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "  mailq        the queue in Postfix's mailq layout (also run as mailq, or sendmail -bp)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every command that reads the configuration takes -config FILE; without it,")
	fmt.Fprintln(w, "$QMGATE_CONFIG, then /etc/qmgate/qmgate.toml, then the embedded default.")
	fmt.Fprintln(w, "qmgate help COMMAND, or COMMAND -h, shows a command's flags.")
}

// printHelp writes a command's help to w and returns 0.
func printHelp(w io.Writer, c *command) int {
	if _, ok := helpText[c.name]; ok {
		fs, _ := helpFlags(c.name, w)
		fs.Usage()
		return 0
	}
	text := c.usage
	if text == "" {
		text = "usage: qmgate " + c.name + "\n\n" + c.summary
	}
	fmt.Fprintln(w, strings.TrimRight(text, "\n"))
	return 0
}

// helpText is the help of the commands whose flags are parsed before they
// run (they read stdin or start serving at once): the text above the flags
// that helpFlags lists.
var helpText = map[string]string{
	"serve": `usage: qmgate serve [-config FILE]

Run the hub: the SMTP, QMTP and QMQP listeners of the configuration, the
durable queue and the deliveries. SIGHUP reloads the configuration (a bad
one is refused and the running one kept); SIGTERM or SIGINT stops.`,
	"qmtpd": `usage: qmgate qmtpd [-config FILE]   (also run as qmail-qmtpd)

qmail-qmtpd drop-in: QMTP on stdin and stdout, under tcpserver or inetd.
Mail goes into qmgate's queue through the daemon, or to $QMAILQUEUE's program.
The configuration gives rcpthosts, sizes and the daemon's socket.`,
	"qmqpd": `usage: qmgate qmqpd [-config FILE]   (also run as qmail-qmqpd)

qmail-qmqpd drop-in: QMQP on stdin and stdout, under tcpserver or inetd.
Mail goes into qmgate's queue through the daemon, or to $QMAILQUEUE's program.
The configuration gives rcpthosts, sizes and the daemon's socket.`,
	"qmail-queue": `usage: qmgate qmail-queue [-config FILE]   (also run as qmail-queue)

qmail-queue drop-in for qmail's front ends: the message on descriptor 0, the
envelope on descriptor 1, into qmgate's queue through the daemon.`,
	"qmail-qmqpc": `usage: qmgate qmail-qmqpc [-qmail DIR] [-config FILE]   (also run as qmail-qmqpc)

qmail-qmqpc drop-in: the message on descriptor 0, the envelope on descriptor
1, to the QMQP servers of DIR/control/qmqpservers, else of [nullclient]
qmqp_servers.`,
}

// helpFlags is the flag set of a command of helpText, whose help is that
// text and the flags: -config, and -qmail for qmail-qmqpc.
func helpFlags(name string, output io.Writer) (fs *flag.FlagSet, cfgPath *string) {
	fs = newFlags(name, helpText[name])
	fs.SetOutput(output)
	if name == "qmail-qmqpc" {
		fs.String("qmail", qmailHome(), "qmail's home `DIR`, where control/qmqpservers is read (default: $QMAILHOME, then /var/qmail)")
	}
	return fs, fs.String("config", "", configFlagHelp)
}

// fail prints one line to stderr in the "qmgate CMD: message" form and
// returns code.
func fail(stderr io.Writer, cmd string, code int, format string, args ...any) int {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(stderr, "qmgate %s: %s\n", cmd, strings.TrimRight(msg, "\n"))
	return code
}

// rootNeedsUser says how to name the user a root daemon drops to: in the
// configuration file, or, on the embedded default (which cannot be edited),
// in a file of one's own.
func rootNeedsUser(cfg *config.Config) string {
	if cfg.Source == config.Embedded {
		return fmt.Sprintf("the embedded default names no user; write a configuration file with `user = \"NAME\"` (qmgate config print > %s gives a start) and name it with -config or $%s", config.DefaultPath, config.EnvVar)
	}
	return fmt.Sprintf("set `user = \"NAME\"` in %s", cfg.Source)
}
