package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/qmgate/qmgate/internal/config"
)

func init() {
	register(&command{name: "config", summary: "check|print|from-qmail DIR: validate, show or convert configuration", run: runConfig})
}

func runConfig(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) < 1 {
		fmt.Fprintln(stderr, "usage: qmgate config check|print [-config FILE] | from-qmail DIR")
		return 64
	}
	sub := args[0]
	fs := flag.NewFlagSet("config "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file")
	if err := fs.Parse(args[1:]); err != nil {
		return 64
	}
	switch sub {
	case "check", "print":
		path := config.Locate(*cfgPath)
		c, err := config.Load(path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 78 // EX_CONFIG
		}
		if sub == "check" {
			fmt.Fprintf(stdout, "%s: ok\n", c.Source)
			return 0
		}
		b, err := c.Print()
		if err != nil {
			return fail(stderr, "config", 70, "%v", err)
		}
		stdout.Write(b)
		return 0
	case "from-qmail":
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, "usage: qmgate config from-qmail DIR")
			return 64
		}
		return runFromQmail(fs.Arg(0), stdout, stderr)
	}
	fmt.Fprintf(stderr, "qmgate config: unknown subcommand %q (check, print, from-qmail)\n", sub)
	return 64
}

// runFromQmail is replaced when the qmail conversion lands.
var runFromQmail = func(dir string, stdout, stderr io.Writer) int {
	return fail(stderr, "config from-qmail", 69, "not available in this build")
}
