package inject

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// archive is a txtar archive (the format of Go's own test data): a comment,
// then files, each starting at a line "-- NAME --". Parsed here rather than
// with go-internal's txtar, which needs golang.org/x/tools.
type archive struct {
	comment string
	files   []archiveFile
}

type archiveFile struct {
	name string
	data string
}

func parseArchive(data string) archive {
	var a archive
	cur := &a.comment
	for len(data) > 0 {
		line, rest, _ := strings.Cut(data, "\n")
		data = rest
		if strings.HasPrefix(line, "-- ") && strings.HasSuffix(line, " --") && len(line) > 6 {
			a.files = append(a.files, archiveFile{name: line[3 : len(line)-3]})
			cur = &a.files[len(a.files)-1].data
			continue
		}
		*cur += line + "\n"
	}
	return a
}

func (a archive) format() string {
	var b strings.Builder
	b.WriteString(a.comment)
	for _, f := range a.files {
		b.WriteString("-- " + f.name + " --\n" + f.data)
	}
	return b.String()
}

var update = flag.Bool("update", false, "rewrite golden files")

// zeros is a Rand source that makes Message-IDs repeatable.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func testComposer() *Composer {
	return &Composer{
		Hostname:        "app1.example.net",
		DefaultDomain:   "example.net",
		Identity:        Identity{User: "www-data", UID: "33"},
		MaxHeaderBytes:  512,
		MaxMessageBytes: 1024,
		TempDir:         os.TempDir(),
		Now:             func() time.Time { return time.Date(2024, 3, 5, 14, 7, 9, 0, time.UTC) },
		PID:             4242,
		Rand:            zeros{},
	}
}

// splitArgs splits a test's args line at spaces, with '...' quoting.
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	in, any := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			in, any = !in, true
		case r == ' ' && !in:
			if any {
				out = append(out, cur.String())
			}
			cur.Reset()
			any = false
		default:
			cur.WriteRune(r)
			any = true
		}
	}
	if any {
		out = append(out, cur.String())
	}
	return out
}

// unmark turns the test files' <CR> into a CR and removes "<EOF>\n", which
// marks a last line without a newline.
func unmark(s string) string {
	s = strings.ReplaceAll(s, "<CR>", "\r")
	return strings.ReplaceAll(s, "<EOF>\n", "")
}

func runCompose(c *Composer, args []string, stdin string) string {
	var b strings.Builder
	opts, err := ParseArgs(args)
	if err == nil {
		var m *Message
		m, err = c.Compose(opts, strings.NewReader(stdin))
		if err == nil {
			defer m.Close()
			fmt.Fprintf(&b, "exit 0\nsender: %s\n", m.Envelope.Sender)
			for _, r := range m.Envelope.Recipients {
				fmt.Fprintf(&b, "rcpt: %s\n", r)
			}
			b.WriteString("--\n")
			text, _ := io.ReadAll(m.Reader())
			if int64(len(text)) != m.Size {
				fmt.Fprintf(&b, "SIZE MISMATCH %d != %d\n", len(text), m.Size)
			}
			// A CR kept in the text shows as <CR>, as in the input.
			b.WriteString(strings.ReplaceAll(string(text), "\r", "<CR>"))
			return b.String()
		}
	}
	fmt.Fprintf(&b, "exit %d\nerror: %v\n", ExitOf(err), err)
	return b.String()
}

