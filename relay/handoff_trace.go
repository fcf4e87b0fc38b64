package relay

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/queue"
)

// The hand-off trace header, HandoffHeader, is written by the hub that
// hands a message over and read by the peer that takes it: only from a
// trusted peer (a QMTP relay client, by address or by verified QMTPS
// client certificate) does the peer continue the message's arrival time,
// attempt count and delay notice. Every hub removes the header from every
// message it accepts, trusted or not, so that it never travels further
// and no one else can shorten a message's lifetime with it.

// handoffHeaderLine renders the trace header line a hand-off writes.
func handoffHeaderLine(arrival time.Time, attempts int, delayNotified bool) string {
	s := fmt.Sprintf("%s: arrival=%s; attempts=%d", HandoffHeader, arrival.UTC().Format(time.RFC3339Nano), attempts)
	if delayNotified {
		s += "; delay-notice=sent"
	}
	return s + "\n"
}

// parseHandoff reads a trace header's value; ok is false when it is not
// one qmgate wrote.
func parseHandoff(v string) (c queue.Continuation, ok bool) {
	seen := 0
	for part := range strings.SplitSeq(v, ";") {
		k, val, found := strings.Cut(strings.TrimSpace(part), "=")
		if !found {
			continue
		}
		switch k {
		case "arrival":
			t, err := time.Parse(time.RFC3339Nano, val)
			if err != nil {
				return c, false
			}
			c.Arrival, seen = t, seen|1
		case "attempts":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return c, false
			}
			c.Attempts, seen = min(n, queue.MaxContinuedAttempts), seen|2
		case "delay-notice":
			c.DelayNotified = val == "sent"
		}
	}
	return c, seen == 3
}

// handoffTrusted says whether a hand-off trace header from c may be
// believed: hand-offs come over QMTP (or QMTPS) from relay clients, which
// includes clients with a verified QMTPS certificate.
func handoffTrusted(c *mail.ConnInfo) bool {
	return c != nil && c.RelayClient && (c.Proto == "QMTP" || c.Proto == "QMTPS")
}

// traceBufBytes is the line buffer of the header filter: a longer header
// line passes through in pieces, never held whole.
const traceBufBytes = 4 << 10

// traceFilter streams a message through while it removes every
// HandoffHeader field (with its continuation lines) from the header
// section, and keeps the first one's value. After the header section it
// only copies.
type traceFilter struct {
	br        *bufio.Reader
	inHeader  bool
	lineStart bool
	skipping  bool // inside a removed field
	pending   []byte
	value     string
	found     bool
	err       error
}

func newTraceFilter(r io.Reader) *traceFilter {
	return &traceFilter{br: bufio.NewReaderSize(r, traceBufBytes), inHeader: true, lineStart: true}
}

var handoffPrefix = []byte(HandoffHeader + ":")

func (t *traceFilter) Read(p []byte) (int, error) {
	for len(t.pending) == 0 {
		if t.err != nil {
			return 0, t.err
		}
		if !t.inHeader {
			return t.br.Read(p)
		}
		line, err := t.br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			t.err = err
		}
		t.filter(line)
	}
	n := copy(p, t.pending)
	t.pending = t.pending[n:]
	return n, nil
}

// filter decides about one line, or one piece of a long line.
func (t *traceFilter) filter(line []byte) {
	start := t.lineStart
	t.lineStart = len(line) > 0 && line[len(line)-1] == '\n'
	if len(line) == 0 {
		return
	}
	if !start {
		if !t.skipping {
			t.pending = line
		}
		return
	}
	switch {
	case line[0] == ' ' || line[0] == '\t':
		if t.skipping {
			return
		}
	case len(line) >= len(handoffPrefix) && bytes.EqualFold(line[:len(handoffPrefix)], handoffPrefix):
		t.skipping = true
		if !t.found {
			t.found = true
			t.value = strings.TrimSpace(string(line[len(handoffPrefix):]))
		}
		return
	case bytes.IndexByte(line, ':') < 0 || line[0] == '\r' || line[0] == '\n':
		// A blank line, or text that is no header field: the body.
		t.inHeader = false
		t.skipping = false
	default:
		t.skipping = false
	}
	t.pending = line
}

// continuation returns what a trace header said, if there was a valid
// one.
func (t *traceFilter) continuation() (queue.Continuation, bool) {
	if !t.found {
		return queue.Continuation{}, false
	}
	return parseHandoff(t.value)
}
