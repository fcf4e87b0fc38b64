package transport

import (
	"cmp"
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/qmgate/qmgate/internal/qmail/dotqmail"
	"github.com/qmgate/qmgate/mail"
)

// User-controlled wildcard mailboxes, as qmail has them (dot-qmail(5)):
// for user-ext@domain, the Maildir and Mbox transports read the user's
// control files (.qmail-ext, .qmail-default and so on) in the user's
// directory at each delivery, through package dotqmail, and do what they
// say: another Maildir or mbox file inside that directory, a Maildir++
// folder named after the extension, a forward (the message queued again
// with a Delivered-To line), or, when the route allows it, a program. With
// no control file, delivery is as before: user-ext into user's own mailbox.
//
// The user's directory is DIR/domain/user for maildir routes (the user's
// maildir itself) and DIR/domain/.home/user for mbox routes, whose
// DIR/domain/user is the mbox file.

// UserControl configures how a Maildir or Mbox route follows its users'
// control files (qmail's .qmail files, read at each delivery through
// package dotqmail). The zero value is qmail's behaviour: separator '-',
// Maildir++ folders on, programs refused, no SRS.
type UserControl struct {
	// Separator splits the user from the address extension: '-' when
	// zero (qmail), or '+'.
	Separator byte
	// NoFolders turns off delivery of user-ext into the Maildir++ folder
	// .ext of the user's maildir when no control file matches. Mbox
	// routes have no folders.
	NoFolders bool
	// Programs lets control files run programs ('|' lines), as this
	// process's user (the mail user every mailbox of the route belongs
	// to), never as root. Off: such a file is a temporary failure.
	Programs bool
	// ProgramTimeout bounds one program delivery;
	// dotqmail.DefaultProgramTimeout when zero.
	ProgramTimeout time.Duration
	// SRS, when not nil, rewrites the sender of forwards that leave the
	// site (addresses outside LocalDomains) and reverses bounces sent to
	// SRS addresses at SRS.Domain, which must be one of the route's
	// domains.
	SRS *dotqmail.SRS
	// LocalDomains are the site's domains (rcpthosts): forwards to them
	// keep the sender even with SRS.
	LocalDomains mail.HostList
	// Log records refused control files; slog.Default() when nil.
	Log *slog.Logger
}

// RequeueFunc queues a message again, from env.Sender to env.Recipients,
// as prefix followed by body. The hub provides it (SetRequeue). An error
// carrying a permanent mail.Status (the hop limit, say) means the forward
// can never work and the message bounces; any other error is temporary.
type RequeueFunc func(ctx context.Context, env mail.Envelope, prefix []byte, body io.Reader) error

// Requeuer is implemented by the transports that forward mail (Maildir
// and Mbox): whoever owns the queue gives them the way in.
type Requeuer interface {
	SetRequeue(RequeueFunc)
}

// SetRequeue sets the function forwards and reversed SRS bounces are
// queued with. Without one, they fail temporarily.
func (m *Mailboxes) SetRequeue(f RequeueFunc) {
	if f == nil {
		m.requeue.Store(nil)
		return
	}
	m.requeue.Store(&f)
}

func (m *Mailboxes) logger() *slog.Logger { return cmp.Or(m.Log, slog.Default()) }

func (m *Mailboxes) lookupOptions() dotqmail.Options {
	return dotqmail.Options{Separator: m.Separator, NoFolders: m.NoFolders, AllowPrograms: m.Programs}
}

// controlDestination keys the queue's backoff for a temporary failure
// that is one user's doing (a broken control file, a full folder), so it
// does not hold back the route's other mailboxes.
func controlDestination(dom, user string) string { return "mailbox:" + dom + "/" + user }

// maildirNames names Maildir files written by an Mbox route (a control
// file of an mbox user may name a Maildir).
var maildirNames = func() *Maildir {
	h, _ := os.Hostname()
	return &Maildir{Hostname: h}
}()

// deliverControlled delivers rcpt's copy of j as the user's control files
// in userDir say; own delivers into the user's own mailbox.
func (m *Mailboxes) deliverControlled(ctx context.Context, j *Job, rcpt, dom, user, userDir string, opt dotqmail.Options, own func() Result, newName func() string) Result {
	p, err := dotqmail.Lookup(userDir, rcpt, mail.ExpandVERP(j.Envelope.Sender, rcpt), opt)
	if err != nil {
		st := mail.StatusOf(err)
		m.logger().Warn("mailbox control file refused", "recipient", rcpt, "mailbox", dom+"/"+user, "problem", st.Text)
		res := Result{Status: st, Host: userDir}
		if st.IsTemporary() {
			res.Destination = controlDestination(dom, user)
		}
		return res
	}
	if p.File == "" && p.Folder == "" {
		return own()
	}
	// qmail-local refuses a message that already has the Delivered-To
	// line it would add: a forwarding loop.
	r, err := j.Open()
	if err != nil {
		return Result{Status: localTemp("cannot read the message", err), Host: userDir}
	}
	err = p.LoopCheck(r, 0)
	r.Close()
	if err != nil {
		return Result{Status: mail.StatusOf(err), Host: userDir}
	}
	t := &controlTarget{m: m, j: j, own: own, newName: newName}
	if err := p.Run(ctx, t); err != nil {
		if t.ownFailed != nil {
			return *t.ownFailed
		}
		st := mail.StatusOf(err)
		if st.IsTemporary() {
			m.logger().Warn("mailbox control file delivery failed", "recipient", rcpt, "mailbox", dom+"/"+user, "file", p.File, "problem", st.Text)
		}
		res := Result{Status: st, Host: userDir}
		if st.IsTemporary() {
			res.Destination = controlDestination(dom, user)
		}
		return res
	}
	var text string
	switch {
	case p.Folder != "":
		text = "delivered to the folder " + p.Folder
	case len(p.Deliveries) == 0:
		text = p.File + " says to drop the message"
	default:
		text = "delivered as " + p.File + " says"
	}
	if len(t.forwarded) > 0 {
		text += "; forwarded to " + strings.Join(t.forwarded, ", ")
	}
	return Result{Status: mail.OK(text), Host: userDir}
}

