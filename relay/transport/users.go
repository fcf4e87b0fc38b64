package transport

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/qmgate/qmgate/mail"
)

// MaxUsersFileBytes bounds a users file: a list of local users, not a
// directory service.
const MaxUsersFileBytes = 16 << 20

// Users is a list of the valid local users of a Maildir or Mbox route, read
// from a file: one user a line, either "user" (at every domain of the route)
// or "user@domain"; blank lines and lines starting with "#" are skipped.
// Names compare as mail.MailboxName makes them: ASCII lower case, the part of
// the local part before the first '-'.
type Users struct {
	names map[string]struct{}
}

// LoadUsers reads a users file.
func LoadUsers(path string) (*Users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > MaxUsersFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxUsersFileBytes)
	}
	u := &Users{names: map[string]struct{}{}}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if !strings.Contains(line, "@") {
			name = line + "@x"
		}
		// An entry is a mailbox name, never split at a separator:
		// "first-last" is that user, whatever the route's separator.
		dom, user, err := mail.MailboxNameSep(name, 0)
		if err != nil || strings.ContainsAny(line, " \t") {
			return nil, fmt.Errorf("%s:%d: %q is not a mailbox name", path, n, line)
		}
		if strings.Contains(line, "@") {
			u.names[user+"@"+dom] = struct{}{}
		} else {
			u.names[user] = struct{}{}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return u, nil
}

// Has reports whether user (a mailbox name, as mail.MailboxName returns it) is
// valid at domain.
func (u *Users) Has(user, domain string) bool {
	if _, ok := u.names[user]; ok {
		return true
	}
	_, ok := u.names[user+"@"+domain]
	return ok
}

// Len is how many entries the list has.
func (u *Users) Len() int { return len(u.names) }
