package dotqmail

import (
	"cmp"
	"os"
	"strconv"
	"strings"

	"github.com/qmgate/qmgate/mail"
)

// Kind says what one delivery instruction does.
type Kind uint8

const (
	// Own is the route's own mailbox for the user, exactly as without
	// control files: there was no control file (or an empty one), or the
	// control file said nothing else.
	Own Kind = iota + 1
	// Maildir is a Maildir named by a line ending in '/', or a Maildir++
	// folder of the user's Maildir.
	Maildir
	// Mbox is an mbox file named by a line starting with '.' or '/'.
	Mbox
	// Forward queues the message again for another address.
	Forward
	// Program feeds the message to a command run by /bin/sh.
	Program
)

func (k Kind) String() string {
	switch k {
	case Own:
		return "own mailbox"
	case Maildir:
		return "maildir"
	case Mbox:
		return "mbox"
	case Forward:
		return "forward"
	case Program:
		return "program"
	}
	return "unknown"
}

// Delivery is one instruction of a Plan.
type Delivery struct {
	Kind Kind
	// Rel is, for Maildir and Mbox, the target relative to the user's
	// directory: slash-separated, cleaned, never absolute and never with a
	// ".." element; "." is the user's directory itself. A transport should
	// open it through os.OpenRoot(userDir), so that a symbolic link swapped
	// in after the lookup still cannot lead outside the directory.
	Rel string
	// Path is Rel joined to the user's directory, for logs and for
	// transports that do not use os.Root. (From Parse alone, before
	// Lookup has checked it, Path is the line as written.)
	Path string
	// Address is, for Forward, the address to forward to, with the
	// recipient's domain added when the line had none.
	Address string
	// Command is, for Program, the command given to /bin/sh -c.
	Command string
	// Line is the line of the control file the instruction came from, 0 for
	// Own and for folders.
	Line int
}

// Plan is where one recipient's copy of a message goes.
type Plan struct {
	// Deliveries are the instructions in file order. A control file with
	// only comments gives none: the message is accepted and dropped, as
	// qmail-local does.
	Deliveries []Delivery

	// File is the control file that decided, such as ".qmail-lists" or
	// ".qmail-default"; empty when none did.
	File string
	// Folder is the Maildir++ folder (such as ".lists") chosen because no
	// control file matched; empty otherwise.
	Folder string

	// Recipient is the full address, as given.
	Recipient string
	// Local and Domain are its two halves, as given.
	Local, Domain string
	// User is the local part before the first separator; Ext what follows
	// it. HasExt tells "user-" (an empty extension) from "user".
	User, Ext string
	HasExt    bool
	// Default is the part of Ext that the "default" of the file's name
	// stands for (qmail's DEFAULT); HasDefault says whether there is one.
	Default    string
	HasDefault bool

	// Sender is the envelope sender of the message; ForwardSender the one
	// to use for forwards: Sender, or LOCAL-owner@DOMAIN when the user has
	// a .qmail-EXT-owner file (with qmail's VERP form when there is also a
	// .qmail-EXT-owner-default), never changed for a bounce (qmail's
	// NEWSENDER).
	Sender        string
	ForwardSender string

	// Dir is the user's directory the plan was made for.
	Dir string
}

// Forwards returns the addresses of the plan's Forward deliveries.
func (p *Plan) Forwards() []string {
	var out []string
	for _, d := range p.Deliveries {
		if d.Kind == Forward {
			out = append(out, d.Address)
		}
	}
	return out
}

// DeliveredTo is the Delivered-To line a mailbox or program delivery (in
// DTLINE) and each forward start the message with: the full recipient, with
// newlines replaced, ending in a newline, as qmail-local writes it.
func (p *Plan) DeliveredTo() string {
	return "Delivered-To: " + strings.ReplaceAll(p.Recipient, "\n", "_") + "\n"
}

