package qmail

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/qmgate/qmgate/mail"
)

// qmail-queue's exit codes (qmail-queue(8)). 11 to 40 are
// permanent, every other non-zero code temporary.
const (
	ExitOK             = 0
	ExitAddressTooLong = 11 // an envelope address of MaxEnvelopeAddress+1 bytes or more
	ExitRefused        = 31 // the mail server permanently refuses the message (qmqpc)
	ExitNoMemory       = 51
	ExitTimeout        = 52
	ExitWriteError     = 53 // write error or disk full
	ExitReadError      = 54 // cannot read the message or the envelope
	ExitConfig         = 55 // cannot read the configuration (qmqpc: qmqpservers)
	ExitNetwork        = 56 // trouble making a network connection
	ExitHome           = 61
	ExitQueueDir       = 62
	ExitQueuePid       = 63
	ExitQueueMess      = 64
	ExitQueueIntd      = 65
	ExitQueueTodo      = 66
	ExitTempRefused    = 71 // the mail server temporarily refuses the message
	ExitConnectTimeout = 72
	ExitConnectRefused = 73
	ExitCommFailed     = 74 // communication failed after the connection was made
	ExitBug            = 81
	ExitCustom         = 82 // notqmail: the reply text is on fd 6
	ExitEnvelopeFormat = 91
)

// PermanentExit reports whether qmail treats a qmail-queue exit code as a
// permanent failure.
func PermanentExit(code int) bool { return code >= 11 && code <= 40 }

// MaxEnvelopeAddress is the longest address qmail-queue takes: its buffer
// ADDR is 1003 bytes including the terminating NUL.
const MaxEnvelopeAddress = 1002

// EnvelopeError is a failure to read a qmail-queue envelope, with the exit
// code qmail-queue gives for it.
type EnvelopeError struct {
	Code int
	Err  error
}

func (e *EnvelopeError) Error() string {
	return fmt.Sprintf("qmail-queue envelope (exit %d): %v", e.Code, e.Err)
}

func (e *EnvelopeError) Unwrap() error { return e.Err }

// Envelope errors, wrapped in *EnvelopeError.
var (
	ErrEnvelopeFormat = errors.New("envelope format error: an entry does not start with F or T")
	ErrAddressTooLong = errors.New("envelope address too long")
	ErrEnvelopeShort  = errors.New("envelope cut short: no final NUL")
)

// ReadEnvelope reads a qmail-queue envelope, F<sender>\0 then T<rcpt>\0 for
// each recipient then one more \0, exactly as qmail-queue does:
//
//   - the first byte is not F, or a later entry starts with anything but T or
//     the final NUL: exit 91 (ErrEnvelopeFormat);
//   - an address of more than MaxEnvelopeAddress bytes: exit 11;
//   - EOF or a read error anywhere before the final NUL, an empty envelope
//     included: exit 54. A writer that stops early has aborted the message.
//
// Zero recipients are accepted, as qmail-queue accepts them; callers decide.
// maxRecipients > 0 bounds the recipients, so a hostile writer cannot grow
// memory without end; qmail has no such bound, and going over it fails with
// exit 91, which qmail's callers treat as temporary. Bytes after the final
// NUL are not read.
func ReadEnvelope(r io.Reader, maxRecipients int) (mail.Envelope, error) {
	br, ok := r.(io.ByteReader)
	if !ok {
		br = bufio.NewReaderSize(r, 4096)
	}
	var env mail.Envelope
	fail := func(code int, err error) (mail.Envelope, error) {
		return mail.Envelope{}, &EnvelopeError{Code: code, Err: err}
	}
	readErr := func(err error) (mail.Envelope, error) {
		if err == io.EOF {
			err = ErrEnvelopeShort
		}
		return fail(ExitReadError, err)
	}
	buf := make([]byte, 0, 256)
	readAddr := func() (string, error) {
		buf = buf[:0]
		for {
			c, err := br.ReadByte()
			if err != nil {
				return "", err
			}
			if c == 0 {
				return string(buf), nil
			}
			if len(buf) >= MaxEnvelopeAddress {
				return "", ErrAddressTooLong
			}
			buf = append(buf, c)
		}
	}
	c, err := br.ReadByte()
	if err != nil {
		return readErr(err)
	}
	if c != 'F' {
		return fail(ExitEnvelopeFormat, ErrEnvelopeFormat)
	}
	env.Sender, err = readAddr()
	if err == ErrAddressTooLong {
		return fail(ExitAddressTooLong, err)
	} else if err != nil {
		return readErr(err)
	}
	for {
		c, err := br.ReadByte()
		if err != nil {
			return readErr(err)
		}
		if c == 0 {
			return env, nil
		}
		if c != 'T' {
			return fail(ExitEnvelopeFormat, ErrEnvelopeFormat)
		}
		if maxRecipients > 0 && len(env.Recipients) >= maxRecipients {
			return fail(ExitEnvelopeFormat, fmt.Errorf("more than %d recipients", maxRecipients))
		}
		rcpt, err := readAddr()
		if err == ErrAddressTooLong {
			return fail(ExitAddressTooLong, err)
		} else if err != nil {
			return readErr(err)
		}
		env.Recipients = append(env.Recipients, rcpt)
	}
}

// AppendEnvelope appends env in qmail-queue's form to dst. The caller makes
// sure no address holds a NUL (mail.ValidAddress).
func AppendEnvelope(dst []byte, env mail.Envelope) []byte {
	dst = append(dst, 'F')
	dst = append(dst, env.Sender...)
	dst = append(dst, 0)
	for _, r := range env.Recipients {
		dst = append(dst, 'T')
		dst = append(dst, r...)
		dst = append(dst, 0)
	}
	return append(dst, 0)
}
