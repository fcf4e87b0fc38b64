package oauthtoken

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// readSecret returns the first line of a small file holding a client secret
// or a refresh token, without surrounding white space.
func readSecret(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSecretFileBytes+1))
	if err != nil {
		return "", err
	}
	if len(b) > MaxSecretFileBytes {
		return "", fmt.Errorf("%s is longer than %d bytes", path, MaxSecretFileBytes)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSpace(line)
	if line == "" {
		return "", errors.New(path + " is empty")
	}
	return line, nil
}

// writeSecret replaces the file at path with one line holding secret, so
// that a reader sees either the old secret or the new one, and a crash
// leaves one of them on disk: a temporary file in the same directory (rename
// is atomic only within a file system), written, fsynced, renamed over the
// old one, and the directory fsynced so that the rename itself is durable.
// The file is mode 0600 and belongs to the user running qmgate.
func writeSecret(path, secret string) (err error) {
	dir, base := filepath.Split(path)
	dir = cmp.Or(dir, ".")
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	renamed := false
	defer func() {
		if err != nil && !renamed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err = tmp.WriteString(secret + "\n"); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	renamed = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