// Defaults of Options.
const (
	// DefaultMaxFileBytes bounds a control file. qmail-local has no limit;
	// real files (forward lists, ezmlm's) are a few hundred bytes, and a
	// thousand forward addresses fit in 64 KiB.
	DefaultMaxFileBytes = 64 << 10
	// DefaultMaxFolderEntries bounds the directory entries read while
	// looking for a folder whose name differs only in case. The top of a
	// Maildir holds tmp, new, cur, the folders and a few index files.
	DefaultMaxFolderEntries = 4096
	// DefaultMaxExtParts bounds the dash-separated parts of an extension,
	// and so the number of files tried for one address.
	DefaultMaxExtParts = 32
)

// Options configure Lookup. The zero value is qmail's behaviour with safe
// limits: '-' as separator, folders on, programs refused, control files
// trusted when owned by this process's user or root.
type Options struct {
	// Separator splits the user from the extension: '-' when zero
	// (qmail's conf-break); '+' for Postfix and Gmail conventions. The
	// user is never split further: with '+', "first-last+x" is user
	// "first-last", extension "x". Control files keep qmail's names
	// (.qmail-x), and an extension's parts are still separated by '-'.
	Separator byte
	// MaxFileBytes bounds a control file; larger ones are refused.
	// DefaultMaxFileBytes when zero or less.
	MaxFileBytes int64
	// NoFolders turns off delivery into a Maildir++ folder named after the
	// extension. Mbox routes set it.
	NoFolders bool
	// MaxFolderEntries bounds the folder search; DefaultMaxFolderEntries
	// when zero or less.
	MaxFolderEntries int
	// MaxExtParts bounds the parts of an extension;
	// DefaultMaxExtParts when zero or less. An address with more parts is
	// refused permanently.
	MaxExtParts int
	// AllowPrograms lets control files run programs ('|' lines). When
	// false, such a file is refused with a temporary failure, so the user
	// can fix it without losing mail.
	AllowPrograms bool
	// Owners are the user ids that may own the user's directory and its
	// control files (the mailbox's user and the mail user). When empty,
	// this process's effective user id and root.
	Owners []int
}

func (o *Options) separator() byte     { return cmp.Or(o.Separator, '-') }
func (o *Options) maxFileBytes() int64 { return orDefault(o.MaxFileBytes, DefaultMaxFileBytes) }
func (o *Options) maxFolderEntries() int {
	return orDefault(o.MaxFolderEntries, DefaultMaxFolderEntries)
}
func (o *Options) maxExtParts() int { return orDefault(o.MaxExtParts, DefaultMaxExtParts) }

// orDefault is v, or def when v is zero or less: a limit left unset.
func orDefault[T ~int | ~int64](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

func (o *Options) owner(uid int) bool {
	if len(o.Owners) == 0 {
		return uid == os.Geteuid() || uid == 0
	}
	for _, u := range o.Owners {
		if u == uid {
			return true
		}
	}
	return false
}

// Error is why a plan could not be made: a temporary failure for an unsafe
// or broken control file (the user can fix it, and qmail-local defers too),
// a permanent one for an address that can never work. It wraps a
// mail.Status, so mail.StatusOf returns that status.
type Error struct {
	Status mail.Status
	// File and Line locate the problem when it is in a control file.
	File string
	Line int

	code, reason string // the status before File and Line were added
}

func (e *Error) Error() string { return e.Status.Text }

// Unwrap returns the status, for errors.As and mail.StatusOf.
func (e *Error) Unwrap() error { return e.Status }

// tempErr is a temporary failure about a control file: its text names the
// file and line, which are the user's, never a path of the server.
func tempErr(code, file string, line int, text string) *Error {
	reason := text
	switch {
	case file != "" && line > 0:
		text = file + " line " + strconv.Itoa(line) + ": " + text
	case file != "":
		text = file + ": " + text
	}
	e := tempErr0(code, line, reason)
	e.File = file
	e.Status.Text = text
	return e
}

func tempErr0(code string, line int, reason string) *Error {
	text := reason
	if line > 0 {
		text = "line " + strconv.Itoa(line) + ": " + reason
	}
	return &Error{Status: mail.Temp(code, text), Line: line, code: code, reason: reason}
}

// inFile names the control file in an error from Parse.
func inFile(err error, file string) error {
	e, ok := err.(*Error)
	if !ok || e.code == "" {
		return err
	}
	return tempErr(e.code, file, e.Line, e.reason)
}
