package main

import (
	"fmt"
	"io"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/qmail"
)

const configUsage = `usage: qmgate config check [FILE] [-strict] [-config FILE]
       qmgate config print [FILE] [-n | -doc] [-config FILE]
       qmgate config from-qmail DIR
       qmgate config from-nullmailer DIR
  check       load FILE (default: the file every command would use), report
              every error with its line, and warn about routes that can
              never match and rcpthosts domains no route delivers
  print       the effective configuration, every default filled in; -n only
              what the file sets (like postconf -n); -doc one line per key
  from-qmail  a configuration converted from qmail's control files in DIR
  from-nullmailer
              a configuration converted from nullmailer's files in DIR

flags:
  -config FILE  ` + configDefaultHelp + `
  -strict       check: treat warnings as errors (default: false)
  -n            print: only the settings the file makes (default: false)
  -doc          print: every key with a one-line description (default: false)
qmgate config COMMAND -h shows one command's help.`

func init() {
	register(&command{name: "config", summary: "check|print [FILE] | from-qmail|from-nullmailer DIR: validate, show or convert configuration",
		usage: configUsage, run: runConfig})
}

func runConfig(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	sub, code, ok := subcommand(args, configUsage, stdout, stderr)
	if !ok {
		return code
	}
	switch sub {
	case "check":
		return runConfigCheck(args[1:], stdout, stderr)
	case "print":
		return runConfigPrint(args[1:], stdout, stderr)
	case "from-qmail", "from-nullmailer":
		c := converters[sub]
		fs := newFlags("config "+sub, "usage: qmgate config "+sub+" DIR\n\nPrint a qmgate configuration converted from "+c.what+", with a comment for every setting that could not be carried over.")
		pos, code, ok := parseFlags(fs, args[1:], stdout, stderr)
		if !ok {
			return code
		}
		if len(pos) != 1 {
			return usageError(fs, stderr, "want one directory")
		}
		out, err := c.convert(pos[0])
		if err != nil {
			return fail(stderr, "config "+sub, 66, "%v", err) // EX_NOINPUT
		}
		stdout.Write(out)
		return 0
	}
	fmt.Fprintf(stderr, "qmgate config: unknown command %q\n", sub)
	fmt.Fprintln(stderr, configUsage)
	return 64
}

// loadConfigArg loads the file given as the positional argument or with
// -config (not both), else the one every command would use.
func loadConfigArg(name string, pos []string, flagValue string, stderr io.Writer) (*config.Config, int) {
	path, origin := config.Find(flagValue)
	switch {
	case len(pos) > 1:
		fmt.Fprintf(stderr, "qmgate config %s: unexpected argument %q (one file at a time)\n", name, pos[1])
		return nil, 64
	case len(pos) == 1 && flagValue != "" && flagValue != pos[0]:
		fmt.Fprintf(stderr, "qmgate config %s: two files named (%s and -config %s): name one\n", name, pos[0], flagValue)
		return nil, 64
	case len(pos) == 1:
		path, origin = pos[0], "the command line"
	}
	c, err := config.LoadFrom(path, origin)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, 78 // EX_CONFIG
	}
	return c, 0
}

func runConfigCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("config check", "usage: qmgate config check [FILE] [-strict] [-config FILE]\n\nLoad the configuration and report every error, each with its file and line\n(exit 78), then every warning (exit 0, or 78 with -strict). FILE defaults to\nthe file every command would use.")
	cfgPath := fs.String("config", "", configFlagHelp)
	strict := fs.Bool("strict", false, "treat warnings as errors")
	pos, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	c, code := loadConfigArg("check", pos, *cfgPath, stderr)
	if c == nil {
		return code
	}
	problems := append(c.Warnings(), c.CheckFiles()...)
	for _, w := range problems {
		fmt.Fprintf(stderr, "warning: %v\n", w)
	}
	switch {
	case len(problems) > 0 && *strict:
		fmt.Fprintf(stderr, "%s: %d warning(s), refused under -strict\n", c.Source, len(problems))
		return 78
	case len(problems) > 0:
		fmt.Fprintf(stdout, "%s: ok, with %d warning(s)\n", c.Source, len(problems))
	default:
		fmt.Fprintf(stdout, "%s: ok\n", c.Source)
	}
	return 0
}

func runConfigPrint(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("config print", "usage: qmgate config print [FILE] [-n | -doc] [-config FILE]\n\nPrint the effective configuration as TOML, every default filled in.")
	cfgPath := fs.String("config", "", configFlagHelp)
	onlySet := fs.Bool("n", false, "only the settings the file makes (like postconf -n)")
	doc := fs.Bool("doc", false, "every key with a one-line description instead")
	pos, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if *onlySet && *doc {
		return usageError(fs, stderr, "-n and -doc do not go together")
	}
	if *doc {
		if len(pos) > 0 || *cfgPath != "" {
			return usageError(fs, stderr, "-doc describes the keys and reads no file")
		}
		if err := config.WriteDoc(stdout); err != nil {
			return fail(stderr, "config print", 74, "%v", err)
		}
		return 0
	}
	c, code := loadConfigArg("print", pos, *cfgPath, stderr)
	if c == nil {
		return code
	}
	var b []byte
	var err error
	if *onlySet {
		b, err = c.PrintSet()
	} else {
		b, err = c.Print()
	}
	if err != nil {
		return fail(stderr, "config print", 70, "%v", err)
	}
	stdout.Write(b)
	return 0
}

// converters turn another mail system's configuration directory into
// qmgate's TOML.
var converters = map[string]struct {
	what    string
	convert func(dir string) ([]byte, error)
}{
	"from-qmail":      {"qmail's control files in DIR (/var/qmail/control, say)", qmail.FromQmail},
	"from-nullmailer": {"nullmailer's configuration in DIR (/etc/nullmailer, say)", qmail.FromNullmailer},
}
