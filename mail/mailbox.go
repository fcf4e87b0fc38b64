package mail

import (
	"errors"
	"strings"
)

// MaxMailboxName bounds each of the two path components MailboxName
// returns, the usual file-name limit (NAME_MAX).
const MaxMailboxName = 255

// Errors of MailboxName.
var (
	ErrNoDomain      = errors.New("address has no domain")
	ErrUnsafeMailbox = errors.New("unsafe mailbox name")
)

// MailboxName turns a recipient into the two path components of its local
// mailbox: the domain and the local part before the first '-' (qmail's
// user-ext convention: user-anything@domain lands in user's mailbox). It is
// the one name rule of local delivery: the Maildir and mbox transports
// deliver by it, and the hub refuses at the door every recipient it
// refuses, so no such recipient is accepted only to bounce later.
//
// Both parts are lower-cased, ASCII letters only: Unicode case folding
// would turn "\u212Aate" (KELVIN SIGN) into "kate" and so into another
// user's mailbox. Both must then be made of [a-z0-9._+=-], must not start
// with a dot or '-' and are at most MaxMailboxName bytes, so no address can
// name a path outside the tree ("..", "/", control characters, NUL, a
// leading dot or '-', anything not ASCII are refused).
func MailboxName(rcpt string) (domain, user string, err error) {
	return MailboxNameSep(rcpt, '-')
}

// MailboxNameSep is MailboxName with sep ('-', qmail's, or '+') between the
// user and the address extension: with '+', "first-last+x" is the user
// "first-last", never split further; 0 splits nothing.
func MailboxNameSep(rcpt string, sep byte) (domain, user string, err error) {
	local, dom := Split(rcpt)
	if strings.IndexByte(rcpt, '@') < 0 {
		return "", "", ErrNoDomain
	}
	user = local
	if i := strings.IndexByte(user, sep); i >= 0 {
		user = user[:i]
	}
	user = LowerASCII(user)
	dom = LowerASCII(strings.TrimSuffix(dom, "."))
	if !safeMailboxName(user) || !safeMailboxName(dom) {
		return "", "", ErrUnsafeMailbox
	}
	return dom, user, nil
}

// safeMailboxName accepts names of [a-z0-9._+=-] that start with neither a
// dot nor a '-' and are at most MaxMailboxName bytes: enough for real
// mailboxes and domains (my-domain.example), nothing that can climb out of
// a directory or pass for a command-line option.
func safeMailboxName(s string) bool {
	if s == "" || len(s) > MaxMailboxName || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '+', c == '=', c == '-':
		default:
			return false
		}
	}
	return true
}

// EqualFoldASCII reports whether a and b are equal with ASCII letters
// compared without case, and every other byte exactly: Unicode folding
// (strings.EqualFold) would let "\u212Aate" (KELVIN SIGN) pass for "kate".
func EqualFoldASCII(a, b string) bool { return equalFoldASCII(a, b) }
