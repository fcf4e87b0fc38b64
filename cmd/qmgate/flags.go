package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// configFlagHelp is the help of every -config flag (FILE names its value).
const configFlagHelp = "the configuration `FILE` (default: $QMGATE_CONFIG, then /etc/qmgate/qmgate.toml, then the embedded default)"

// configDefaultHelp is configFlagHelp for help texts written out in full.
const configDefaultHelp = "the configuration file (default: $QMGATE_CONFIG, then /etc/qmgate/qmgate.toml, then the embedded default)"

// newFlags returns a flag set for the command or subcommand name whose help
// is text followed by every flag with its default.
func newFlags(name, text string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() { writeUsage(fs.Output(), fs, text) }
	return fs
}

func writeUsage(w io.Writer, fs *flag.FlagSet, text string) {
	fmt.Fprintln(w, strings.TrimRight(text, "\n"))
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprintln(w, "\nflags:")
	fs.VisitAll(func(f *flag.Flag) {
		arg, help := flag.UnquoteUsage(f)
		name := "-" + f.Name
		if arg != "" && !isBoolFlag(f) {
			name += " " + arg
		}
		def := f.DefValue
		switch {
		case strings.Contains(help, "(default"):
		case def == "":
			help += " (default: none)"
		default:
			help += " (default: " + def + ")"
		}
		fmt.Fprintf(w, "  %-16s %s\n", name, help)
	})
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// parseFlags parses args with fs. Flags may come before, between and after
// the positional arguments (queue show ID -json), as the README shows them;
// "--" ends the flags. It returns the positional arguments, or ok false
// with the exit code: 0 after -h or --help (the help on stdout), 64 after a
// bad flag (the problem and the help on stderr).
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (pos []string, code int, ok bool) {
	fs.SetOutput(io.Discard)
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return nil, 0, false
		}
		if err != nil {
			fmt.Fprintf(stderr, "qmgate %s: %v\n", fs.Name(), err)
			fs.SetOutput(stderr)
			fs.Usage()
			return nil, 64, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		// Parse stops at the first positional argument, or after "--".
		if len(args) >= len(rest)+1 && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError reports a wrong use of a command: the problem, then the help,
// on stderr; exit 64 (EX_USAGE).
func usageError(fs *flag.FlagSet, stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "qmgate %s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.SetOutput(stderr)
	fs.Usage()
	return 64
}
