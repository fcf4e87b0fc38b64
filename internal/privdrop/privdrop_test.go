package privdrop

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// nobody is the user and group the helper drops to.
const nobody = 65534

// TestMain runs the test binary as the helper process of TestToEveryThread
// when PRIVDROP_HELPER is set: dropping privileges cannot be undone, so it
// happens in a child.
func TestMain(m *testing.M) {
	if os.Getenv("PRIVDROP_HELPER") == "1" {
		if err := dropAndInspect(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("dropped")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// dropAndInspect parks goroutines on threads of their own, drops to
// nobody, and reads every thread's credentials from /proc.
func dropAndInspect() error {
	const parked = 8
	var ready, done sync.WaitGroup
	release := make(chan struct{})
	for range parked {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			ready.Done()
			<-release
		}()
	}
	ready.Wait()
	defer func() { close(release); done.Wait() }()
	if err := To(nobody, nobody); err != nil {
		return err
	}
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil || len(tasks) <= parked {
		return fmt.Errorf("%d threads found (%v), want more than %d", len(tasks), err, parked)
	}
	want := map[string]string{
		"Uid:":    fmt.Sprintf("%d\t%d\t%d\t%d", nobody, nobody, nobody, nobody),
		"Gid:":    fmt.Sprintf("%d\t%d\t%d\t%d", nobody, nobody, nobody, nobody),
		"Groups:": fmt.Sprint(nobody),
	}
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			return err
		}
		for line := range strings.Lines(string(b)) {
			k, v, _ := strings.Cut(strings.TrimSpace(line), "\t")
			if w, ok := want[k]; ok && strings.TrimSpace(v) != w {
				return fmt.Errorf("%s: %s %q, want %q", task, k, v, w)
			}
		}
	}
	return nil
}

// TestToEveryThread drops privileges in a child process with several
// threads and checks every thread's ids in /proc.
func TestToEveryThread(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skipf("privilege drop is tested on Linux; %s is compile-checked", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		t.Skip("dropping privileges needs root (CI runs this test as root)")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PRIVDROP_HELPER=1")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "dropped" {
		t.Fatalf("helper: %v\n%s", err, out)
	}
}

func TestToRefusesRoot(t *testing.T) {
	for _, ids := range [][2]int{{0, 0}, {0, 1}, {-1, 1}, {1, -1}} {
		if err := To(ids[0], ids[1]); err == nil {
			t.Errorf("To(%d, %d) succeeded", ids[0], ids[1])
		}
	}
}

func TestEveryPlatformDecided(t *testing.T) {
	switch runtime.GOOS {
	case "linux", "freebsd", "openbsd", "netbsd", "darwin":
		if !allThreads {
			t.Errorf("%s: privileges not dropped for all threads", runtime.GOOS)
		}
	default:
		if allThreads {
			t.Errorf("%s: not checked, but allowed", runtime.GOOS)
		}
	}
}
