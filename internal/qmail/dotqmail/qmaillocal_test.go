package dotqmail

// The differential test against qmail-local's own decisions.
//
// testdata/qmail-local holds user directories (homes/, with the modes git
// cannot keep in modes.txt), a list of addresses (cases.txt), and
// golden.txt: what qmail-local printed for each case. The golden file was
// produced with qmail-local from notqmail (a maintained netqmail, commit
// a7012e4), compiled from its unmodified source outside this repository
// with its own Makefile and default configuration (conf-patrn 002). For each
// case qmail-local ran in its -n mode, which prints the delivery plan
// ("maildir X", "mbox X", "forward X", "program X", then "did F+W+P")
// instead of delivering, with the arguments qmail-lspawn would give it:
// user "joe", the home's absolute path, the local part, "-" or "" for the
// dash, the extension (split at the case's separator, as qmail-getpw does
// with that conf-break), domain example.com, the sender, and "./" as the
// default delivery (the user's directory is the Maildir, as in qmgate). Its
// exit code, standard output and standard error were recorded as they came.
// Running the test with -qmail-local=BINARY writes golden.txt again from
// such a binary; without it the test needs no qmail.
//
// A second set (env-cases.txt, env-golden.txt) checks the environment
// qmail-local gives programs (Plan.Env). Its control files in homes/h5 hold
// a program line that prints the variables; qmail-local ran those
// addresses in its delivering mode (without -n, so the program ran), with
// a three-line message on standard input, and its standard output was
// recorded.
//
// Deliberate differences, checked as such: where qmail-local bounces
// ("Sorry, no mailbox here by that name", no control file for user-ext),
// qmgate delivers to the user's own mailbox; qmgate's lines are compared
// with paths cleaned ("./x/" and "x" are the same Maildir).

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/qmgate/qmgate/mail"
)

var qmailLocal = flag.String("qmail-local", "", "qmail-local binary to write testdata/qmail-local/golden.txt with")

type qlCase struct {
	home, local, sender string
	sep                 byte
}

func (c qlCase) key() string {
	s := c.sender
	if s == "" {
		s = "<>"
	}
	return c.home + " " + c.local + " " + s + " " + string(c.sep)
}

func readCases(t *testing.T, name string) []qlCase {
	data, err := os.ReadFile("testdata/qmail-local/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var out []qlCase
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		c := qlCase{home: f[0], local: f[1], sender: f[2], sep: '-'}
		if c.sender == "<>" {
			c.sender = ""
		}
		if len(f) > 3 {
			c.sep = f[3][0]
		}
		out = append(out, c)
	}
	return out
}

