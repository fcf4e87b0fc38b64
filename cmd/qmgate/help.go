package main

import (
	"fmt"
	"io"
)

func init() {
	register(&command{name: "help", summary: "COMMAND: print a command's help", noConfig: true, run: runHelp,
		usage: "usage: qmgate help [COMMAND [SUBCOMMAND]]\n\nPrint the help of COMMAND (queue list, config check, ...), or the list of commands."})
	register(&command{name: "newaliases", summary: "nothing to do: qmgate keeps no aliases database (also run as newaliases)", noConfig: true, run: runNewaliases,
		usage: "usage: qmgate newaliases   (also run as newaliases)\n\nqmgate keeps no aliases database, so there is nothing to rebuild; this exits 0\nso that scripts and packages that run newaliases keep working."})
}

func runHelp(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		usage(stdout)
		return 0
	case len(args) == 2 && args[0] == "queue" && queueSubUsage[args[1]] != "":
		return runQueue([]string{args[1], "-h"}, nil, stdout, stderr)
	case len(args) == 2 && args[0] == "config" && (args[1] == "check" || args[1] == "print"):
		return runConfig([]string{args[1], "-h"}, nil, stdout, stderr)
	case len(args) > 1:
		fmt.Fprintf(stderr, "qmgate help: unexpected argument %q\n", args[1])
		printHelp(stderr, commands["help"])
		return 64
	case isHelp(args[0]):
		return printHelp(stdout, commands["help"])
	case args[0] == "mailq":
		return printHelp(stdout, &command{name: "mailq", usage: mailqUsage})
	}
	c := commands[args[0]]
	if c == nil {
		fmt.Fprintf(stderr, "qmgate help: unknown command %q (qmgate help lists the commands)\n", args[0])
		return 64
	}
	if c.name == "sendmail" {
		fmt.Fprintln(stdout, sendmailUsage)
		return 0
	}
	return printHelp(stdout, c)
}

// runNewaliases is newaliases: nothing to rebuild, as with nullmailer's.
func runNewaliases(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && isHelp(args[0]) {
		return printHelp(stdout, commands["newaliases"])
	}
	fmt.Fprintln(stdout, "newaliases: qmgate keeps no aliases database; nothing to rebuild")
	return 0
}
