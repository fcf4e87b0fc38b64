package relay

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// mailboxName turns a recipient into the two path components of its mailbox:
// the domain and the local part before the first '-' (qmail's user-ext
// convention: user-anything@domain lands in user's mailbox). Both are
// lower-cased and must be made of safe characters, so no address can name a
// path outside the tree ("..", "/", NUL, leading dots are refused).
func mailboxName(rcpt string) (domain, user string, err error) {
	local, dom := mail.Split(rcpt)
	if strings.IndexByte(rcpt, '@') < 0 {
		return "", "", errors.New("address has no domain")
	}
	user = local
	if i := strings.IndexByte(user, '-'); i >= 0 {
		user = user[:i]
	}
	user = strings.ToLower(user)
	dom = strings.ToLower(strings.TrimSuffix(dom, "."))
	if !safeName(user) || !safeName(dom) {
		return "", "", errors.New("unsafe mailbox name")
	}
	return dom, user, nil
}

// safeName accepts names of [a-z0-9._+=] that do not start with a dot and
// are at most 255 bytes: enough for real mailboxes and domains, nothing that
// can climb out of a directory.
func safeName(s string) bool {
	if s == "" || len(s) > 255 || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '+', c == '=':
		default:
			return false
		}
	}
	return true
}

// traceHeader is what local delivery prepends, as qmail-local does:
// Return-Path with the envelope sender and Delivered-To with the full
// recipient address (which also counts as a hop, so forwarding loops end).
func traceHeader(sender, rcpt string) string {
	return "Return-Path: <" + headerSafe(sender) + ">\nDelivered-To: " + headerSafe(rcpt) + "\n"
}

// headerSafe keeps an address from breaking out of its header line.
func headerSafe(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// Maildir delivers into DIR/domain/user/{tmp,new,cur}, creating the maildir on
// first delivery. Each message is written to tmp/, fsynced, renamed into new/,
// and new/ is fsynced, so a delivery that returns success survives a crash.
type Maildir struct {
	Dir      string
	Hostname string
	seq      atomic.Uint64
}

// Deliver implements Transport.
func (m *Maildir) Deliver(ctx context.Context, jobs []*Job) {
	for _, j := range jobs {
		j.Results = make([]Result, len(j.Envelope.Recipients))
		for i, rcpt := range j.Envelope.Recipients {
			if ctx.Err() != nil {
				j.Results[i] = Result{Status: mail.Temp("4.3.0", "delivery interrupted")}
				continue
			}
			j.Results[i] = m.deliverOne(j, rcpt)
		}
		j.Done()
	}
}

func (m *Maildir) deliverOne(j *Job, rcpt string) Result {
	dom, user, err := mailboxName(rcpt)
	if err != nil {
		return Result{Status: mail.Perm("5.1.3", "cannot deliver to this address locally: "+err.Error())}
	}
	box := filepath.Join(m.Dir, dom, user)
	if err := ensureMaildir(box); err != nil {
		return Result{Status: localTemp("cannot create the mailbox", err), Host: box}
	}
	name := m.uniqueName()
	tmp := filepath.Join(box, "tmp", name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Result{Status: localTemp("cannot write into the mailbox", err), Host: box}
	}
	err = writeMessage(f, traceHeader(j.Envelope.Sender, rcpt), j, nil)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(box, "new", name))
	}
	if err == nil {
		err = syncDir(filepath.Join(box, "new"))
	}
	if err != nil {
		os.Remove(tmp)
		return Result{Status: localTemp("cannot write into the mailbox", err), Host: box}
	}
	return Result{Status: mail.OK("delivered to maildir"), Host: box}
}

// uniqueName follows the Maildir convention: seconds, a part unique on this
// host (microseconds, pid and a counter), the host name.
func (m *Maildir) uniqueName() string {
	now := time.Now()
	host := strings.NewReplacer("/", "\\057", ":", "\\072").Replace(m.Hostname)
	if host == "" {
		host = "localhost"
	}
	return strconv.FormatInt(now.Unix(), 10) + ".M" + strconv.Itoa(now.Nanosecond()/1000) +
		"P" + strconv.Itoa(os.Getpid()) + "Q" + strconv.FormatUint(m.seq.Add(1), 10) + "." + host
}

// Close implements Transport.
func (m *Maildir) Close() error { return nil }

func ensureMaildir(box string) error {
	if st, err := os.Stat(filepath.Join(box, "new")); err == nil && st.IsDir() {
		return nil
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(box, sub), 0o700); err != nil {
			return err
		}
	}
	// Make the new directories themselves durable: the maildir, the domain
	// directory and the root they were created in.
	for _, d := range []string{box, filepath.Dir(box), filepath.Dir(filepath.Dir(box))} {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
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
	Dir string
}

// Deliver implements Transport.
func (m *Mbox) Deliver(ctx context.Context, jobs []*Job) {
	for _, j := range jobs {
		j.Results = make([]Result, len(j.Envelope.Recipients))
		for i, rcpt := range j.Envelope.Recipients {
			if ctx.Err() != nil {
				j.Results[i] = Result{Status: mail.Temp("4.3.0", "delivery interrupted")}
				continue
			}
			j.Results[i] = m.deliverOne(j, rcpt)
		}
		j.Done()
	}
}

// Close implements Transport.
func (m *Mbox) Close() error { return nil }

func (m *Mbox) deliverOne(j *Job, rcpt string) Result {
	dom, user, err := mailboxName(rcpt)
	if err != nil {
		return Result{Status: mail.Perm("5.1.3", "cannot deliver to this address locally: "+err.Error())}
	}
	dir := filepath.Join(m.Dir, dom)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Result{Status: localTemp("cannot create the mailbox directory", err), Host: dir}
	}
	path := filepath.Join(dir, user)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return Result{Status: localTemp("cannot open the mailbox", err), Host: path}
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return Result{Status: localTemp("cannot lock the mailbox", err), Host: path}
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	st, err := f.Stat()
	if err != nil {
		return Result{Status: localTemp("cannot stat the mailbox", err), Host: path}
	}
	start := st.Size()
	sender := j.Envelope.Sender
	if sender == "" {
		sender = "MAILER-DAEMON"
	}
	from := "From " + strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, sender) + " " + time.Now().UTC().Format("Mon Jan _2 15:04:05 2006") + "\n"
	err = writeMessage(f, from+traceHeader(j.Envelope.Sender, rcpt), j, mboxrdCopy)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Truncate(start)
		return Result{Status: localTemp("cannot write into the mailbox", err), Host: path}
	}
	return Result{Status: mail.OK("delivered to mbox"), Host: path}
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
