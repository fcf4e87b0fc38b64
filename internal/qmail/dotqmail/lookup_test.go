package dotqmail

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/qmgate/qmgate/mail"
)

// userDir makes a user directory with the given files (name -> content) and
// returns its path.
func userDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "example.com", "joe")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func lookup(t *testing.T, dir, rcpt string, opt Options) *Plan {
	t.Helper()
	p, err := Lookup(dir, rcpt, "s@example.org", opt)
	if err != nil {
		t.Fatalf("Lookup(%s): %v", rcpt, err)
	}
	return p
}

// wantTemp checks that err is a temporary *Error whose text holds want.
func wantTemp(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want a temporary failure about %q", want)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %v is not an *Error", err, err)
	}
	st := mail.StatusOf(err)
	if !st.IsTemporary() {
		t.Fatalf("status %v is not temporary", st)
	}
	if !strings.Contains(st.Text, want) {
		t.Fatalf("status text %q does not mention %q", st.Text, want)
	}
}

func TestLookupNoDirectoryIsOwnMailbox(t *testing.T) {
	p := lookup(t, filepath.Join(t.TempDir(), "missing"), "joe-x@example.com", Options{})
	if len(p.Deliveries) != 1 || p.Deliveries[0].Kind != Own || p.File != "" {
		t.Fatalf("plan %+v", p)
	}
	// An mbox route's user "directory" is the mbox file itself.
	f := filepath.Join(t.TempDir(), "joe")
	os.WriteFile(f, []byte("From x\n"), 0o600)
	p = lookup(t, f, "joe-x@example.com", Options{})
	if p.Deliveries[0].Kind != Own {
		t.Fatalf("plan %+v", p)
	}
}

func TestLookupDefaultPart(t *testing.T) {
	dir := userDir(t, map[string]string{
		".qmail-list-default": "./Maildir-list/\n",
		".qmail-default":      "./Maildir-rest/\n",
		".qmail-xdefault":     "./Maildir-xd/\n",
	})
	for _, tc := range []struct {
		rcpt, file, def string
	}{
		{"joe-list-Foo-Bar@example.com", ".qmail-list-default", "Foo-Bar"},
		{"joe-other@example.com", ".qmail-default", "other"},
		{"joe-@example.com", ".qmail-default", ""},
		{"joe-xDefault@example.com", ".qmail-xdefault", "Default"}, // exact name ending in "default"
	} {
		p := lookup(t, dir, tc.rcpt, Options{})
		if p.File != tc.file || !p.HasDefault || p.Default != tc.def {
			t.Errorf("%s: file %q default %q (%v), want %q %q", tc.rcpt, p.File, p.Default, p.HasDefault, tc.file, tc.def)
		}
	}
}

