// Command qmgate is the one binary of qmgate: the hub daemon, the one-shot
// client, the nullclient sendmail, the queue tools and the qmail drop-ins.
// This file is wiring only: each subcommand parses its flags and calls into
// the packages.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
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
	case "sendmail", "mailq", "qmail-qmqpc", "qmail-queue", "qmail-qmtpd", "qmail-qmqpd":
		name := self
		switch self {
		case "mailq":
			return commands["sendmail"].run(append([]string{"-bp"}, argv[1:]...), stdin, stdout, stderr)
		case "qmail-qmtpd":
			name = "qmtpd"
		case "qmail-qmqpd":
			name = "qmqpd"
		}
		if c := commands[name]; c != nil {
			return c.run(argv[1:], stdin, stdout, stderr)
		}
	}
	if len(argv) < 2 {
		usage(stderr)
		return 64
	}
	name := argv[1]
	switch name {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "mailq":
		return commands["queue"].run(append([]string{"list"}, argv[2:]...), stdin, stdout, stderr)
	}
	c := commands[name]
	if c == nil {
		fmt.Fprintf(stderr, "qmgate: unknown command %q (try: qmgate help)\n", name)
		return 64
	}
	return c.run(argv[2:], stdin, stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: qmgate COMMAND [flags]")
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
	fmt.Fprintln(w, "  mailq        same as: queue list")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every command that needs the configuration takes -config FILE; without it,")
	fmt.Fprintln(w, "$QMGATE_CONFIG, then /etc/qmgate/qmgate.toml, then the embedded default.")
	fmt.Fprintln(w, "Run a command with -h for its flags.")
}

// fail prints one line to stderr in the "qmgate CMD: message" form and
// returns code.
func fail(stderr io.Writer, cmd string, code int, format string, args ...any) int {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(stderr, "qmgate %s: %s\n", cmd, strings.TrimRight(msg, "\n"))
	return code
}
