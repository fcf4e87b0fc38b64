package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/qmgate/qmgate/internal/testpeer"
)

// Script commands for scenarios that run `qmgate serve`:
//
//	freeport NAME...        $NAME is a loopback host:port reserved for
//	                        the script (a daemon it starts binds it)
//	waitport ADDR           wait (up to 30 s) until ADDR accepts connections
//	waitfiles DIR N         wait (up to 30 s) until DIR holds N files
//	waitstdout REGEXP COMMAND [ARGS...]
//	                        run COMMAND (for up to 30 s) until it succeeds
//	                        and its stdout matches REGEXP; its stdout and
//	                        stderr stay for the next commands
//	asroot FILE             when running as root, add user = "nobody" to the
//	                        configuration FILE and open the work directory to
//	                        that user (serve refuses root without `user`)
//
// Condition [root] is true when the tests run as root.

func cmdFreePort(ts *testscript.TestScript, neg bool, args []string) {
	for _, name := range args {
		ts.Setenv(name, reservePort(ts))
	}
}

// reservePort returns a loopback address reserved until the script ends
// (testpeer.Reserve): scripts run in parallel and start listeners on port
// 0, which could otherwise be given a port that a script picked for the
// daemon it starts later, or for an address nobody listens on.
func reservePort(ts *testscript.TestScript) string {
	addr, release, err := testpeer.Reserve("127.0.0.1", 0)
	ts.Check(err)
	ts.Defer(release)
	return addr
}

func cmdWaitPort(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: waitport ADDR")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", args[0], time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s never accepted a connection: %v", args[0], err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cmdWaitFiles(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: waitfiles DIR N")
	}
	want, err := strconv.Atoi(args[1])
	ts.Check(err)
	dir := ts.MkAbs(args[0])
	deadline := time.Now().Add(30 * time.Second)
	for {
		ents, _ := os.ReadDir(dir)
		if len(ents) == want {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s holds %d files, want %d", args[0], len(ents), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cmdWaitStdout waits for state the daemon reaches a little after a side
// effect the script can see: a Maildir file is there before its delivery
// is recorded and the message leaves the queue.
func cmdWaitStdout(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: waitstdout REGEXP COMMAND [ARGS...]")
	}
	re, err := regexp.Compile("(?m)" + args[0])
	ts.Check(err)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := ts.Exec(args[1], args[2:]...)
		if err == nil && re.MatchString(ts.ReadFile("stdout")) {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s: stdout never matched %q within 30 s (last exit: %v)", args[1], args[0], err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cmdAsRoot(ts *testscript.TestScript, neg bool, args []string) {
	if os.Geteuid() != 0 {
		return
	}
	for _, f := range args {
		p := ts.MkAbs(f)
		b, err := os.ReadFile(p)
		ts.Check(err)
		ts.Check(os.WriteFile(p, append([]byte("user = \"nobody\"\n"), b...), 0o644))
	}
	work := ts.Getenv("WORK")
	// World-writable for the daemon's user, and sticky like /tmp: the
	// daemon refuses a queue whose parent others could swap it out of.
	ts.Check(os.Chmod(work, 0o777|os.ModeSticky))
	for d := filepath.Dir(work); strings.HasPrefix(d, os.TempDir()) && len(d) > len(os.TempDir()); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
}

func scriptCondition(cond string) (bool, error) {
	switch cond {
	case "root":
		return os.Geteuid() == 0, nil
	}
	return false, fmt.Errorf("unknown condition %q", cond)
}

// scriptWorkdirRoot is where script work directories go: a fresh directory
// that the unprivileged user of a root run can traverse.
func scriptWorkdirRoot() string {
	d, err := os.MkdirTemp("", "qmgate-scripts-")
	if err != nil {
		return ""
	}
	os.Chmod(d, 0o755)
	return d
}
