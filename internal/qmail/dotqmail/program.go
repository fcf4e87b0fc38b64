package dotqmail

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// Defaults of Runner.
const (
	// DefaultProgramTimeout bounds one program delivery. qmail-local has
	// none; a list manager such as ezmlm needs seconds.
	DefaultProgramTimeout = 5 * time.Minute
	// DefaultMaxProgramOutput bounds what is kept of a program's output,
	// which becomes the text of a failure, as with qmail-local.
	DefaultMaxProgramOutput = 1000
	// DefaultProgramPath is the PATH programs get.
	DefaultProgramPath = "/usr/local/bin:/usr/bin:/bin"
)

// Runner runs program deliveries ('|' lines) as qmail-local does
// (qmail-command(8)): /bin/sh -c COMMAND in the user's directory, the
// message on standard input without the Return-Path and Delivered-To lines,
// qmail-local's environment (Plan.Env) and nothing else of the daemon's,
// and qmail's exit codes: 0 delivered, 99 delivered and skip the rest
// (ErrStop), 100 and 64, 65, 70, 76, 77, 78, 112 permanent failure,
// anything else temporary. It never runs a program as root.
type Runner struct {
	// Credential is the user and groups the program runs as (the
	// mailbox's user); switching needs root, so set it only when running
	// as root (Groups nil drops every supplementary group). Nil means this
	// process's user, which is refused when that is root; a Credential
	// with Uid 0 is refused too.
	Credential *syscall.Credential
	// Shell runs the command; "/bin/sh" when empty.
	Shell string
	// Timeout ends a program that runs too long (a temporary failure);
	// DefaultProgramTimeout when zero or less.
	Timeout time.Duration
	// MaxOutput bounds the output kept for the failure text;
	// DefaultMaxProgramOutput when zero or less.
	MaxOutput int
	// Path is the program's PATH; DefaultProgramPath when empty.
	Path string
}

// Run feeds msg to the program of d, a Program delivery of p.
func (r *Runner) Run(ctx context.Context, p *Plan, d Delivery, msg io.Reader) error {
	if d.Kind != Program {
		return mail.Temp("4.3.0", "not a program delivery")
	}
	uid := os.Geteuid()
	if r.Credential != nil {
		uid = int(r.Credential.Uid)
	}
	if uid == 0 {
		return mail.Temp("4.3.5", "refusing to run a mailbox's program as root")
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultProgramTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	shell := r.Shell
	shell = cmp.Or(shell, "/bin/sh")
	max := r.MaxOutput
	if max <= 0 {
		max = DefaultMaxProgramOutput
	}
	out := &boundedBuffer{max: max}
	cmd := exec.CommandContext(ctx, shell, "-c", d.Command)
	cmd.Dir = p.Dir
	cmd.Env = p.Env(r.Path)
	cmd.Stdin = msg
	cmd.Stdout = out
	cmd.Stderr = out
	// A process group of its own, so that the whole group is ended at the
	// time limit, not only the shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: r.Credential}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	text := out.text()
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return mail.Temp("4.3.0", "the mailbox's program ran too long")
	}
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return mail.Temp("4.3.0", "cannot run the mailbox's program")
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Exited() {
		return mail.Temp("4.3.0", "the mailbox's program crashed")
	}
	switch ws.ExitStatus() {
	case 99:
		return ErrStop
	case 100, 64, 65, 70, 76, 77, 78, 112:
		text = cmp.Or(text, "the mailbox's program refused the message")
		return mail.Perm("5.0.0", text)
	}
	text = cmp.Or(text, "the mailbox's program failed")
	return mail.Temp("4.3.0", text)
}

// boundedBuffer keeps the first max bytes written to it.
type boundedBuffer struct {
	max int
	buf bytes.Buffer
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// text is the output on one line: newlines become '/', as qmail-lspawn
// reports it, and trailing white space goes.
func (b *boundedBuffer) text() string {
	s := strings.TrimRight(b.buf.String(), " \t\r\n")
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n':
			return '/'
		case r < 0x20 || r == 0x7f:
			return ' '
		}
		return r
	}, s)
}

// Env is qmail-local's environment for a program delivery
// (qmail-command(8)): SENDER, NEWSENDER, RECIPIENT, USER, HOME, HOST,
// HOST2-4, LOCAL, EXT, EXT2-4, DEFAULT (when the file name ended in
// "default"), DTLINE, RPLINE, UFLINE, and PATH (DefaultProgramPath when
// path is empty). Values may hold anything a remote sender chose, as with
// qmail; newlines in addresses are replaced as qmail-local does.
func (p *Plan) Env(path string) []string {
	path = cmp.Or(path, DefaultProgramPath)
	host := p.Domain
	env := []string{
		"PATH=" + path,
		"SENDER=" + p.Sender,
		"NEWSENDER=" + p.ForwardSender,
		"RECIPIENT=" + p.Recipient,
		"USER=" + mail.LowerASCII(p.User),
		"HOME=" + p.Dir,
		"HOST=" + host,
		"LOCAL=" + p.Local,
	}
	// HOST2 is HOST before its last dot, HOST3 before the second-to-last,
	// HOST4 before the third-to-last; without such a dot, the whole.
	h := host
	for i := 2; i <= 4; i++ {
		if j := strings.LastIndexByte(h, '.'); j >= 0 {
			h = h[:j]
		}
		env = append(env, "HOST"+string(rune('0'+i))+"="+h)
	}
	// EXT2 is EXT after its first dash, EXT3 after the second, EXT4 after
	// the third; past the last dash, empty.
	x := p.Ext
	env = append(env, "EXT="+x)
	for i := 2; i <= 4; i++ {
		if j := strings.IndexByte(x, '-'); j >= 0 {
			x = x[j+1:]
		} else {
			x = ""
		}
		env = append(env, "EXT"+string(rune('0'+i))+"="+x)
	}
	if p.HasDefault {
		env = append(env, "DEFAULT="+p.Default)
	}
	sender := p.Sender
	from := "MAILER-DAEMON"
	if sender != "" {
		from = strings.Map(func(r rune) rune {
			if r == ' ' || r == '\t' || r == '\n' {
				return '-'
			}
			return r
		}, sender)
	}
	env = append(env,
		"DTLINE="+p.DeliveredTo(),
		"RPLINE="+ReturnPath(sender),
		"UFLINE=From "+from+" "+time.Now().Format("Mon Jan _2 15:04:05 2006")+"\n",
	)
	for i, kv := range env {
		env[i] = strings.ReplaceAll(kv, "\x00", "")
	}
	return env
}

// ReturnPath is the Return-Path line a mailbox delivery starts with.
func ReturnPath(sender string) string {
	return "Return-Path: <" + strings.ReplaceAll(sender, "\n", "_") + ">\n"
}
