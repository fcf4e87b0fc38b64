package oauthtoken

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteSecret(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	if err := os.WriteFile(p, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSecret(p, "new"); err != nil {
		t.Fatal(err)
	}
	got, err := readSecret(p)
	if err != nil || got != "new" {
		t.Fatalf("%q %v", got, err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 even over a 0644 file", fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("left %v", ents)
	}
	if err := writeSecret(filepath.Join(dir, "missing", "token"), "x"); err == nil {
		t.Error("wrote into a missing directory")
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]string{
		"s3cret\n":       "s3cret",
		"  s3cret  \r\n": "s3cret",
		"one\ntwo\n":     "one",
		"":               "",
		"\n\n":           "",
		strings.Repeat("x", MaxSecretFileBytes+1): "",
	} {
		p := filepath.Join(dir, "s")
		os.WriteFile(p, []byte(content), 0o600)
		got, err := readSecret(p)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("%.20q: %q, %v; want %q", content, got, err, want)
		}
	}
	if _, err := readSecret(filepath.Join(dir, "none")); err == nil {
		t.Error("missing file read")
	}
}
