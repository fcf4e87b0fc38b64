package inject

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
)

// Defaults for a Nullclient.
const (
	// DefaultTimeout bounds one QMQP transfer ([nullclient] timeout).
	DefaultTimeout = 60 * time.Second
	// DefaultConnectTimeout is qmail-qmqpc's connect timeout, used in
	// direct mode.
	DefaultConnectTimeout = qmqp.DefaultConnectTimeout
	// DefaultSpoolConnectTimeout is the connect timeout per hub in spool
	// mode: a hub that does not answer that fast is treated as down and the
	// message goes to the local queue, so the application never waits long.
	DefaultSpoolConnectTimeout = 3 * time.Second
)

// Committer commits a message straight into a queue directory, for spool
// mode when no daemon takes it (qmail.CommitToQueue is the real one).
type Committer func(ctx context.Context, dir string, env mail.Envelope, body io.Reader, size int64) (id string, err error)

// Nullclient hands composed messages on, the way `qmgate sendmail` does.
//
// Direct mode (SpoolDir empty), mini-qmail's: QMQP to Servers in order,
// failing over only when a connect fails (qmail-qmqpc's rule: after a
// connection is made the first server may have queued the message, so no
// other is tried). Whatever happens is final: a temporary failure is
// reported as one, and the caller keeps the message.
//
// Spool mode (SpoolDir set), nullmailer's: the same servers are tried with
// a short connect timeout; a message that none of them accepts right away
// (no connection, a Z, or a transfer that broke) is handed to the local
// daemon's QMQP socket (Local), and if that daemon is not there, committed
// into SpoolDir itself by Commit, when the user may write it. The local
// daemon forwards it with retries. A D from a hub is final: it would be
// refused again later. Only an acceptance by a hub, by the local daemon or
// by the queue on disk counts as success, so nothing is reported sent that
// is not durable somewhere. A transfer that broke after the hub had in fact
// queued the message can make a duplicate; that is the price of never
// losing one.
type Nullclient struct {
	// Servers are the hubs, "host:port" (qmqp.ParseServer's forms).
	Servers []string
	// Local is the local daemon's QMQP socket, "unix:/path"; "" for none.
	Local string
	// SpoolDir selects spool mode: the local daemon's queue directory.
	SpoolDir string
	// Commit writes into SpoolDir when the daemon cannot; nil disables it.
	Commit Committer
	// Timeout bounds each QMQP transfer (DefaultTimeout when 0).
	Timeout time.Duration
	// ConnectTimeout bounds each connect in direct mode
	// (DefaultConnectTimeout when 0); SpoolConnectTimeout in spool mode
	// (DefaultSpoolConnectTimeout when 0).
	ConnectTimeout      time.Duration
	SpoolConnectTimeout time.Duration
	// Verbose, when set, gets one line per step (sendmail -v).
	Verbose func(format string, args ...any)
}

// Outcome is what became of a message.
type Outcome struct {
	// Status is the final word: an acceptance, or the failure to report.
	Status mail.Status
	// Where names who accepted or refused it: a server, "local daemon", or
	// the spool directory; empty when nobody was reached.
	Where string
	// Spooled is true when the message is in the local queue rather than
	// at a hub.
	Spooled bool
}

func (n *Nullclient) logf(format string, args ...any) {
	if n.Verbose != nil {
		n.Verbose(format, args...)
	}
}

func orDefault(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// Send hands the message on; see Nullclient for the rules.
func (n *Nullclient) Send(ctx context.Context, m *Message) Outcome {
	timeout := orDefault(n.Timeout, DefaultTimeout)
	if n.SpoolDir == "" {
		if len(n.Servers) == 0 {
			return Outcome{Status: mail.Temp("4.3.5", "no QMQP servers configured ([nullclient] qmqp_servers)")}
		}
		o, _ := n.qmqp(ctx, n.Servers, orDefault(n.ConnectTimeout, DefaultConnectTimeout), timeout, m)
		return o
	}
	if len(n.Servers) > 0 {
		o, final := n.qmqp(ctx, n.Servers, orDefault(n.SpoolConnectTimeout, DefaultSpoolConnectTimeout), timeout, m)
		if final {
			return o
		}
		n.logf("not accepted by a hub (%s); spooling locally", o.Status.Describe())
	}
	if n.Local != "" {
		o, final := n.qmqp(ctx, []string{n.Local}, orDefault(n.SpoolConnectTimeout, DefaultSpoolConnectTimeout), timeout, m)
		if final {
			o.Spooled = o.Status.IsAccept()
			if o.Where != "" {
				o.Where = "local daemon " + o.Where
			}
			return o
		}
		n.logf("local daemon did not take it (%s)", o.Status.Describe())
	}
	if n.Commit == nil {
		return Outcome{Status: mail.Temp("4.3.0", "no hub and no local daemon accepted the message")}
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id, err := n.Commit(cctx, n.SpoolDir, m.Envelope, m.Reader(), m.Size)
	if err != nil {
		n.logf("spool directory %s: %v", n.SpoolDir, err)
		if st := mail.StatusOf(err); st.IsPermanent() {
			return Outcome{Status: st, Where: n.SpoolDir}
		}
		return Outcome{Status: mail.Temp("4.3.0", "no hub and no local daemon accepted the message, and the spool directory cannot be written: "+err.Error()), Where: n.SpoolDir}
	}
	return Outcome{Status: mail.OK("queued locally as " + id), Where: n.SpoolDir, Spooled: true}
}

// qmqp sends to one server list. final is false when the message may go
// elsewhere: no connection, a Z, or a transfer that broke.
func (n *Nullclient) qmqp(ctx context.Context, servers []string, connect, timeout time.Duration, m *Message) (Outcome, bool) {
	c := &qmqp.Client{Servers: servers, ConnectTimeout: connect, IOTimeout: timeout, SessionTimeout: timeout}
	n.logf("QMQP to %v (%d bytes, %d recipients)", servers, m.Size, len(m.Envelope.Recipients))
	res, err := c.Send(ctx, m.Envelope, m.Reader(), m.Size)
	var ce *qmqp.ConnectError
	var te *qmqp.TransferError
	switch {
	case err == nil:
		n.logf("%s: %s", res.Server, res.Status.Describe())
		return Outcome{Status: res.Status, Where: res.Server}, !res.Status.IsTemporary()
	case errors.Is(err, qmqp.ErrInvalidEnvelope):
		return Outcome{Status: res.Status}, true
	case errors.As(err, &ce):
		for _, a := range ce.Attempts {
			n.logf("%s: %v", a.Server, a.Err)
		}
		return Outcome{Status: mail.Temp("4.4.1", "could not connect to "+serverList(servers))}, false
	case errors.As(err, &te):
		n.logf("%v", te)
		return Outcome{Status: mail.Temp("4.4.2", "connection to "+res.Server+" failed after the message was sent: it may or may not have been queued there"), Where: res.Server}, false
	}
	// Our own side (reading the spooled message) failed: nothing to retry
	// elsewhere that would read better.
	n.logf("%v", err)
	return Outcome{Status: mail.Temp("4.3.0", "cannot read the spooled message")}, true
}

func serverList(s []string) string {
	if len(s) == 1 {
		return s[0]
	}
	return fmt.Sprintf("any of %d servers (%s, ...)", len(s), s[0])
}
