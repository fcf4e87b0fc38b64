package dotqmail

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkLookup measures one lookup at delivery time for the common
// shapes: no directory yet, no control file (qmail's whole default chain
// tried, then the folder search), an exact file, a file found two steps
// down the default chain, and a Maildir++ folder found by the
// case-insensitive scan.
func BenchmarkLookup(b *testing.B) {
	tdir := b.TempDir()
	full := filepath.Join(tdir, "joe")
	files := map[string]string{
		".qmail-lists":        "./Maildir-lists/\n",
		".qmail-shop-default": "./Maildir-shop/\n&joe@elsewhere.example\n",
		".Folder/new/.keep":   "",
	}
	for name, content := range files {
		p := filepath.Join(full, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct{ name, dir, rcpt string }{
		{"no-directory", filepath.Join(tdir, "missing"), "joe-x@example.com"},
		{"no-file", full, "joe-a-b-c@example.com"},
		{"exact", full, "joe-lists@example.com"},
		{"default", full, "joe-shop-x-y@example.com"},
		{"folder", full, "joe-folder@example.com"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := Lookup(bc.dir, bc.rcpt, "s@example.org", Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
