package inject

import (
	"bufio"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	netmail "net/mail"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// Defaults for a Composer's limits.
const (
	// DefaultMaxHeaderBytes bounds the header sendmail holds in memory to
	// find recipients and missing fields. Postfix's header_size_limit is
	// 102400; real headers are a few KiB.
	DefaultMaxHeaderBytes = 256 << 10
	// DefaultMaxRecipients bounds the recipients of one message.
	DefaultMaxRecipients = 1000
)

// Identity is the local user who runs sendmail: the default sender and the
// From: of a message that has none.
type Identity struct {
	User     string // login name
	FullName string // display name; may be empty
	UID      string // numeric user id, for the Received line
}

// SystemIdentity returns the real user's identity: the login name of the
// real uid (os/user, not $USER, which the caller controls), and a full name
// from $QMAILNAME, $MAILNAME or $NAME as qmail-inject takes it, else the
// first field of the password entry's GECOS.
func SystemIdentity() (Identity, error) {
	uid := strconv.Itoa(os.Getuid())
	id := Identity{UID: uid}
	u, err := user.LookupId(uid)
	if err != nil {
		return id, fmt.Errorf("no user name for uid %s: %w", uid, err)
	}
	id.User = u.Username
	for _, v := range []string{"QMAILNAME", "MAILNAME", "NAME"} {
		if s := os.Getenv(v); s != "" {
			id.FullName = s
			return id, nil
		}
	}
	name, _, _ := strings.Cut(u.Name, ",")
	id.FullName = strings.TrimSpace(name)
	return id, nil
}

// Composer turns what a program pipes into sendmail into a message ready to
// send: the envelope chosen, the header completed, the whole spooled to an
// unlinked temporary file so that its size is known (QMQP sends the length
// first) without holding the body in memory.
type Composer struct {
	// Hostname is the right side of added Message-IDs.
	Hostname string
	// DefaultDomain qualifies addresses without a domain ("root" becomes
	// root@DefaultDomain), in the envelope. Required.
	DefaultDomain string
	Identity      Identity
	// MaxHeaderBytes bounds the header (DefaultMaxHeaderBytes when 0).
	MaxHeaderBytes int64
	// MaxMessageBytes bounds the message as sent; 0 means no limit.
	MaxMessageBytes int64
	// MaxRecipients bounds the recipients (DefaultMaxRecipients when 0).
	MaxRecipients int
	// TempDir holds the spooled message; "" means os.TempDir().
	TempDir string
	// Now, PID and Rand make tests repeatable; zero values mean the real
	// clock, process id and crypto/rand.
	Now  func() time.Time
	PID  int
	Rand io.Reader
	// Program names this program in the Received line ("qmgate sendmail"
	// when empty).
	Program string
}

// Message is a composed message: envelope and spooled text.
type Message struct {
	Envelope mail.Envelope
	// Size is the length of the text in bytes.
	Size int64
	f    *os.File
}

// Reader returns a reader over the whole text, from the start each time.
func (m *Message) Reader() io.Reader { return io.NewSectionReader(m.f, 0, m.Size) }

// File returns the spool file (already unlinked), positioned anywhere.
func (m *Message) File() *os.File { return m.f }

// Close releases the spooled text.
func (m *Message) Close() error { return m.f.Close() }

// field is one header field as it came in, continuation lines included,
// ending in LF.
type field struct {
	name string // as written, without the colon
	raw  []byte
}

func (f *field) is(name string) bool { return strings.EqualFold(f.name, name) }

// value returns the unfolded field body.
func (f *field) value() string {
	v := f.raw[len(f.name):]
	v = v[indexColon(v)+1:]
	s := strings.ReplaceAll(string(v), "\n", "")
	return strings.TrimSpace(s)
}

func indexColon(b []byte) int {
	for i, c := range b {
		if c == ':' {
			return i
		}
	}
	return -1
}

// fieldName returns the name of a header field line, or "" when the line
// is not one: a name of printable ASCII other than ':' and space, then
// optional white space (RFC 5322 obsolete syntax) and the colon.
func fieldName(line []byte) string {
	i := 0
	for i < len(line) && line[i] > ' ' && line[i] < 0x7f && line[i] != ':' {
		i++
	}
	if i == 0 {
		return ""
	}
	j := i
	for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
		j++
	}
	if j < len(line) && line[j] == ':' {
		return string(line[:i])
	}
	return ""
}