func TestLookupForwardSender(t *testing.T) {
	dir := userDir(t, map[string]string{
		".qmail-list":               "&a@example.net\n",
		".qmail-list-owner":         "&owner@example.net\n",
		".qmail-verp":               "&a@example.net\n",
		".qmail-verp-owner":         "&owner@example.net\n",
		".qmail-verp-owner-default": "&owner@example.net\n",
		".qmail-plain":              "&a@example.net\nlocaluser\n",
	})
	for _, tc := range []struct{ rcpt, sender, want string }{
		{"Joe-List@example.com", "s@example.org", "Joe-List-owner@example.com"},
		{"joe-verp@example.com", "s@example.org", "joe-verp-owner-@example.com-@[]"},
		{"joe-plain@example.com", "s@example.org", "s@example.org"},
		{"joe-list@example.com", "", ""},
		{"joe-list@example.com", "#@[]", "#@[]"},
	} {
		p, err := Lookup(dir, tc.rcpt, tc.sender, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if p.ForwardSender != tc.want {
			t.Errorf("%s from %q: forward sender %q, want %q", tc.rcpt, tc.sender, p.ForwardSender, tc.want)
		}
	}
	p := lookup(t, dir, "joe-plain@example.com", Options{})
	if got := p.Forwards(); len(got) != 2 || got[1] != "localuser@example.com" {
		t.Errorf("forwards %q: an address without a domain gets the recipient's", got)
	}
}

func TestLookupSeparator(t *testing.T) {
	dir := userDir(t, map[string]string{".qmail-lists": "./Maildir-lists/\n"})
	p := lookup(t, dir, "first-last+lists@example.com", Options{Separator: '+'})
	if p.User != "first-last" || p.Ext != "lists" || p.File != ".qmail-lists" {
		t.Fatalf("plan %+v", p)
	}
	p = lookup(t, dir, "joe+lists@example.com", Options{})
	if p.User != "joe+lists" || p.HasExt || p.File != "" {
		t.Fatalf("with '-', '+' is part of the user: %+v", p)
	}
}

func TestLookupFolders(t *testing.T) {
	dir := userDir(t, map[string]string{
		".lists/new/.keep": "", ".Shop/cur/.keep": "", ".a.b/new/.keep": "",
		".qmail-ctl":     "./Maildir-ctl/\n",
		".ctl/new/.keep": "", ".notdir": "x",
	})
	for _, tc := range []struct{ rcpt, folder string }{
		{"joe-lists@example.com", ".lists"},
		{"joe-LISTS@example.com", ".lists"},
		{"joe-shop@example.com", ".Shop"},
		{"joe-a.b@example.com", ".a.b"},
		{"joe-ctl@example.com", ""}, // the control file wins
		{"joe-notdir@example.com", ""},
		{"joe-..@example.com", ""},
		{"joe-@example.com", ""},
		{"joe@example.com", ""},
	} {
		p := lookup(t, dir, tc.rcpt, Options{})
		if p.Folder != tc.folder {
			t.Errorf("%s: folder %q, want %q", tc.rcpt, p.Folder, tc.folder)
			continue
		}
		if tc.folder != "" && (p.Deliveries[0].Kind != Maildir || p.Deliveries[0].Rel != tc.folder ||
			p.Deliveries[0].Path != filepath.Join(dir, tc.folder)) {
			t.Errorf("%s: deliveries %+v", tc.rcpt, p.Deliveries)
		}
	}
	if p := lookup(t, dir, "joe-lists@example.com", Options{NoFolders: true}); p.Folder != "" || p.Deliveries[0].Kind != Own {
		t.Errorf("NoFolders: %+v", p)
	}
	// With a .qmail-default, qmail's lookup finds a file first.
	os.WriteFile(filepath.Join(dir, ".qmail-default"), []byte("./Maildir-rest/\n"), 0o600)
	if p := lookup(t, dir, "joe-lists@example.com", Options{}); p.File != ".qmail-default" {
		t.Errorf(".qmail-default before folders: %+v", p)
	}
	// The case-insensitive search is bounded.
	os.Remove(filepath.Join(dir, ".qmail-default"))
	if p := lookup(t, dir, "joe-SHOP@example.com", Options{MaxFolderEntries: 1}); p.Folder != "" && p.Folder != ".Shop" {
		t.Errorf("bounded search: %+v", p)
	}
}

func TestLookupUnsafe(t *testing.T) {
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "qmail"), []byte("&evil@example.net\n"), 0o600)
	dir := userDir(t, map[string]string{
		".qmail-dotdot":   "./Maildir/../../other/\n",
		".qmail-dotdot2":  "../joe2/Maildir/\n",
		".qmail-abs":      "/etc/\n",
		".qmail-viaout":   "./out/Maildir/\n",
		".qmail-dirmbox":  "./\n",
		".qmail-dotmbox":  "./.\n",
		".qmail-prog":     "|cat\n",
		".qmail-big":      strings.Repeat("# padding\n", 100),
		".qmail-bad":      "& spaced@example.net\n",
		".qmail-cr":       "./Maildir/\r\n",
		".qmail-group":    "./Maildir/\n",
		".qmail-absinner": "",
	})
	os.WriteFile(filepath.Join(dir, ".qmail-absinner"), []byte(dir+"/Maildir-in/\n"), 0o600)
	os.Chmod(filepath.Join(dir, ".qmail-group"), 0o660)
	os.Symlink(filepath.Join(outside, "qmail"), filepath.Join(dir, ".qmail-link"))
	os.Symlink("../../../"+filepath.Base(outside)+"/qmail", filepath.Join(dir, ".qmail-rellink"))
	os.Symlink(outside, filepath.Join(dir, "out"))
	os.Symlink(".qmail-abs", filepath.Join(dir, ".qmail-inlink"))
	syscall.Mkfifo(filepath.Join(dir, ".qmail-fifo"), 0o600)

	for _, tc := range []struct{ ext, want string }{
		{"dotdot", `contains ".."`},
		{"dotdot2", `contains ".."`},
		{"abs", "outside the mailbox's directory"},
		{"viaout", "through a symbolic link"},
		{"dotmbox", "names the directory itself"},
		{"prog", "program deliveries are not enabled"},
		{"big", "larger than the limit of 500 bytes"},
		{"bad", "spaces or angle brackets"},
		{"cr", "carriage return"},
		{"group", "written by others"},
		{"link", "symbolic link leading outside"},
		{"rellink", "symbolic link leading outside"},
		{"inlink", "outside the mailbox's directory"}, // followed inside, then /etc/ refused
	} {
		_, err := Lookup(dir, "joe-"+tc.ext+"@example.com", "s@example.org", Options{MaxFileBytes: 500})
		t.Run(tc.ext, func(t *testing.T) { wantTemp(t, err, tc.want) })
	}

	// A FIFO is not a regular file: skipped, as qmail-local does, and the
	// lookup does not hang on it.
	if p := lookup(t, dir, "joe-fifo@example.com", Options{}); p.File != "" {
		t.Errorf("fifo: %+v", p)
	}
	p := lookup(t, dir, "joe-absinner@example.com", Options{})
	if d := p.Deliveries[0]; d.Kind != Maildir || d.Rel != "Maildir-in" {
		t.Errorf("absolute path inside the directory: %+v", d)
	}
	p = lookup(t, dir, "joe-dirmbox@example.com", Options{})
	if d := p.Deliveries[0]; d.Kind != Maildir || d.Rel != "." {
		t.Errorf(`"./" is the directory itself as a Maildir: %+v`, d)
	}
	_, err := Lookup(dir, "joe-prog@example.com", "", Options{AllowPrograms: true})
	if err != nil {
		t.Errorf("programs allowed: %v", err)
	}
	// Owner rules.
	_, err = Lookup(dir, "joe-abs@example.com", "", Options{Owners: []int{os.Geteuid() + 1}})
	wantTemp(t, err, "owned by a user not allowed")

	_, err = Lookup(dir, "joe-"+strings.Repeat("a-", 40)+"@example.com", "", Options{})
	if st := mail.StatusOf(err); !st.IsPermanent() {
		t.Errorf("too many parts: %v", err)
	}
}

