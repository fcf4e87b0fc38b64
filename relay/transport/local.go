package transport

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// traceHeader is what local delivery prepends, as qmail-local does:
// Return-Path with the envelope sender and Delivered-To with the full
// recipient address (which also counts as a hop, so forwarding loops end).
func traceHeader(sender, rcpt string) string {
	return "Return-Path: <" + mail.OneLine(sender) + ">\nDelivered-To: " + mail.OneLine(rcpt) + "\n"
}

// Maildir delivers into DIR/domain/user/{tmp,new,cur}, creating the maildir on
// first delivery. Each message is written to tmp/, fsynced, renamed into new/,
// and new/ is fsynced, so a delivery that returns success survives a crash.
type Maildir struct {
	Mailboxes
	Hostname string
	seq      atomic.Uint64
}

// Deliver implements Transport.
func (m *Maildir) Deliver(ctx context.Context, jobs []*Job) {
	m.deliverEach(ctx, jobs, m.deliverOne)
}

func (m *Maildir) deliverOne(ctx context.Context, j *Job, rcpt string) Result {
	if m.srsAddress(rcpt) {
		return m.reverseSRS(ctx, j, rcpt)
	}
	dom, user, st := m.mailbox(rcpt)
	if !st.IsAccept() {
		return Result{Status: st}
	}
	box := filepath.Join(m.Dir, dom, user)
	opt := m.lookupOptions()
	return m.deliverControlled(ctx, j, rcpt, dom, user, box, opt, func() Result { return m.deliverOwn(j, rcpt, box) }, m.uniqueName)
}

// deliverOwn delivers into the user's own maildir box, as without control
// files.
func (m *Maildir) deliverOwn(j *Job, rcpt, box string) Result {
	if st, err := m.ensureMaildir(box); err != nil {
		return Result{Status: localTemp("cannot create the mailbox", err), Host: box}
	} else if !st.IsAccept() {
		return Result{Status: st, Host: box, Destination: newMailboxDestination}
	}
	root, err := os.OpenRoot(box)
	if err != nil {
		return Result{Status: localTemp("cannot open the mailbox", err), Host: box}
	}
	defer root.Close()
	if err := writeMaildir(root, ".", m.uniqueName(), traceHeader(j.Envelope.Sender, rcpt), j); err != nil {
		return Result{Status: localTemp("cannot write into the mailbox", err), Host: box}
	}
	return Result{Status: mail.OK("delivered to maildir"), Host: box}
}

// intoMaildir delivers into the Maildir (or Maildir++ folder) rel of the
// user's directory, creating it when missing; the path never leaves root.
func intoMaildir(root *os.Root, rel, name, prefix string, j *Job) error {
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := root.MkdirAll(path.Join(rel, sub), 0o700); err != nil {
			return err
		}
	}
	return writeMaildir(root, rel, name, prefix, j)
}

// writeMaildir writes the message as name into rel/tmp, fsyncs it,
// renames it into rel/new and fsyncs rel/new.
func writeMaildir(root *os.Root, rel, name, prefix string, j *Job) error {
	tmp := path.Join(rel, "tmp", name)
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = writeMessage(f, prefix, j, nil)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, path.Join(rel, "new", name))
	}
	if err == nil {
		var d *os.File
		if d, err = root.Open(path.Join(rel, "new")); err == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		root.Remove(tmp)
	}
	return err
}

// uniqueName follows the Maildir convention: seconds, a part unique on this
// host (microseconds, pid and a counter), the host name.
func (m *Maildir) uniqueName() string {
	now := time.Now()
	host := strings.NewReplacer("/", "\\057", ":", "\\072").Replace(m.Hostname)
	host = cmp.Or(host, "localhost")
	return strconv.FormatInt(now.Unix(), 10) + ".M" + strconv.Itoa(now.Nanosecond()/1000) +
		"P" + strconv.Itoa(os.Getpid()) + "Q" + strconv.FormatUint(m.seq.Add(1), 10) + "." + host
}

// Close implements Transport.
func (m *Maildir) Close() error { return nil }

// ensureMaildir makes box unless it exists. The status is not an
// acceptance when the route's bound on new mailboxes refuses it.
func (m *Maildir) ensureMaildir(box string) (mail.Status, error) {
	if st, err := os.Stat(filepath.Join(box, "new")); err == nil && st.IsDir() {
		return mail.OK(""), nil
	}
	if st := m.newMailbox(); !st.IsAccept() {
		return st, nil
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(box, sub), 0o700); err != nil {
			return mail.Status{}, err
		}
	}
	// Make the new directories themselves durable: the maildir, the domain
	// directory and the root they were created in.
	for _, d := range []string{box, filepath.Dir(box), filepath.Dir(filepath.Dir(box))} {
		if err := syncDir(d); err != nil {
			return mail.Status{}, err
		}
	}
	return mail.OK(""), nil
}

