package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
)

func init() {
	register(&command{name: "send", summary: "send one message over qmtp://, qmqp:// or smtp:// and print one status per recipient", noConfig: true, run: runSend})
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// Exit codes of qmgate send, from sysexits.
const (
	exitOK       = 0
	exitTempFail = 75 // EX_TEMPFAIL: any recipient failed temporarily
	exitPermFail = 69 // EX_UNAVAILABLE: any recipient failed permanently
	exitUsage    = 64
	exitNoInput  = 66
)

func runSend(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlags("send", sendUsage)
	via := fs.String("via", "", "the server `URL`: qmtp://HOST:PORT, qmtps://HOST:PORT, qmqp://HOST:PORT[,HOST:PORT...] or smtp://HOST:PORT")
	from := fs.String("from", "", "envelope sender `ADDR`; empty for the null sender")
	var to multiFlag
	fs.Var(&to, "to", "recipient `ADDR`; repeat for several")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this `DURATION`")
	insecure := fs.Bool("insecure", false, "smtp/qmtps: do not verify the server's certificate (tests only)")
	pos, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	switch {
	case *via == "":
		return usageError(fs, stderr, "-via is required")
	case len(to) == 0:
		return usageError(fs, stderr, "at least one -to is required")
	case len(pos) > 1:
		return usageError(fs, stderr, "unexpected argument %q (one message file at most)", pos[1])
	}
	u, err := url.Parse(*via)
	if err != nil || u.Host == "" {
		return fail(stderr, "send", exitUsage, "-via %q: want qmtp://HOST:PORT, qmqp://HOST:PORT[,...] or smtp://HOST:PORT", *via)
	}
	var in io.Reader = stdin
	if len(pos) == 1 {
		f, err := os.Open(pos[0])
		if err != nil {
			return fail(stderr, "send", exitNoInput, "%v", err)
		}
		defer f.Close()
		in = f
	}
	// The protocols want the size before the body: spool the message to a
	// temporary file (never to memory) with LF line ends, qmail's form.
	spool, size, err := spoolLF(in)
	if err != nil {
		return fail(stderr, "send", exitNoInput, "reading the message: %v", err)
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	env := mail.Envelope{Sender: *from, Recipients: to}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var sts []mail.Status
	switch u.Scheme {
	case "qmtp", "qmtps":
		sts = sendQMTP(ctx, u, env, spool, size, *insecure)
	case "qmqp":
		res, _ := (&qmqp.Client{Servers: strings.Split(u.Host, ",")}).Send(ctx, env, spool, size)
		for range to {
			sts = append(sts, res.Status)
		}
	case "smtp", "smtps":
		sts = sendSMTP(ctx, u, env, spool, size, *insecure)
	default:
		return fail(stderr, "send", exitUsage, "-via %q: unknown scheme %q", *via, u.Scheme)
	}
	code = exitOK
	for i, rcpt := range to {
		st := mail.StatusTempFailure
		if i < len(sts) {
			st = sts[i]
		}
		fmt.Fprintln(stdout, statusLine(rcpt, st))
		switch {
		case st.IsPermanent():
			code = exitPermFail
		case st.IsTemporary() && code != exitPermFail:
			code = exitTempFail
		}
	}
	return code
}

const sendUsage = `usage: qmgate send -via URL -from ADDR -to ADDR [-to ADDR ...] [FILE]

Send one message (FILE, or stdin) and print one line per recipient:
  ADDR accepted: TEXT   the next hop took responsibility for it
  ADDR deferred: TEXT   a temporary failure; worth trying again (exit 75)
  ADDR refused: TEXT    a permanent failure (exit 69)
TEXT is what the server said.`

// statusLine is one recipient's outcome in words (the wire's status letters
// stay on the wire).
func statusLine(rcpt string, st mail.Status) string {
	return rcpt + " " + mail.OneLine(st.Describe())
}

func sendQMTP(ctx context.Context, u *url.URL, env mail.Envelope, body io.Reader, size int64, insecure bool) []mail.Status {
	c := &qmtp.Client{}
	addr := u.Host
	if u.Port() == "" {
		addr = u.Host + ":209"
	}
	if u.Scheme == "qmtps" {
		c.TLSConfig = tlsClientConfig(u.Hostname(), insecure)
	}
	res, _ := c.Send(ctx, addr, &qmtp.Message{Envelope: env, Body: body, Size: size})
	if len(res) == 1 {
		return res[0]
	}
	return nil
}

// spoolLF copies r into a temporary file, turning CRLF line ends into LF
// (a lone CR stays), and returns it rewound with its size. The caller
// removes the file.
func spoolLF(r io.Reader) (*os.File, int64, error) {
	f, err := os.CreateTemp("", "qmgate-send-*")
	if err != nil {
		return nil, 0, err
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	br := bufio.NewReaderSize(r, 64<<10)
	var n int64
	pendingCR := false // a CR at the end of the last chunk, maybe half of CRLF
	for {
		chunk, rerr := br.ReadSlice('\n')
		if pendingCR && !(len(chunk) > 0 && chunk[0] == '\n') {
			bw.WriteByte('\r')
			n++
		}
		pendingCR = false
		switch {
		case bytes.HasSuffix(chunk, []byte("\r\n")):
			chunk = append(chunk[:len(chunk)-2], '\n')
		case len(chunk) > 0 && chunk[len(chunk)-1] == '\r':
			chunk, pendingCR = chunk[:len(chunk)-1], true
		}
		m, _ := bw.Write(chunk)
		n += int64(m)
		if rerr == bufio.ErrBufferFull {
			continue
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, 0, rerr
		}
	}
	if pendingCR {
		bw.WriteByte('\r')
		n++
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, 0, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, 0, err
	}
	return f, n, nil
}

// tlsClientConfig is the client TLS configuration of qmgate send.
func tlsClientConfig(serverName string, insecure bool) *tls.Config {
	return &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
}
