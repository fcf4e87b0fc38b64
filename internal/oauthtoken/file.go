package oauthtoken

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/qmgate/qmgate/internal/safedir"
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

// writeSecret replaces the file at path with one line holding secret,
// atomically and durably (safedir.WriteFile), mode 0600, belonging to the
// user running qmgate.
func writeSecret(path, secret string) error {
	return safedir.WriteFile(path, []byte(secret+"\n"))
}
