package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// version is the release's version, stamped by the release build with
// -ldflags "-X main.version=v1.2.3"; empty in other builds, which report the
// module version the Go tool recorded.
var version string

func init() {
	register(&command{name: "version", summary: "print the version, the commit and the Go version", noConfig: true, run: runVersion})
}

// buildVersion returns the version, the commit (with "-dirty" when built
// from a modified tree) and the Go version of this binary.
func buildVersion() (ver, revision, goVersion string) {
	ver, revision, goVersion = version, "unknown", "unknown"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		if ver == "" {
			ver = "unknown"
		}
		return ver, revision, goVersion
	}
	goVersion = info.GoVersion
	if ver == "" {
		ver = info.Main.Version
	}
	if ver == "" {
		ver = "(devel)"
	}
	dirty := ""
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	return ver, revision + dirty, goVersion
}

// versionText is what qmgate version prints.
func versionText() string {
	v, r, g := buildVersion()
	return fmt.Sprintf("qmgate %s (commit %s, %s)", v, r, g)
}

func runVersion(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlags("version", "usage: qmgate version   (also: qmgate -version, qmgate --version)\n\nPrint the version, the commit and the Go version of this binary.")
	pos, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(fs, stderr, "unexpected argument %q", pos[0])
	}
	fmt.Fprintln(stdout, versionText())
	return 0
}