// syncDir makes dir's entries durable. Only Sync's answer matters: a
// directory opened for reading has nothing to lose when it is closed.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// newMailboxDestination keys the queue's per-destination backoff for mail
// held back by the bound on new mailboxes, so that it does not hold back
// the route's deliveries to mailboxes that exist.
const newMailboxDestination = "new-mailbox"

// DefaultMaxNewMailboxesPerHour bounds how many mailboxes a Maildir or
// Mbox transport creates per hour when Mailboxes.MaxNewPerHour is zero: one
// package of many recipients cannot fill a disk with empty mailboxes.
const DefaultMaxNewMailboxesPerHour = 20

// Mailboxes is what the Maildir and Mbox transports share: the tree of
// mailboxes, the optional list of valid users and the bound on new
// mailboxes.
type Mailboxes struct {
	// Dir is the root: mailboxes are Dir/domain/user.
	Dir string
	// Users, when not nil, lists the valid users; other recipients are
	// refused (5.1.1).
	Users *Users
	// MaxNewPerHour bounds the mailboxes created per hour (counted from
	// the first creation, afresh for a transport built anew by a reload);
	// past it, deliveries to new mailboxes fail temporarily. Zero means
	// DefaultMaxNewMailboxesPerHour, negative no bound.
	MaxNewPerHour int

	// UserControl configures the users' control files (control.go).
	UserControl

	requeue atomic.Pointer[RequeueFunc]

	mu          sync.Mutex
	windowStart time.Time
	created     int
}

// CheckRecipient says whether rcpt can be delivered here: its mailbox name
// is safe (5.1.3 otherwise) and, with a user list, the user is on it (5.1.1
// otherwise). The hub calls it at RCPT time so that mail the transport
// would refuse is refused at the door instead of bounced.
func (m *Mailboxes) CheckRecipient(rcpt string) mail.Status {
	if m.srsAddress(rcpt) {
		return m.checkSRS(rcpt)
	}
	_, _, st := m.mailbox(rcpt)
	return st
}

// mailbox returns rcpt's domain and user, or the refusal.
func (m *Mailboxes) mailbox(rcpt string) (dom, user string, st mail.Status) {
	sep := m.Separator
	if sep == 0 {
		sep = '-'
	}
	dom, user, err := mail.MailboxNameSep(rcpt, sep)
	if err != nil {
		return "", "", mail.StatusUndeliverable
	}
	if m.Users != nil && !m.Users.Has(user, dom) {
		return "", "", mail.Perm("5.1.1", "sorry, no mailbox here by that name")
	}
	return dom, user, mail.OK("")
}

