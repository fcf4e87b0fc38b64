//go:build linux

package cluster

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var long = flag.Bool("long", false, "run the long battery and write its figures into RELIABILITY.md")

var (
	repoRoot  string
	workRoot  string
	qmgateBin string
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		fmt.Fprintln(os.Stderr, "cluster: not inside the qmgate module")
		return 1
	}
	repoRoot = filepath.Dir(mod)
	if workRoot, err = os.MkdirTemp("", "qmgate-cluster-"); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	if os.Getenv("QMGATE_KEEP") == "" {
		defer os.RemoveAll(workRoot)
	} else {
		fmt.Fprintln(os.Stderr, "cluster: keeping", workRoot)
	}
	// The hubs drop to nobody when started as root: they must reach
	// their directories.
	os.Chmod(workRoot, 0o755)
	qmgateBin = filepath.Join(workRoot, "qmgate")
	cmd := exec.Command("go", "build", "-o", qmgateBin, "./cmd/qmgate")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "cluster: building qmgate: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}
