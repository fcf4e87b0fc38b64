package qmail

import (
	"context"
	"io"
	"net/netip"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
)

// QMTPHandler is qmail-qmtpd's policy as a qmtp.Handler: each package
// streams into its own Sink message (qmail-qmtpd starts one qmail-queue per
// package), each recipient is checked, and the accepted ones share the
// sink's one result (PROTOCOLS.md 2.2):
//
//   - with RELAYCLIENT set (RelaySet), its value is appended to every
//     recipient and rcpthosts is not consulted; a recipient that grows to
//     mail.MaxAddressLen bytes gets "sorry, I can't handle that recipient";
//   - a client whose address is in RelayClients (qmgate's [qmtp]
//     relay_clients) may relay too, with nothing appended;
//   - otherwise a recipient must be inside RcptHosts, or it gets "sorry,
//     that domain isn't in my list of allowed rcpthosts (#5.7.1)". Unlike
//     qmail, empty RcptHosts allows nothing (qmail's missing rcpthosts is an
//     open relay) and an address without '@' is refused (mail.HostList).
//
// The message size limit (databytes) and the hop limit are the
// qmtp.Server's.
type QMTPHandler struct {
	Sink         Sink
	RcptHosts    mail.HostList
	RelayClients []netip.Prefix
	RelayClient  string
	RelaySet     bool
}

func inPrefixes(ip netip.Addr, nets []netip.Prefix) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	for _, p := range nets {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// ServeQMTP implements qmtp.Handler.
func (h *QMTPHandler) ServeQMTP(ctx context.Context, req *qmtp.Request) []mail.Status {
	msg, berr := h.Sink.Begin(ctx)
	if berr == nil {
		io.Copy(msg, req.Body)
	}
	env, err := req.Envelope()
	statuses := make([]mail.Status, len(env.Recipients))
	if err != nil || berr != nil {
		// A limit or a bad sender (the server replies with it to every
		// recipient), a broken package (no reply at all), or a sink that
		// could not start.
		if msg != nil {
			msg.Abort()
		}
		st := mail.StatusOf(err)
		if err == nil {
			st = mail.StatusOf(berr)
		}
		for i := range statuses {
			statuses[i] = st
		}
		return statuses
	}
	var accepted []string
	var idx []int
	relay := inPrefixes(req.Conn.RemoteIP(), h.RelayClients)
	for i, r := range env.Recipients {
		switch {
		case relay && !h.RelaySet:
		case h.RelaySet:
			r += h.RelayClient
			if !mail.ValidAddress(r) {
				statuses[i] = mail.StatusBadRecipient
				continue
			}
		case !h.RcptHosts.RecipientAllowed(r):
			statuses[i] = mail.StatusNotRcptHost
			continue
		}
		accepted = append(accepted, r)
		idx = append(idx, i)
	}
	if len(accepted) == 0 {
		msg.Abort()
		return statuses
	}
	res := msg.Commit(ctx, mail.Envelope{Sender: env.Sender, Recipients: accepted})
	for _, i := range idx {
		statuses[i] = res.Status
	}
	return statuses
}

// QMQPHandler is qmail-qmqpd's as a qmqp.Handler: the message streams into
// a Sink message and the sink's result is the reply. Like qmail-qmqpd it
// relays anywhere: who may connect is decided before (tcpserver's rules, or
// the qmqp.Server's allow list; AllowList is the check for the latter).
type QMQPHandler struct {
	Sink Sink
}

// ServeQMQP implements qmqp.Handler.
func (h *QMQPHandler) ServeQMQP(ctx context.Context, req *qmqp.Request) mail.Status {
	msg, berr := h.Sink.Begin(ctx)
	if berr == nil {
		io.Copy(msg, req.Body)
	}
	env, err := req.Envelope()
	if err != nil || berr != nil {
		if msg != nil {
			msg.Abort()
		}
		if err != nil {
			return mail.StatusOf(err)
		}
		return mail.StatusOf(berr)
	}
	return msg.Commit(ctx, env).Status
}

// AllowList returns an allow check for a qmqp.Server run under tcpserver:
// with no networks, everyone tcpserver let in (qmail-qmqpd's rule: access
// is tcpserver's -x rules); otherwise only clients in them.
func AllowList(nets []netip.Prefix) func(*mail.ConnInfo) bool {
	return func(c *mail.ConnInfo) bool {
		return len(nets) == 0 || inPrefixes(c.RemoteIP(), nets)
	}
}
