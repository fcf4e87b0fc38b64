package qmail

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestParseControlLines(t *testing.T) {
	in := "example.com  \n# comment\n\n   \n.example.com\t\r\n#x\nlast"
	want := []string{"example.com", ".example.com", "last"}
	if got := ParseControlLines([]byte(in)); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := ParseControlLines(nil); got != nil {
		t.Fatalf("empty file: %q", got)
	}
}

func TestReadControl(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if s, err := ReadControlLine(write("me", "mail.example.com \t\nsecond\n")); err != nil || s != "mail.example.com" {
		t.Fatalf("me: %q %v", s, err)
	}
	// qmail's control_readline does not skip comments.
	if s, err := ReadControlLine(write("c", "#x\n")); err != nil || s != "#x" {
		t.Fatalf("comment line: %q %v", s, err)
	}
	if n, err := ReadControlInt(write("databytes", "1000000 \n")); err != nil || n != 1000000 {
		t.Fatalf("databytes: %d %v", n, err)
	}
	for _, bad := range []string{"10k\n", "-1\n", "\n", " 5"} {
		if _, err := ReadControlInt(write("bad", bad)); err == nil {
			t.Errorf("ReadControlInt(%q) accepted", bad)
		}
	}
	if _, err := ReadControlLines(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	l, err := ReadControlLines(write("rcpthosts", "a.example\n#\nb.example\n"))
	if err != nil || !reflect.DeepEqual(l, []string{"a.example", "b.example"}) {
		t.Fatalf("rcpthosts: %q %v", l, err)
	}
}

func TestReadControlTooBig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxControlBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := ReadControlLines(p); err == nil {
		t.Fatal("a file over MaxControlBytes was read")
	}
}
