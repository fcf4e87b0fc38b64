package qmqp

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/qmgate/qmgate/internal/serve"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/netstring"
)

// Request is one QMQP message as the server hands it to the Handler.
//
// QMQP sends the message before the envelope, so a handler works like
// qmail-queue reading fd 0 and then fd 1: it copies Body to its spool
// first, then calls Envelope, which reads the sender and the recipients up
// to the end of the request. Only if Envelope returns no error may the
// handler commit the message; every error means the server will not accept
// it (a Status error is the reply the server sends regardless of what the
// handler returns; any other error means the connection broke or the request
// was malformed, and no reply is sent at all).
//
// A Request is valid only during ServeQMQP and is not safe for concurrent use.
type Request struct {
	// Conn describes the connection; its Proto is "QMQP".
	Conn *mail.ConnInfo
	// Body yields the server's Received line (qmail's form, "with QMQP"),
	// then the message bytes exactly as the client sent them (QMQP has no
	// mode byte and no line-end conversion). Once the header crosses the
	// hop limit, Read returns mail.StatusTooManyHops as its error. (A
	// message declared over MaxMessageBytes never reaches the handler.)
	Body io.Reader
	// Size is the message's length as the client declared it, without the
	// Received line.
	Size int64

	outer    *netstring.Reader // the connection: outer length and comma
	ob       *bufio.Reader     // the outer reader's buffer, pooled
	br       *bufio.Reader     // the inner reader's buffer, pooled
	inner    *netstring.Reader // inside the outer netstring
	msg      io.Reader         // the message netstring's raw data
	body     *mail.BodyReader  // msg with the size and hop limits
	maxRcpts int
	tooBig   bool // the declared size is over the limit

	done   bool
	env    mail.Envelope
	envErr error
	nul    *serve.NULReader // the message under body: no NUL bytes
	proto  error            // grammar or I/O failure: no reply
}

// errReleased is what a Body kept beyond ServeQMQP reads.
var errReleased = errors.New("qmqp: request used after its handler returned")

// release returns the request's buffer to the pool once the request has been
// read to its end or dropped. A Body kept by a handler beyond ServeQMQP reads
// errReleased, never the recycled buffer; Envelope returns its first result.
func (r *Request) release() {
	if r.br == nil {
		return
	}
	if !r.done {
		r.done, r.envErr = true, errReleased
	}
	putReader(r.br)
	putReader(r.ob)
	r.br, r.ob = nil, nil
}

// bodyReader is Request.Body: the Received line, then the message.
type bodyReader struct {
	req      *Request
	received string
	body     io.Reader
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.req.br == nil {
		return 0, errReleased
	}
	if len(b.received) > 0 {
		n := copy(p, b.received)
		b.received = b.received[n:]
		return n, nil
	}
	return b.body.Read(p)
}

// Envelope reads the rest of the request: whatever of the body the handler
// left unread (discarded), the sender, and every recipient up to the end of
// the outer netstring and its comma. It may be called more than once; later
// calls return the first result.
//
// The Envelope holds the sender and the acceptable recipients read. The error
// is nil only when the whole request is well-formed and acceptable. A
// mail.Status error is the permanent refusal the server will send whatever
// the handler returns: the message crossed a limit (mail.StatusTooBig,
// mail.StatusTooManyHops), an address is 1000 bytes or longer or contains a
// NUL (mail.StatusBadAddresses, qmail-qmqpd's "sorry, I can't accept
// addresses like that"), there are more than MaxRecipients recipients
// (D #5.5.3), or there is none (mail.StatusNoRecipients). Any
// other error means the connection failed or the request was malformed
// (errors.Is(err, ErrMalformed)); no reply will be sent.
func (r *Request) Envelope() (mail.Envelope, error) {
	if !r.done {
		r.done = true
		r.envErr = r.readEnvelope()
	}
	return r.env, r.envErr
}