func TestLookupUnsafeDirectory(t *testing.T) {
	dir := userDir(t, map[string]string{".qmail-x": "./Maildir-x/\n", ".lists/new/.keep": ""})
	os.Chmod(dir, 0o770)
	_, err := Lookup(dir, "joe-x@example.com", "", Options{})
	wantTemp(t, err, "directory can be written by others")
	_, err = Lookup(dir, "joe-lists@example.com", "", Options{})
	wantTemp(t, err, "directory can be written by others")
	// Without a control file or folder in use, delivery goes on as before.
	if p := lookup(t, dir, "joe-y@example.com", Options{}); p.Deliveries[0].Kind != Own {
		t.Errorf("plan %+v", p)
	}
	os.Chmod(dir, 0o700|os.ModeSticky)
	_, err = Lookup(dir, "joe-y@example.com", "", Options{})
	wantTemp(t, err, "sticky")
	os.Chmod(dir, 0o700)
	_, err = Lookup(dir, "joe-x@example.com", "", Options{Owners: []int{os.Geteuid() + 1}})
	wantTemp(t, err, "owned by a user not allowed")
}

func TestLookupReadsAtDeliveryTime(t *testing.T) {
	dir := userDir(t, map[string]string{".qmail-x": "./Maildir-a/\n"})
	if p := lookup(t, dir, "joe-x@example.com", Options{}); p.Deliveries[0].Rel != "Maildir-a" {
		t.Fatal(p.Deliveries)
	}
	os.WriteFile(filepath.Join(dir, ".qmail-x"), []byte("./Maildir-b/\n"), 0o600)
	if p := lookup(t, dir, "joe-x@example.com", Options{}); p.Deliveries[0].Rel != "Maildir-b" {
		t.Fatal("a changed file must be seen by the next lookup:", p.Deliveries)
	}
}

// FuzzLookup checks the safety promise whatever a control file and an
// address say: every mailbox stays inside the user's directory, and every
// refusal is an *Error.
func FuzzLookup(f *testing.F) {
	f.Add([]byte("./Maildir/\n&a@example.net\n"), "x")
	f.Add([]byte("./../x/\n"), "a-b")
	f.Add([]byte("/etc/passwd\n"), "")
	f.Add([]byte("./a/./b//c/\n./.\n"), "A.B")
	f.Fuzz(func(t *testing.T, content []byte, ext string) {
		dir := userDir(t, map[string]string{".qmail-default": string(content)})
		p, err := Lookup(dir, "joe-"+ext+"@example.com", "s@example.org", Options{AllowPrograms: true})
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T)", err, err)
			}
			return
		}
		for _, d := range p.Deliveries {
			if d.Kind != Maildir && d.Kind != Mbox {
				continue
			}
			if d.Rel != "." && !filepath.IsLocal(d.Rel) || strings.Contains("/"+d.Rel+"/", "/../") {
				t.Fatalf("mailbox %q leaves the directory", d.Rel)
			}
			if rel, err := filepath.Rel(dir, d.Path); err != nil || rel != filepath.FromSlash(d.Rel) {
				t.Fatalf("Path %q and Rel %q disagree", d.Path, d.Rel)
			}
		}
	})
}