func (c *Composer) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Composer) pid() int {
	if c.PID != 0 {
		return c.PID
	}
	return os.Getpid()
}

// Qualify returns addr as an envelope address: angle brackets removed, and
// an address with no domain ("root", "root@") completed with
// DefaultDomain. The empty address stays empty.
func (c *Composer) Qualify(addr string) string {
	addr = strings.TrimSpace(addr)
	if strings.HasPrefix(addr, "<") && strings.HasSuffix(addr, ">") {
		addr = strings.TrimSpace(addr[1 : len(addr)-1])
	}
	if addr == "" {
		return ""
	}
	if i := strings.LastIndexByte(addr, '@'); i < 0 {
		return addr + "@" + c.DefaultDomain
	} else if i == len(addr)-1 {
		return addr + c.DefaultDomain
	}
	return addr
}

// checkAddress refuses what no server would take: control characters, an
// address of mail.MaxAddressLen bytes or more, an empty local part.
func checkAddress(a string) error {
	if !mail.ValidAddress(a) {
		return errors.New("address too long")
	}
	for i := 0; i < len(a); i++ {
		if a[i] < 0x20 || a[i] == 0x7f {
			return errors.New("control character in address")
		}
	}
	if strings.HasPrefix(a, "@") {
		return errors.New("no local part")
	}
	return nil
}

// Compose reads a message from r as sendmail does with opts (sender, -t,
// -i, -F) and spools it: the result's Envelope has every address
// qualified, the text has CR LF turned into LF, a missing final newline
// added (SMTP cannot carry a partial last line), Bcc: and Resent-Bcc:
// removed, a Received line on top naming the local user, and Date:,
// Message-ID: and From: added when missing.
//
// Recipients are the command-line ones plus, with -t, those of To:, Cc:
// and Bcc: (or of Resent-To:, Resent-Cc: and Resent-Bcc: when the message
// has any of them: it is being resent), deduplicated in order; this is
// Postfix's reading of -t, where sendmail 8 would drop the command-line
// ones.
//
// Errors carry their exit code (ExitOf): 64 for a bad command-line
// address or no recipients at all, 65 for a header or message over its
// limit or -t finding no recipient, 75 for a failure to read or spool.
func (c *Composer) Compose(opts *Options, r io.Reader) (*Message, error) {
	if c.DefaultDomain == "" {
		return nil, &Error{ExitConfig, "no default domain to qualify addresses with"}
	}
	var env mail.Envelope
	if opts.SenderSet {
		env.Sender = c.Qualify(opts.Sender)
	} else {
		env.Sender = c.Qualify(c.Identity.User)
	}
	if err := checkAddress(env.Sender); env.Sender != "" && err != nil {
		return nil, &Error{ExitUsage, fmt.Sprintf("bad sender address %q: %v", trunc(env.Sender), err)}
	}
	seen := map[string]bool{}
	maxRcpt := c.MaxRecipients
	if maxRcpt <= 0 {
		maxRcpt = DefaultMaxRecipients
	}
	add := func(a string, code int) error {
		a = c.Qualify(a)
		if a == "" || seen[a] {
			return nil
		}
		if err := checkAddress(a); err != nil {
			return &Error{code, fmt.Sprintf("bad recipient address %q: %v", trunc(a), err)}
		}
		if len(env.Recipients) >= maxRcpt {
			return &Error{code, fmt.Sprintf("more than %d recipients", maxRcpt)}
		}
		seen[a] = true
		env.Recipients = append(env.Recipients, a)
		return nil
	}
	for _, arg := range opts.Recipients {
		list := ParseAddressList(arg)
		if len(list) == 0 && strings.TrimSpace(arg) != "" {
			return nil, &Error{ExitUsage, fmt.Sprintf("bad recipient address %q", trunc(arg))}
		}
		for _, a := range list {
			if err := add(a, ExitUsage); err != nil {
				return nil, err
			}
		}
	}
	if !opts.ExtractRecipients && len(env.Recipients) == 0 {
		return nil, &Error{ExitUsage, "no recipients: name them on the command line or use -t"}
	}

	in := newInput(r, !opts.IgnoreDots)
	fields, first, err := c.readHeader(in)
	if err != nil {
		return nil, err
	}

	resent := false
	for i := range fields {
		f := &fields[i]
		if f.is("Resent-To") || f.is("Resent-Cc") || f.is("Resent-Bcc") {
			resent = true
		}
	}
	if opts.ExtractRecipients {
		prefix := ""
		if resent {
			prefix = "Resent-"
		}
		for i := range fields {
			f := &fields[i]
			if f.is(prefix+"To") || f.is(prefix+"Cc") || f.is(prefix+"Bcc") {
				for _, a := range ParseAddressList(f.value()) {
					if err := add(a, ExitDataErr); err != nil {
						return nil, err
					}
				}
			}
		}
		if len(env.Recipients) == 0 {
			return nil, &Error{ExitDataErr, "no recipients: none on the command line, none in To:, Cc: or Bcc:"}
		}
	}

	tmp, err := os.CreateTemp(c.TempDir, "qmgate-sendmail-")
	if err != nil {
		return nil, &Error{ExitTempFail, fmt.Sprintf("cannot spool the message: %v", err)}
	}
	// Unlinked at once: the text lives as long as the descriptor, and a
	// killed sendmail leaves nothing behind.
	os.Remove(tmp.Name())
	msg := &Message{Envelope: env, f: tmp}
	if err := c.write(msg, opts, fields, first, in); err != nil {
		tmp.Close()
		return nil, err
	}
	return msg, nil
}