// newMailbox takes one creation from this hour's allowance.
func (m *Mailboxes) newMailbox() mail.Status {
	limit := m.MaxNewPerHour
	limit = cmp.Or(limit, DefaultMaxNewMailboxesPerHour)
	if limit < 0 {
		return mail.OK("")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if now.Sub(m.windowStart) >= time.Hour {
		m.windowStart, m.created = now, 0
	}
	if m.created >= limit {
		return mail.Temp("4.3.0", "too many new mailboxes this hour; will try again")
	}
	m.created++
	return mail.OK("")
}

// deliverEach delivers every recipient of every job with one, in order.
func (m *Mailboxes) deliverEach(ctx context.Context, jobs []*Job, one func(context.Context, *Job, string) Result) {
	for _, j := range jobs {
		j.Results = make([]Result, len(j.Envelope.Recipients))
		for i, rcpt := range j.Envelope.Recipients {
			if ctx.Err() != nil {
				j.Results[i] = Result{Status: mail.Temp("4.3.0", "delivery interrupted")}
				continue
			}
			j.Results[i] = one(ctx, j, rcpt)
		}
		j.Done()
	}
}

// localTemp is a temporary failure for a local I/O problem; the error's text
// goes to the attempt history (it is ours, not a client's), but stays short.
func localTemp(what string, err error) mail.Status {
	st := mail.Temp("4.3.0", what)
	var errno syscall.Errno
	if errors.As(err, &errno) {
		st.Text += ": " + errno.Error()
	}
	return st
}

// writeMessage writes prefix and then the stored message to w, through
// transform when it is not nil.
func writeMessage(w io.Writer, prefix string, j *Job, transform func(io.Writer, io.Reader) error) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := bw.WriteString(prefix); err != nil {
		return err
	}
	r, err := j.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	if transform != nil {
		err = transform(bw, r)
	} else {
		_, err = io.Copy(bw, r)
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

// Mbox appends to DIR/domain/user, one mbox file per mailbox, in the mboxrd
// format: a "From " separator line, lines matching ^>*From  quoted with one
// more '>', and a blank line after each message. The file is locked with
// flock for the append; a failed append is truncated back so the mailbox is
// never left with half a message.
type Mbox struct {
	Mailboxes
}

// Deliver implements Transport.
func (m *Mbox) Deliver(ctx context.Context, jobs []*Job) {
	m.deliverEach(ctx, jobs, m.deliverOne)
}

// Close implements Transport.
func (m *Mbox) Close() error { return nil }

func (m *Mbox) deliverOne(ctx context.Context, j *Job, rcpt string) Result {
	if m.srsAddress(rcpt) {
		return m.reverseSRS(ctx, j, rcpt)
	}
	dom, user, st := m.mailbox(rcpt)
	if !st.IsAccept() {
		return Result{Status: st}
	}
	opt := m.lookupOptions()
	opt.NoFolders = true
	userDir := filepath.Join(m.Dir, dom, MboxHomeDir, user)
	return m.deliverControlled(ctx, j, rcpt, dom, user, userDir, opt, func() Result { return m.deliverOwn(j, rcpt, dom, user) }, maildirNames.uniqueName)
}

// MboxHomeDir is where an mbox route keeps its users' directories (for
// control files and the mailboxes they name): DIR/domain/.home/user, since
// DIR/domain/user is the user's mbox file. Mailbox names never start with
// a dot, so it cannot be taken for a user's mbox.
const MboxHomeDir = ".home"

// deliverOwn appends to the user's own mbox file, DIR/domain/user.
func (m *Mbox) deliverOwn(j *Job, rcpt, dom, user string) Result {
	dir := filepath.Join(m.Dir, dom)
	path := filepath.Join(dir, user)
	flags := os.O_RDWR | os.O_APPEND
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		if st := m.newMailbox(); !st.IsAccept() {
			return Result{Status: st, Host: path, Destination: newMailboxDestination}
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return Result{Status: localTemp("cannot create the mailbox directory", err), Host: dir}
		}
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return Result{Status: localTemp("cannot open the mailbox", err), Host: path}
	}
	defer f.Close()
	if err := appendMboxPrefix(f, j, traceHeader(j.Envelope.Sender, rcpt)); err != nil {
		return Result{Status: localTemp("cannot write into the mailbox", err), Host: path}
	}
	return Result{Status: mail.OK("delivered to mbox"), Host: path}
}

// intoMbox appends to the mbox file rel of the user's directory, creating
// it when missing; the path never leaves root.
func intoMbox(root *os.Root, rel, prefix string, j *Job) error {
	f, err := root.OpenFile(rel, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return err
	} else if !fi.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	return appendMboxPrefix(f, j, prefix)
}

// appendMboxPrefix appends a "From " line, prefix and the message to f
// under flock, truncating back a failed append.
func appendMboxPrefix(f *os.File, j *Job, prefix string) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	start := fi.Size()
	from := "From " + strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, cmp.Or(j.Envelope.Sender, "MAILER-DAEMON")) + " " + time.Now().UTC().Format("Mon Jan _2 15:04:05 2006") + "\n"
	err = writeMessage(f, from+prefix, j, mboxrdCopy)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Truncate(start)
	}
	return err
}

// mboxrdCopy copies a message quoting "From " lines the mboxrd way and ends it
// with a newline (if missing) and one blank line.
func mboxrdCopy(w io.Writer, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	bw, ok := w.(*bufio.Writer)
	if !ok {
		bw = bufio.NewWriter(w)
		defer bw.Flush()
	}
	atLineStart := true
	last := byte('\n')
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if atLineStart && isFromLine(line) {
				bw.WriteByte('>')
			}
			if _, werr := bw.Write(line); werr != nil {
				return werr
			}
			atLineStart = line[len(line)-1] == '\n'
			last = line[len(line)-1]
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if last != '\n' {
		bw.WriteByte('\n')
	}
	bw.WriteByte('\n')
	return nil
}

// isFromLine reports whether line matches ^>*From (with the space).
func isFromLine(line []byte) bool {
	i := 0
	for i < len(line) && line[i] == '>' {
		i++
	}
	return len(line)-i >= 5 && string(line[i:i+5]) == "From "
}
