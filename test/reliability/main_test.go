//go:build linux

package reliability

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// full selects the numbers instead of the short mode's.
var full = flag.Bool("full", os.Getenv("QMGATE_RELIABILITY") == "full",
	"run the full battery and write RELIABILITY.md (also QMGATE_RELIABILITY=full)")

// qmgateBin is the daemon under test, built by TestMain.
var qmgateBin string

// repoRoot is the module's top directory.
var repoRoot string

// workRoot holds every test's files; it is traversable by the unprivileged
// user a root run drops to.
var workRoot string

func TestMain(m *testing.M) {
	if sock := os.Getenv(unixClientEnv); sock != "" {
		os.Exit(unixClientMain(sock))
	}
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	raiseNoFile()
	var err error
	repoRoot, err = findRepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		return 1
	}
	workRoot, err = os.MkdirTemp("", "qmgate-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		return 1
	}
	if os.Getenv("QMGATE_KEEP") == "" {
		defer os.RemoveAll(workRoot)
	} else {
		fmt.Fprintln(os.Stderr, "reliability: keeping", workRoot)
	}
	os.Chmod(workRoot, 0o755)
	qmgateBin = filepath.Join(workRoot, "qmgate")
	args := []string{"build", "-o", qmgateBin}
	if os.Getenv("QMGATE_DAEMON_RACE") == "1" {
		args = append(args, "-race")
	}
	cmd := exec.Command(goTool(), append(args, "./cmd/qmgate")...)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "reliability: building qmgate: %v\n%s", err, out)
		return 1
	}
	code := m.Run()
	if *full {
		if err := writeReport(filepath.Join(repoRoot, "RELIABILITY.md"), code == 0); err != nil {
			fmt.Fprintln(os.Stderr, "reliability: writing RELIABILITY.md:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// raiseNoFile lifts the soft descriptor limit to the hard one, so that the
// floods fit; the daemons started later inherit it.
func raiseNoFile() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

func noFileLimit() uint64 {
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}

// goTool is the go command: go test puts its own toolchain's bin first on
// the PATH of the tests it runs.
func goTool() string { return "go" }

func findRepoRoot() (string, error) {
	out, err := exec.Command(goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the qmgate module")
	}
	return filepath.Dir(mod), nil
}

// scale picks the short or the full mode's number.
func scale(short, long int) int {
	if *full {
		return long
	}
	return short
}