// TestComposeGolden runs every testdata/compose/*.txtar: the comment's
// "args:" line is the command line, "stdin" the input, "want" the exit code,
// the envelope and the message text (or the error).
func TestComposeGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/compose/*.txtar")
	if len(files) == 0 {
		t.Fatal("no test files")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			ar := parseArchive(string(raw))
			var args []string
			for _, l := range strings.Split(ar.comment, "\n") {
				if a, ok := strings.CutPrefix(l, "args:"); ok {
					args = splitArgs(unmark(strings.TrimSpace(a)))
				}
			}
			var stdin string
			wantIdx := -1
			for i, f := range ar.files {
				switch f.name {
				case "stdin":
					stdin = unmark(f.data)
				case "want":
					wantIdx = i
				}
			}
			if wantIdx < 0 {
				t.Fatal("no want section")
			}
			got := runCompose(testComposer(), args, stdin)
			if *update {
				ar.files[wantIdx].data = got
				if err := os.WriteFile(file, []byte(ar.format()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if want := ar.files[wantIdx].data; got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// A body line far longer than the read buffer streams through unchanged,
// and a CR LF split across two reads is still one line end.
func TestComposeLongLines(t *testing.T) {
	c := testComposer()
	c.MaxMessageBytes = 0
	long := strings.Repeat("x", 64<<10-1) // the CR lands on the buffer's last byte
	in := "Subject: long\r\n\r\n" + long + "\r\n" + strings.Repeat("y", 200<<10) + "\r\nend\r\n"
	m, err := c.Compose(&Options{Recipients: []string{"a@x"}}, strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	text, _ := io.ReadAll(m.Reader())
	body := text[bytes.Index(text, []byte("\n\n"))+2:]
	want := long + "\n" + strings.Repeat("y", 200<<10) + "\nend\n"
	if string(body) != want {
		t.Fatalf("body differs: got %d bytes, want %d; CR left: %v", len(body), len(want), bytes.Contains(body, []byte("\r")))
	}
}

// A long header field and a long first line continue across reads.
func TestComposeLongHeader(t *testing.T) {
	c := testComposer()
	c.MaxHeaderBytes, c.MaxMessageBytes = 0, 0
	long := strings.Repeat("z", 100<<10)
	in := "X-Long: " + long + "\nTo: a@x\n\nbody\n"
	m, err := c.Compose(&Options{ExtractRecipients: true}, strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	text, _ := io.ReadAll(m.Reader())
	if !bytes.Contains(text, []byte("\nX-Long: "+long+"\nTo: a@x\n")) || len(m.Envelope.Recipients) != 1 {
		t.Fatalf("long header mangled (%d bytes, %v)", len(text), m.Envelope.Recipients)
	}
}

func TestComposeNoDefaultDomain(t *testing.T) {
	c := testComposer()
	c.DefaultDomain = ""
	_, err := c.Compose(&Options{Recipients: []string{"root"}}, strings.NewReader("x\n"))
	if ExitOf(err) != ExitConfig {
		t.Fatalf("got %v", err)
	}
}

// The spool file is unlinked at once: nothing is left in TempDir.
func TestComposeLeavesNoFile(t *testing.T) {
	c := testComposer()
	c.TempDir = t.TempDir()
	m, err := c.Compose(&Options{Recipients: []string{"a@x"}}, strings.NewReader("x\n"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if ents, _ := os.ReadDir(c.TempDir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

// The user's own name goes with the user's own address only.
func TestComposeFromName(t *testing.T) {
	c := testComposer()
	c.Identity.FullName = "Web Server"
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{}, `From: "Web Server" <www-data@example.net>`},
		{Options{FullName: "Shop"}, `From: "Shop" <www-data@example.net>`},
		{Options{Sender: "shop@example.org", SenderSet: true}, "From: shop@example.org"},
		{Options{Sender: "shop@example.org", SenderSet: true, FullName: "Shop"}, `From: "Shop" <shop@example.org>`},
		{Options{Sender: "", SenderSet: true}, `From: "Web Server" <www-data@example.net>`},
		{Options{FullName: "Jörg"}, "From: =?utf-8?q?J=C3=B6rg?= <www-data@example.net>"},
	} {
		tc.opts.Recipients = []string{"a@x"}
		m, err := c.Compose(&tc.opts, strings.NewReader("Subject: s\n\nx\n"))
		if err != nil {
			t.Fatal(err)
		}
		text, _ := io.ReadAll(m.Reader())
		m.Close()
		if !strings.Contains(string(text), "\n"+tc.want+"\n") {
			t.Errorf("%+v: no %q in\n%s", tc.opts, tc.want, text)
		}
	}
}