// controlTarget performs a dotqmail.Plan for one recipient of a job.
type controlTarget struct {
	m         *Mailboxes
	j         *Job
	own       func() Result
	newName   func() string
	ownFailed *Result
	forwarded []string
}

// Deliver implements dotqmail.Target.
func (t *controlTarget) Deliver(ctx context.Context, p *dotqmail.Plan, d dotqmail.Delivery) error {
	switch d.Kind {
	case dotqmail.Own:
		r := t.own()
		if !r.Status.IsAccept() {
			t.ownFailed = &r
			return r.Status
		}
		return nil
	case dotqmail.Maildir, dotqmail.Mbox:
		root, err := os.OpenRoot(p.Dir)
		if err != nil {
			return localTemp("cannot open the mailbox's directory", err)
		}
		defer root.Close()
		prefix := traceHeader(t.j.Envelope.Sender, p.Recipient)
		if d.Kind == dotqmail.Maildir {
			err = intoMaildir(root, d.Rel, t.newName(), prefix, t.j)
		} else {
			err = intoMbox(root, d.Rel, prefix, t.j)
		}
		if err != nil {
			return localTemp("cannot write into "+d.Rel, err)
		}
		return nil
	case dotqmail.Program:
		r, err := t.j.Open()
		if err != nil {
			return localTemp("cannot read the message", err)
		}
		defer r.Close()
		runner := &dotqmail.Runner{Timeout: t.m.ProgramTimeout}
		return runner.Run(ctx, p, d, r)
	}
	return mail.Temp("4.3.0", "unknown delivery instruction")
}

// Forward implements dotqmail.Target: the message is queued again for
// addrs, starting with the Delivered-To line, with sender rewritten by SRS
// when the route has it and an address leaves the site.
func (t *controlTarget) Forward(ctx context.Context, p *dotqmail.Plan, sender string, addrs []string) error {
	if srs := t.m.SRS; srs != nil && t.m.leavesSite(addrs) {
		s, err := srs.Forward(sender)
		if err != nil {
			return mail.Temp("4.3.0", "cannot rewrite the sender for the forward")
		}
		sender = s
	}
	if err := t.m.requeueJob(ctx, t.j, mail.Envelope{Sender: sender, Recipients: addrs}, p.DeliveredTo()); err != nil {
		return err
	}
	t.forwarded = append(t.forwarded, addrs...)
	return nil
}

// leavesSite reports whether an address is outside LocalDomains.
func (m *Mailboxes) leavesSite(addrs []string) bool {
	for _, a := range addrs {
		if !m.LocalDomains.Match(strings.TrimSuffix(mail.Domain(a), ".")) {
			return true
		}
	}
	return false
}

// requeueJob queues j's message again for env, starting with prefix.
func (m *Mailboxes) requeueJob(ctx context.Context, j *Job, env mail.Envelope, prefix string) error {
	f := m.requeue.Load()
	if f == nil {
		return mail.Temp("4.3.0", "forwarding is not available on this route")
	}
	r, err := j.Open()
	if err != nil {
		return localTemp("cannot read the message", err)
	}
	defer r.Close()
	if err := (*f)(ctx, env, []byte(prefix), r); err != nil {
		if st := mail.StatusOf(err); st.IsPermanent() {
			return st
		}
		m.logger().Warn("cannot queue a forwarded message", "recipients", env.Recipients, "err", err)
		return mail.Temp("4.3.0", "cannot queue the forwarded message")
	}
	return nil
}

// statusBadSRS refuses an SRS address that this site did not make, or
// made too long ago.
var statusBadSRS = mail.Perm("5.1.1", "sorry, that bounce address was not made here or has expired")

// srsAddress reports whether rcpt is an SRS address at the route's SRS
// domain: a bounce to a forward's rewritten sender.
func (m *Mailboxes) srsAddress(rcpt string) bool {
	if m.SRS == nil || m.SRS.Domain == "" {
		return false
	}
	_, dom := mail.Split(rcpt)
	return mail.EqualFoldASCII(strings.TrimSuffix(dom, "."), m.SRS.Domain) && dotqmail.IsSRS(rcpt)
}

// checkSRS accepts an SRS address whose hash is right and which has not
// expired.
func (m *Mailboxes) checkSRS(rcpt string) mail.Status {
	if _, err := m.SRS.Reverse(rcpt); err != nil {
		return statusBadSRS
	}
	return mail.OK("")
}

// reverseSRS sends a bounce addressed to an SRS address on to the address
// it stands for (the original sender), queued again with a Delivered-To
// line.
func (m *Mailboxes) reverseSRS(ctx context.Context, j *Job, rcpt string) Result {
	orig, err := m.SRS.Reverse(rcpt)
	if err != nil {
		return Result{Status: statusBadSRS}
	}
	env := mail.Envelope{Sender: mail.ExpandVERP(j.Envelope.Sender, rcpt), Recipients: []string{orig}}
	if err := m.requeueJob(ctx, j, env, "Delivered-To: "+mail.OneLine(rcpt)+"\n"); err != nil {
		return Result{Status: mail.StatusOf(err), Host: "srs"}
	}
	return Result{Status: mail.OK("returned to " + orig), Host: "srs"}
}
