package relay

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/qmgate/qmgate/mail"
)

// origin is who a message came from, as the door's log lines and counters
// name it: the protocol the client spoke, in one spelling ("QMTP", "QMQP",
// "SMTP"), and the client ("192.0.2.7", or "uid 1000 (alice)" for a local
// user of the QMQP socket).
//
// Mail that a tcpserver drop-in (qmgate qmtpd or qmqpd) hands to the
// daemon arrives over the daemon's QMQP socket from a local user. The
// drop-in's Received line, first in the message, names the protocol and
// the address it saw; the daemon believes it only from the local users
// trusted to run drop-ins (root, the daemon's own user, [qmqp]
// dropin_users), since anyone else who may use the socket could write any
// Received line. It is used for logs and counters only: policy, limits and
// the daemon's own Received line still see the local user.
type origin struct {
	proto  string
	client string
	via    string // the drop-in's local user, "" for a direct client
}

type originKey struct{}

// originOf returns the origin of a message on c, which came in over proto
// ("QMTP", "QMQP", "SMTP"), or the one a trusted drop-in stated.
func originOf(ctx context.Context, proto string, c *mail.ConnInfo) origin {
	if o, ok := ctx.Value(originKey{}).(origin); ok {
		return o
	}
	return origin{proto: proto, client: c.Client()}
}

// attrs are the log attributes that name the origin.
func (o origin) attrs() []slog.Attr {
	a := []slog.Attr{slog.String("client", o.client), slog.String("proto", o.proto)}
	if o.via != "" {
		a = append(a, slog.String("relayed_by", o.via))
	}
	return a
}

// maxDropInHeader bounds how much of a message is looked at for the
// drop-in's Received line, which follows the QMQP server's own: each has
// at most three client-supplied fields of mail.MaxReceivedField bytes.
const maxDropInHeader = 8*mail.MaxReceivedField + 256

// dropInOrigin returns ctx carrying the origin a trusted drop-in stated
// in its Received line, the one after the QMQP server's own at the top of
// body, and the body to read instead of body (nothing is taken out of the
// message). Anything else leaves ctx as it is.
func dropInOrigin(ctx context.Context, c *mail.ConnInfo, users []string, body io.Reader) (context.Context, io.Reader) {
	peer, ok := c.RemoteAddr.(*Peer)
	if !ok || !(peer.UID == 0 || peer.UID == os.Geteuid() || peer.User != "" && slices.Contains(users, peer.User)) {
		return ctx, body
	}
	br := bufio.NewReaderSize(body, maxDropInHeader)
	head, _ := br.Peek(maxDropInHeader)
	proto, client, ok := parseDropInReceived(skipField(head))
	if !ok {
		return ctx, br
	}
	return context.WithValue(ctx, originKey{}, origin{proto: proto, client: client, via: peer.String()}), br
}

// skipField returns b after its first header field and the field's
// continuation lines; nil if the field does not end within b.
func skipField(b []byte) []byte {
	for i := 0; i < len(b); i++ {
		if b[i] == '\n' && i+1 < len(b) && b[i+1] != ' ' && b[i+1] != '\t' {
			return b[i+1:]
		}
	}
	return nil
}

// parseDropInReceived reads the Received line qmgate's drop-ins write
// (mail.ConnInfo.Received):
//
//	Received: from HOST (info@IP)
//	  by LOCAL with PROTO; DATE
//
// and returns the protocol family and the client's address.
func parseDropInReceived(b []byte) (proto, client string, ok bool) {
	first, rest, _ := strings.Cut(string(b), "\n")
	second, _, lines := strings.Cut(rest, "\n") // both lines end in a newline
	from, isReceived := strings.CutPrefix(first, "Received: from ")
	open := strings.LastIndexByte(from, '(')
	if !lines || !isReceived || open < 0 || !strings.HasSuffix(from, ")") || !strings.HasPrefix(second, "  by ") {
		return "", "", false
	}
	ip := from[open+1 : len(from)-1]
	if at := strings.LastIndexByte(ip, '@'); at >= 0 {
		ip = ip[at+1:]
	}
	addr, err := netip.ParseAddr(ip)
	_, with, _ := strings.Cut(second, " with ")
	word, _, semi := strings.Cut(with, ";")
	if proto = protoFamily(word); err != nil || !semi || proto == "" {
		return "", "", false
	}
	return proto, addr.String(), true
}

// protoFamily is the one spelling of a protocol in logs and metrics:
// "QMTP" for QMTP and QMTPS, "SMTP" for every SMTP variant of the Received
// line (ESMTPSA, UTF8SMTPS...), "QMQP"; "" for anything else.
func protoFamily(word string) string {
	switch {
	case word == "QMTP" || word == "QMTPS":
		return "QMTP"
	case word == "QMQP":
		return "QMQP"
	case strings.HasSuffix(strings.TrimRight(word, "SA"), "SMTP") || word == "SMTP":
		return "SMTP"
	}
	return ""
}
