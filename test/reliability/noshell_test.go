//go:build linux

package reliability

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// execAllowed lists the only non-test files that may start a program whose
// name is not a literal, and why none of them hands mail data to a shell.
var execAllowed = map[string]string{
	// qmail-queue drop-in: runs $QMAILQUEUE (or qmail's qmail-queue)
	// directly, with no arguments; the message and the envelope travel on
	// pipes (fd 0, fd 1), never on a command line. Checked below.
	"internal/qmail/queue.go": "QMAILQUEUE, no arguments",
	// A mailbox owner's own "|program" line from their .qmail file
	// (qmail's delivery to a program, dot-qmail(5)): off unless the route
	// sets programs = true, run as that user and never as root. The script
	// is the owner's text; envelope data reaches it only as environment
	// variables (SENDER, RECIPIENT, ...), never as script text.
	"internal/qmail/dotqmail/program.go": "the mailbox owner's own program line",
	// Test support: Postfix programs found at fixed paths, given config
	// directories made by the tests.
	"internal/testpeer/postfix.go":  "test peers",
	"internal/testpeer/testpeer.go": "test peers",
	// Test support: the DKIM verifier (dkimpy) run by a python3 found at a
	// fixed path, on messages made by the tests.
	"internal/testpeer/dkimpy.go": "test peers",
	// Benchmark harness (not part of the daemon): go, Postfix tools and
	// its own scripts.
	"bench/harness/postfix.go": "benchmark harness",
	"bench/harness/main.go":    "benchmark harness",
	"bench/harness/scale.go":   "benchmark harness",
	"bench/harness/proc.go":    "benchmark harness",
	"bench/harness/machine.go": "benchmark harness",
	"bench/harness/profile.go": "benchmark harness",
}

// shells are programs that would interpret their arguments as a script.
var shells = map[string]bool{"sh": true, "bash": true, "dash": true, "ash": true, "zsh": true, "ksh": true, "mksh": true,
	"csh": true, "tcsh": true, "fish": true, "busybox": true, "env": true, "xargs": true, "perl": true, "python": true, "python3": true}

// TestNoShell: nothing in the module's non-test code starts a shell, or
// any program through a string that could carry envelope, header or DNS
// data. Every os/exec, os.StartProcess and syscall.Exec call is found in
// the syntax tree: a literal program must not be a shell, a computed one
// must be in execAllowed, and qmail-queue gets no arguments at all.
func TestNoShell(t *testing.T) {
	calls, problems, err := scanExec(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if len(calls) == 0 {
		t.Fatal("found no exec calls at all: the scan is broken")
	}
	report(t, &row{
		Test:   "No shell (source check)",
		Load:   "every non-test Go file of the module, parsed",
		Inputs: "os/exec Command and CommandContext, os.StartProcess, syscall and x/sys/unix Exec/ForkExec",
		Notes: fmt.Sprintf("%d calls, none of a shell or interpreter; computed programs only in %d allowlisted files (the qmail-queue drop-in runs $QMAILQUEUE with no arguments; a mailbox owner's own |program line from their .qmail file runs with /bin/sh -c as that user, only with the route's programs = true, envelope data in its environment only; the rest is test and benchmark support): %s.",
			len(calls), len(execAllowed), strings.Join(calls, ", ")),
	})
}

// TestNoShellDetects: the scan finds a shell, a computed program outside
// the allowlist, and an aliased import.
func TestNoShellDetects(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "bad"), 0o755)
	os.WriteFile(filepath.Join(dir, "bad", "bad.go"), []byte(`package bad

import (
	"context"
	run "os/exec"
)

func deliver(rcpt string) {
	run.Command("/bin/sh", "-c", "mail "+rcpt).Run()
	run.CommandContext(context.Background(), rcpt).Run()
}
`), 0o644)
	os.WriteFile(filepath.Join(dir, "bad", "ok_test.go"), []byte("package bad\n\nimport \"os/exec\"\n\nvar _ = exec.Command(\"sh\")\n"), 0o644)
	calls, problems, err := scanExec(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || len(problems) < 2 {
		t.Fatalf("calls %v, problems %v", calls, problems)
	}
}

// scanExec parses every non-test Go file under root and returns the
// program-starting calls and the problems found.
func scanExec(root string) (calls, problems []string, err error) {
	fset := token.NewFileSet()
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	err = filepath.WalkDir(root, func(path string, de os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := de.Name()
		if de.IsDir() {
			if name == "testdata" || name == "vendor" || (strings.HasPrefix(name, ".") && path != root) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			bad("%s: %v", rel, err)
			return nil
		}
		// Local names of the packages that can start programs.
		names := map[string]string{}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			local := filepath.Base(p)
			if imp.Name != nil {
				local = imp.Name.Name
			}
			switch p {
			case "os/exec", "os", "syscall", "golang.org/x/sys/unix":
				names[local] = p
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			id, ok := sel.X.(*ast.Ident)
			if !ok {
				return true
			}
			pkg := names[id.Name]
			fn := sel.Sel.Name
			progArg := -1
			switch {
			case pkg == "os/exec" && fn == "Command":
				progArg = 0
			case pkg == "os/exec" && fn == "CommandContext":
				progArg = 1
			case pkg == "os" && fn == "StartProcess", (pkg == "syscall" || pkg == "golang.org/x/sys/unix") && (fn == "Exec" || fn == "ForkExec" || fn == "StartProcess"):
				progArg = 0
			default:
				return true
			}
			where := fmt.Sprintf("%s:%d", rel, fset.Position(call.Pos()).Line)
			calls = append(calls, where)
			if progArg >= len(call.Args) {
				return true
			}
			if lit, ok := call.Args[progArg].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				prog, _ := strconv.Unquote(lit.Value)
				if shells[filepath.Base(prog)] {
					bad("%s starts %s: a shell (or an interpreter) must never see mail data", where, prog)
				}
			} else if _, ok := execAllowed[filepath.ToSlash(rel)]; !ok {
				bad("%s starts a computed program; if that is safe, say why in execAllowed", where)
			}
			for _, a := range call.Args {
				if lit, ok := a.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					s, _ := strconv.Unquote(lit.Value)
					if strings.Contains(s, "sh -c") || strings.HasPrefix(s, "/bin/") && shells[filepath.Base(s)] {
						bad("%s passes %q", where, s)
					}
				}
			}
			if filepath.ToSlash(rel) == "internal/qmail/queue.go" && (pkg != "os/exec" || fn != "CommandContext" || len(call.Args) != 2) {
				bad("%s: qmail-queue must be run as exec.CommandContext(ctx, path), with no arguments", where)
			}
			return true
		})
		return nil
	})
	sort.Strings(calls)
	return calls, problems, err
}