// readHeader reads the header fields. first is the piece that ended the
// header when it was not a blank line (a body with no separator), else nil.
func (c *Composer) readHeader(in *input) (fields []field, first []byte, err error) {
	limit := c.MaxHeaderBytes
	if limit <= 0 {
		limit = DefaultMaxHeaderBytes
	}
	var size int64
	firstLine := true
	for {
		p, begins, err := in.next()
		if err == io.EOF {
			return fields, nil, nil
		}
		if err != nil {
			return nil, nil, &Error{ExitTempFail, fmt.Sprintf("reading the message: %v", err)}
		}
		size += int64(len(p))
		if size > limit {
			return nil, nil, &Error{ExitDataErr, fmt.Sprintf("message header larger than %d bytes", limit)}
		}
		if !begins {
			// The rest of a line longer than the read buffer.
			if len(fields) > 0 {
				fields[len(fields)-1].raw = append(fields[len(fields)-1].raw, p...)
				continue
			}
		}
		if firstLine && begins && len(p) >= 5 && string(p[:5]) == "From " {
			// An mbox "From " line is no header field; drop it (and the
			// rest of it, if long).
			firstLine = false
			for p[len(p)-1] != '\n' {
				if p, _, err = in.next(); err != nil || len(p) == 0 {
					return fields, nil, nil
				}
			}
			continue
		}
		firstLine = false
		switch {
		case begins && len(p) == 1 && p[0] == '\n':
			return fields, nil, nil
		case begins && (p[0] == ' ' || p[0] == '\t') && len(fields) > 0:
			fields[len(fields)-1].raw = append(fields[len(fields)-1].raw, p...)
		case begins && fieldName(p) != "":
			fields = append(fields, field{name: fieldName(p), raw: append([]byte(nil), p...)})
		default:
			// Not a header line: the body starts here with no blank line.
			return fields, append([]byte(nil), p...), nil
		}
	}
}

