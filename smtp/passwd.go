package smtp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// PasswordCost is the bcrypt cost of new hashes (HashPassword): about 50 ms
// on a current core, 2^12 rounds.
const PasswordCost = 12

// maxPasswordFileLine bounds a line of a password file.
const maxPasswordFileLine = 4096

// PasswordFile is an Authenticator over a file of "username:hash" lines,
// where hash is a bcrypt hash ($2a$, $2b$ or $2y$), as HashPassword and
// `qmgate passwd` write them. Blank lines and lines starting with "#" are
// ignored. A user name may contain ':' (the hash never does, so a line splits
// at its last ':'). Each name appears at most once.
//
// Authenticate takes the same time whether or not the user exists: an
// unknown user's password is checked against a dummy hash of the file's
// highest cost, so timing does not tell which names are valid.
type PasswordFile struct {
	users map[string][]byte
	dummy []byte
}

// LoadPasswordFile reads the password file at path. A daemon reloads by
// loading again and swapping the Authenticator of a new Server; the file
// holds hashes only, but it should still be readable by the daemon alone.
func LoadPasswordFile(path string) (*PasswordFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := ReadPasswordFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ReadPasswordFile parses a password file. Errors name the line, never its
// content.
func ReadPasswordFile(r io.Reader) (*PasswordFile, error) {
	p := &PasswordFile{users: make(map[string][]byte)}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxPasswordFileLine)
	maxCost := 0
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ':')
		if i <= 0 {
			return nil, fmt.Errorf("line %d: want username:hash", n)
		}
		user, hash := line[:i], line[i+1:]
		cost, err := bcrypt.Cost([]byte(hash))
		if err != nil || !strings.HasPrefix(hash, "$2") {
			return nil, fmt.Errorf("line %d: not a bcrypt hash", n)
		}
		if _, dup := p.users[user]; dup {
			return nil, fmt.Errorf("line %d: user listed twice", n)
		}
		p.users[user] = []byte(hash)
		maxCost = max(maxCost, cost)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, errors.New("line too long")
		}
		return nil, err
	}
	if maxCost == 0 {
		maxCost = PasswordCost
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("qmgate dummy password"), maxCost)
	if err != nil {
		return nil, err
	}
	p.dummy = dummy
	return p, nil
}

// Len returns the number of users.
func (p *PasswordFile) Len() int { return len(p.users) }

// Authenticate implements Authenticator.
func (p *PasswordFile) Authenticate(ctx context.Context, username, password string) (bool, error) {
	hash, ok := p.users[username]
	if !ok {
		hash = p.dummy
	}
	// bcrypt reads at most 72 bytes; a longer password would match any
	// password with the same first 72 bytes, so it never matches.
	long := len(password) > 72
	if long {
		password = password[:72]
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	return ok && !long && err == nil, nil
}

// HashPassword returns the bcrypt hash of password for a password file. It
// refuses passwords longer than 72 bytes, which bcrypt would cut short.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", errors.New("smtp: empty password")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), PasswordCost)
	if err != nil {
		return "", err
	}
	return string(h), nil
}
