package smtp

import (
	"context"
	"io"

	"github.com/qmgate/qmgate/mail"
)

// Handler decides on each envelope address and commits messages. Policy
// (rcpthosts, relay clients, authenticated users) sits in Sender and
// Recipient; Deliver puts the message into the queue.
//
// Every method returns a mail.Status, rendered as the SMTP reply: an
// acceptance as 250, anything else with its code, enhanced code and text.
// The zero Status is a temporary failure, never an acceptance. The
// mail.ConnInfo is a copy made for the call: read it, do not keep it.
type Handler interface {
	// Sender is asked at MAIL FROM. from is the raw reverse-path: quoting
	// removed, "" for the null sender <>.
	Sender(ctx context.Context, c *mail.ConnInfo, from string) mail.Status
	// Recipient is asked at each RCPT TO; only the recipients it accepts
	// become part of the envelope.
	Recipient(ctx context.Context, c *mail.ConnInfo, from, rcpt string) mail.Status
	// Deliver commits one message. body starts with the server's Received
	// line, followed by the message with LF line ends. A Read error (the
	// size limit: mail.StatusTooBig; the hop limit: mail.StatusTooManyHops; a
	// bare CR; a broken connection) means the message is not to be
	// committed: Deliver must then return a failure, and the server replies
	// with the read error's status whatever Deliver returned. Deliver
	// returns an acceptance only once the message is durable, and only after
	// reading body to io.EOF.
	Deliver(ctx context.Context, c *mail.ConnInfo, env mail.Envelope, body io.Reader) mail.Status
}

// Authenticator checks a user name and password (AUTH PLAIN and LOGIN). A
// wrong password is ok == false with a nil error; an error means the check
// could not be made (a temporary failure, 454 4.7.0).
type Authenticator interface {
	Authenticate(ctx context.Context, username, password string) (ok bool, err error)
}