// write spools the completed message.
func (c *Composer) write(m *Message, opts *Options, fields []field, first []byte, in *input) error {
	w := &countWriter{w: bufio.NewWriterSize(m.f, 64<<10), max: c.MaxMessageBytes}
	now := c.now()
	prog := c.Program
	prog = cmp.Or(prog, "qmgate sendmail")
	if c.Identity.UID != "" {
		b := []byte("Received: (" + prog + " " + strconv.Itoa(c.pid()) + " invoked by uid " + c.Identity.UID + "); ")
		b = mail.AppendDate822(b, now)
		w.Write(append(b, '\n'))
	}
	has := map[string]bool{}
	for i := range fields {
		f := &fields[i]
		has[strings.ToLower(f.name)] = true
		if f.is("Bcc") || f.is("Resent-Bcc") {
			continue
		}
		w.Write(f.raw)
		if f.raw[len(f.raw)-1] != '\n' {
			w.Write([]byte{'\n'})
		}
	}
	if !has["date"] {
		w.Write([]byte("Date: " + now.Format(time.RFC1123Z) + "\n"))
	}
	if !has["message-id"] {
		w.Write([]byte("Message-ID: <" + c.messageID(now) + ">\n"))
	}
	if !has["from"] {
		addr := m.Envelope.Sender
		name := opts.FullName
		if !opts.SenderSet || addr == "" {
			addr = c.Qualify(c.Identity.User)
			if name == "" {
				// The user's own name goes only with the user's own
				// address, never with a -f address it may not belong to.
				name = c.Identity.FullName
			}
		}
		w.Write([]byte("From: " + fromValue(name, addr) + "\n"))
	}
	w.Write([]byte{'\n'})
	last := byte('\n')
	if len(first) > 0 {
		w.Write(first)
		last = first[len(first)-1]
	}
	for w.err == nil {
		p, _, err := in.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return &Error{ExitTempFail, fmt.Sprintf("reading the message: %v", err)}
		}
		w.Write(p)
		last = p[len(p)-1]
	}
	if last != '\n' {
		w.Write([]byte{'\n'})
	}
	if w.err == nil {
		w.err = w.w.Flush()
	}
	if w.err == errTooBig {
		return &Error{ExitDataErr, fmt.Sprintf("message larger than %d bytes", c.MaxMessageBytes)}
	}
	if w.err != nil {
		return &Error{ExitTempFail, fmt.Sprintf("cannot spool the message: %v", w.err)}
	}
	m.Size = w.n
	return nil
}

// fromValue renders a From: value: "Full Name <addr>" with the name quoted
// or encoded as RFC 5322 and 2047 require, or the bare address.
func fromValue(name, addr string) string {
	if name == "" {
		return addr
	}
	s := (&netmail.Address{Name: name, Address: addr}).String()
	// net/mail quotes the local part its own way; keep ours as we have it.
	if i := strings.LastIndexByte(s, '<'); i >= 0 {
		return s[:i] + "<" + addr + ">"
	}
	return s
}

func (c *Composer) messageID(now time.Time) string {
	var rnd [6]byte
	src := c.Rand
	src = cmp.Or(src, rand.Reader)
	io.ReadFull(src, rnd[:])
	host := c.Hostname
	host = cmp.Or(host, c.DefaultDomain)
	return now.UTC().Format("20060102150405") + "." + strconv.Itoa(c.pid()) + "." + hex.EncodeToString(rnd[:]) + "@" + host
}

var errTooBig = errors.New("message too big")

// countWriter counts what it writes and fails once past max (> 0).
type countWriter struct {
	w   *bufio.Writer
	n   int64
	max int64
	err error
}

func (w *countWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.max > 0 && w.n+int64(len(p)) > w.max {
		w.err = errTooBig
		return 0, w.err
	}
	n, err := w.w.Write(p)
	w.n += int64(n)
	w.err = err
	return n, err
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