// left is how many bytes of the outer netstring's data are still unread.
func (r *Request) left() int64 {
	return r.outer.Remaining() + int64(r.inner.Buffered())
}

// fits checks that an inner netstring of n data bytes, whose length was just
// read, ends inside the outer one. The outer length is the contract: every
// inner byte is charged against it, so a lying inner length is caught here
// rather than by reading past the request.
func (r *Request) fits(n int64) error {
	if n < 0 || n+1 > r.left() {
		return fmt.Errorf("%w: inner netstring of %d bytes overruns the outer length", ErrMalformed, n)
	}
	return nil
}

func (r *Request) fail(err error) error {
	r.proto = readErr(err)
	return r.proto
}

func (r *Request) readEnvelope() error {
	// The rest of the message. Draining through the BodyReader lets it see
	// a hop count the handler did not read far enough to see. A message
	// declared too big is refused for its size alone, whatever its header
	// holds, so the reply does not depend on how the bytes arrived.
	body := io.Reader(r.body)
	if r.tooBig {
		body = r.msg
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		var st mail.Status
		if !errors.As(err, &st) {
			return r.fail(err)
		}
		if _, err := io.Copy(io.Discard, r.msg); err != nil {
			return r.fail(err)
		}
	}
	if err := r.inner.End(); err != nil {
		return r.fail(err)
	}

	bad := false
	sender, ok, err := r.readAddress(true)
	if err != nil {
		return r.fail(err)
	}
	bad = bad || !ok
	r.env.Sender = sender
	count := 0
	for r.left() > 0 {
		count++
		rcpt, ok, err := r.readAddress(keepRcpt(r.maxRcpts, count))
		if err != nil {
			return r.fail(err)
		}
		// An empty recipient passes qmail-qmqpd, but a gateway has nowhere
		// to deliver it.
		ok = ok && (rcpt != "" || !keepRcpt(r.maxRcpts, count))
		bad = bad || !ok
		if ok && keepRcpt(r.maxRcpts, count) {
			r.env.Recipients = append(r.env.Recipients, rcpt)
		}
	}
	if err := r.outer.End(); err != nil {
		return r.fail(err)
	}

	switch {
	case r.tooBig:
		return mail.StatusTooBig
	case r.body.Err() != nil:
		return r.body.Err()
	case r.nul != nil && r.nul.Err() != nil:
		return r.nul.Err()
	case bad:
		return mail.StatusBadAddresses
	case r.maxRcpts > 0 && count > r.maxRcpts:
		return statusTooManyRcpts
	case count == 0:
		return mail.StatusNoRecipients
	}
	return nil
}

// readAddress reads one address netstring. ok is false for an unacceptable
// address (too long or containing NUL); such an address is skipped without
// being held in memory, as is every address when keep is false.
func (r *Request) readAddress(keep bool) (addr string, ok bool, err error) {
	data, n, err := r.inner.Next(-1)
	if err != nil {
		return "", false, err
	}
	if err := r.fits(n); err != nil {
		return "", false, err
	}
	if n >= mail.MaxAddressLen || !keep {
		return "", n < mail.MaxAddressLen, r.inner.End()
	}
	buf := make([]byte, n) // n < MaxAddressLen: small, whatever arrives
	if _, err := io.ReadFull(data, buf); err != nil {
		return "", false, err
	}
	if err := r.inner.End(); err != nil {
		return "", false, err
	}
	a := string(buf)
	return a, mail.ValidAddress(a), nil
}

// statusTooManyRcpts is permanent in QMQP, unlike mail.StatusTooManyRcpts
// (SMTP's 452, after which the client sends the rest in another
// transaction): QMQP has one reply for the whole message, so a client could
// only retry the same request forever.
var statusTooManyRcpts = mail.Perm("5.5.3", "too many recipients")

// keepRcpt reports whether the count'th recipient is within the limit.
func keepRcpt(max, count int) bool { return max <= 0 || count <= max }