// setupHomes copies the homes into a fresh directory and applies modes.txt.
func setupHomes(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	src := "testdata/qmail-local/homes"
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	modes, err := os.ReadFile("testdata/qmail-local/modes.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(modes), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		m, err := strconv.ParseUint(f[1], 8, 32)
		if err != nil {
			t.Fatal(err)
		}
		// os.Chmod, not the umask-filtered create, so 0646 stays 0646.
		if err := os.Chmod(filepath.Join(dst, f[0]), fs.FileMode(m)); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// qlResult is one case's outcome in qmail-local's terms.
type qlResult struct {
	exit   int
	lines  []string // stdout
	stderr string
}

func (r qlResult) String() string {
	return fmt.Sprintf("exit %d\n%s\nstderr %q", r.exit, strings.Join(r.lines, "\n"), r.stderr)
}

// runQmailLocal runs qmail-local for c: in -n mode when plan is set,
// otherwise delivering (the programs of homes/h5 then print their
// environment).
func runQmailLocal(t *testing.T, bin, homes string, c qlCase, plan bool) qlResult {
	_, ext, hasExt := SplitLocal(c.local, c.sep)
	dash := ""
	if hasExt {
		dash = "-"
	}
	var stdout, stderr bytes.Buffer
	args := []string{"joe", filepath.Join(homes, c.home), c.local, dash, ext, "example.com", c.sender, "./"}
	if plan {
		args = append([]string{"-n"}, args...)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = strings.NewReader("")
	if !plan {
		// qmail-local rewinds the message, so it must be a file.
		msg := filepath.Join(t.TempDir(), "msg")
		os.WriteFile(msg, []byte("Subject: test\n\nbody\n"), 0o600)
		f, err := os.Open(msg)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
	}
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	err := cmd.Run()
	r := qlResult{stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	r.lines = strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n")
	if len(r.lines) == 1 && r.lines[0] == "" {
		r.lines = nil
	}
	return r
}

func writeGolden(t *testing.T, cases []qlCase, homes, name string, plan bool) {
	var b strings.Builder
	b.WriteString("# qmail-local over the cases; see qmaillocal_test.go for how it was made.\n")
	for _, c := range cases {
		r := runQmailLocal(t, *qmailLocal, homes, c, plan)
		fmt.Fprintf(&b, "== %s\nexit %d\n", c.key(), r.exit)
		for _, l := range r.lines {
			fmt.Fprintf(&b, "out %s\n", l)
		}
		if r.stderr != "" {
			fmt.Fprintf(&b, "err %s\n", strings.TrimRight(strings.ReplaceAll(r.stderr, "\n", " "), " "))
		}
	}
	if err := os.WriteFile("testdata/qmail-local/"+name, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readGolden(t *testing.T, name string) map[string]qlResult {
	f, err := os.Open("testdata/qmail-local/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]qlResult{}
	var key string
	var cur qlResult
	flush := func() {
		if key != "" {
			out[key] = cur
		}
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "== "):
			flush()
			key, cur = line[3:], qlResult{}
		case strings.HasPrefix(line, "exit "):
			cur.exit, _ = strconv.Atoi(line[5:])
		case strings.HasPrefix(line, "out "):
			cur.lines = append(cur.lines, line[4:])
		case strings.HasPrefix(line, "err "):
			cur.stderr = line[4:]
		}
	}
	flush()
	return out
}

// normalize cleans the paths of maildir and mbox lines.
func normalize(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		if k, p, ok := strings.Cut(l, " "); ok && (k == "maildir" || k == "mbox") {
			l = k + " " + path.Clean(p)
		}
		out[i] = l
	}
	return out
}

// render states our plan the way qmail-local -n prints one.
func render(p *Plan, err error) qlResult {
	if err != nil {
		if mail.StatusOf(err).IsPermanent() {
			return qlResult{exit: 100, stderr: err.Error()}
		}
		return qlResult{exit: 111, stderr: err.Error()}
	}
	var r qlResult
	var files, fwds, progs int
	for _, d := range p.Deliveries {
		switch d.Kind {
		case Own:
			files++
			r.lines = append(r.lines, "maildir .")
		case Maildir:
			files++
			r.lines = append(r.lines, "maildir "+d.Rel)
		case Mbox:
			files++
			r.lines = append(r.lines, "mbox "+d.Rel)
		case Forward:
			fwds++
			r.lines = append(r.lines, "forward "+d.Address)
		case Program:
			progs++
			r.lines = append(r.lines, "program "+d.Command)
		}
	}
	r.lines = append(r.lines, fmt.Sprintf("did %d+%d+%d", files, fwds, progs))
	return r
}

func TestQmailLocalDifferential(t *testing.T) {
	cases := readCases(t, "cases.txt")
	homes := setupHomes(t)
	if *qmailLocal != "" {
		writeGolden(t, cases, homes, "golden.txt", true)
	}
	golden := readGolden(t, "golden.txt")
	if len(golden) != len(cases) {
		t.Fatalf("golden.txt has %d cases, cases.txt %d: write it again with -qmail-local", len(golden), len(cases))
	}
	for _, c := range cases {
		want, ok := golden[c.key()]
		if !ok {
			t.Errorf("%s: not in golden.txt", c.key())
			continue
		}
		p, err := Lookup(filepath.Join(homes, c.home), c.local+"@example.com", c.sender,
			Options{Separator: c.sep, AllowPrograms: true, NoFolders: true})
		got := render(p, err)
		if want.exit == 100 && strings.Contains(want.stderr, "no mailbox here by that name") {
			// The deliberate difference: qmgate keeps user-ext in user's
			// own mailbox when no control file matches.
			if err != nil || p.File != "" || len(p.Deliveries) != 1 || p.Deliveries[0].Kind != Own {
				t.Errorf("%s: qmail-local bounces, want the own mailbox; got\n%v", c.key(), got)
			}
			continue
		}
		if got.exit != want.exit {
			t.Errorf("%s: exit %d, qmail-local %d (%s)\ngot: %v", c.key(), got.exit, want.exit, want.stderr, got)
			continue
		}
		if want.exit != 0 {
			continue
		}
		if g, w := strings.Join(normalize(got.lines), "\n"), strings.Join(normalize(want.lines), "\n"); g != w {
			t.Errorf("%s:\ngot\n%s\nqmail-local\n%s", c.key(), g, w)
		}
	}
}

// envVars are the variables the programs in homes/h5 print, in order.
var envVars = strings.Fields("SENDER NEWSENDER RECIPIENT USER HOST HOST2 HOST3 HOST4 LOCAL EXT EXT2 EXT3 EXT4 DEFAULT DTLINE RPLINE")

func TestQmailLocalEnvironment(t *testing.T) {
	cases := readCases(t, "env-cases.txt")
	homes := setupHomes(t)
	if *qmailLocal != "" {
		writeGolden(t, cases, homes, "env-golden.txt", false)
	}
	golden := readGolden(t, "env-golden.txt")
	if len(golden) != len(cases) {
		t.Fatalf("env-golden.txt has %d cases, env-cases.txt %d", len(golden), len(cases))
	}
	for _, c := range cases {
		want := golden[c.key()]
		p, err := Lookup(filepath.Join(homes, c.home), c.local+"@example.com", c.sender, Options{Separator: c.sep, AllowPrograms: true})
		if err != nil {
			t.Errorf("%s: %v", c.key(), err)
			continue
		}
		env := map[string]string{}
		for _, kv := range p.Env("") {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		var b strings.Builder
		for _, k := range envVars {
			v, ok := env[k]
			if !ok {
				v = "unset"
			}
			fmt.Fprintf(&b, "%s=%s\n", k, v)
		}
		var wantLines []string
		for _, l := range want.lines {
			if !strings.HasPrefix(l, "did ") {
				wantLines = append(wantLines, l)
			}
		}
		if g, w := strings.TrimRight(b.String(), "\n"), strings.TrimRight(strings.Join(wantLines, "\n"), "\n"); want.exit != 0 || g != w {
			t.Errorf("%s: exit %d\ngot\n%s\nqmail-local\n%s", c.key(), want.exit, g, w)
		}
	}
}
