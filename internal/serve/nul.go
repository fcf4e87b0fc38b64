package serve

import (
	"bytes"
	"io"

	"github.com/qmgate/qmgate/mail"
)

// StatusNUL refuses a message with a NUL byte. No message may carry one
// (RFC 5322 2.3 allows none in a message, RFC 5321 4.1.2 none in data), and
// outbound SMTP peers treat them in ways nobody can predict, so every
// listener refuses them at the door, as qmail-smtpd refuses a bare LF.
var StatusNUL = mail.Status{Class: mail.Permanent, Code: "5.6.0", Text: "sorry, message contains a NUL byte", SMTP: 554}

// NULReader passes a message through and fails with StatusNUL at the first
// NUL byte. The protocol server drains the rest of the message from its
// own reader.
type NULReader struct {
	r   io.Reader
	err error
}

// RefuseNUL returns a NULReader over r.
func RefuseNUL(r io.Reader) *NULReader { return &NULReader{r: r} }

func (n *NULReader) Read(p []byte) (int, error) {
	if n.err != nil {
		return 0, n.err
	}
	k, err := n.r.Read(p)
	if bytes.IndexByte(p[:k], 0) >= 0 {
		n.err = StatusNUL
		return 0, n.err
	}
	return k, err
}

// Err returns StatusNUL once a NUL byte was seen, else nil.
func (n *NULReader) Err() error { return n.err }
