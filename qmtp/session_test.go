package qmtp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// fixedTime is the Received line's date in every transcript.
var fixedTime = time.Date(1995, 9, 26, 4, 46, 54, 0, time.UTC)

// rcvd is the Received line the server writes for a ServeConn session with
// no ConnInfo and Hostname "mx.test".
const rcvd = "Received: from unknown (unknown)\n  by mx.test with QMTP; 26 Sep 1995 04:46:54 -0000\n"

// ns frames s as a netstring.
func ns(s string) string { return fmt.Sprintf("%d:%s,", len(s), s) }

// pk builds a package: the encoded message (mode byte included), the sender
// and the recipients.
func pk(msg, sender string, rcpts ...string) string {
	var list strings.Builder
	for _, r := range rcpts {
		list.WriteString(ns(r))
	}
	return ns(msg) + ns(sender) + ns(list.String())
}

// Exact reply texts qmail-qmtpd.c sends for a bad recipient and the rest.
const (
	replyBadRcpt   = "Dsorry, I can't handle that recipient (#5.1.3)"
	replyBadSender = "Dunacceptable sender (#5.1.7)"
	replyTooBig    = "Dsorry, that message size exceeds my databytes limit (#5.3.4)"
	replyHops      = "Dtoo many hops, this message is looping (#5.4.6)"
	replyTemp      = "Ztemporary failure (#4.3.0)"
	replyExcess    = "Ztoo many recipients in one package, send the rest later (#4.5.3)"
)

// seen is what the test handler observed of one package.
type seen struct {
	body    string
	bodyErr error
	env     mail.Envelope
	envErr  error
	size    int64
	crlf    bool
}

type sessionResult struct {
	out  string
	err  error
	pkgs []seen
}

type rwPair struct {
	io.Reader
	io.Writer
}

// answer is the test handlers' policy: a recipient starting with "z" gets a
// temporary failure, "d" a permanent one, any other "ok <index>".
func answer(rcpts []string) []mail.Status {
	st := make([]mail.Status, len(rcpts))
	for i, r := range rcpts {
		switch {
		case strings.HasPrefix(r, "z"):
			st[i] = mail.Temp("4.2.0", "try later")
		case strings.HasPrefix(r, "d"):
			st[i] = mail.Perm("5.1.1", "no such user")
		default:
			st[i] = mail.OK(fmt.Sprintf("ok %d", i))
		}
	}
	return st
}

func newTestServer(tweak func(*Server)) *Server {
	s := &Server{
		Hostname: "mx.test",
		ErrorLog: slog.New(slog.DiscardHandler),
		now:      func() time.Time { return fixedTime },
	}
	if tweak != nil {
		tweak(s)
	}
	return s
}

// runSession feeds in to a server session as the whole client side and
// returns what the server wrote and what the handler saw.
func runSession(t *testing.T, srv *Server, in io.Reader) sessionResult {
	t.Helper()
	var res sessionResult
	var out bytes.Buffer
	srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
		var sn seen
		b, err := io.ReadAll(req.Body)
		sn.body, sn.bodyErr = string(b), err
		sn.env, sn.envErr = req.Envelope()
		sn.size, sn.crlf = req.Size, req.CRLF
		res.pkgs = append(res.pkgs, sn)
		return answer(sn.env.Recipients)
	})
	res.err = srv.ServeConn(context.Background(), rwPair{in, &out}, nil)
	res.out = out.String()
	return res
}

func addr(n int) string {
	return strings.Repeat("a", n-len("@example.com")) + "@example.com"
}

// specPackage1 and specPackage2 are the two packages of the QMTP spec's
// section 8 example, byte for byte.
const (
	specMsg1 = "\n" +
		"Received: (qmail-queue invoked by uid 0); 29 Jul 1996 09:36:40 -0000\n" +
		"Date: 29 Jul 1996 11:35:35 -0000\n" +
		"Message-ID: <19960729113535.375.qmail@heaven.af.mil>\n" +
		"From: God@heaven.af.mil\n" +
		"To: djb@silverton.berkeley.edu (D. J. Bernstein)\n" +
		"\n" +
		"This is a test.\n"
	specMsg2 = "\r" +
		"From: MAILER-DAEMON@heaven.af.mil\r\n" +
		"To:\r\n" +
		"   Hate.\"The Quoting\"@SILVERTON.berkeley.edu,\r\n" +
		"   \"\\\\Backslashes!\"@silverton.BERKELEY.edu\r\n" +
		"\r\n" +
		"The recipient addresses here could have been encoded in SMTP as\r\n" +
		"\r\n" +
		"   RCPT TO:<Hate.The\\ Quoting@silverton.berkeley.EDU>\r\n" +
		"   RCPT TO:<\\\\Backslashes!@silverton.berkeley.edu>\r\n" +
		"\r\n" +
		"This ends with a partial last line, right here"
	specSession = "246:" + specMsg1 + "," +
		"24:God-DSN-37@heaven.af.mil," +
		"30:26:djb@silverton.berkeley.edu,," +
		"356:" + specMsg2 + "," +
		"0:," +
		"83:39:Hate.The Quoting@silverton.berkeley.edu,36:\\Backslashes!@silverton.berkeley.EDU,,"
)

func TestSpecExample(t *testing.T) {
	if len(specMsg1) != 246 || len(specMsg2) != 356 {
		t.Fatalf("spec messages are %d and %d bytes, want 246 and 356", len(specMsg1), len(specMsg2))
	}
	for _, mode := range readModes {
		t.Run(mode.name, func(t *testing.T) {
			srv := newTestServer(nil)
			qp := 1390
			var got []seen
			srv.Handler = HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
				b, err := io.ReadAll(req.Body)
				env, eerr := req.Envelope()
				got = append(got, seen{body: string(b), bodyErr: err, env: env, envErr: eerr})
				st := make([]mail.Status, len(env.Recipients))
				for i := range st {
					st[i] = mail.OK(fmt.Sprintf("ok 838640135 qp %d", qp))
				}
				qp++
				return st
			})
			var out bytes.Buffer
			err := srv.ServeConn(context.Background(), rwPair{mode.wrap(strings.NewReader(specSession)), &out}, nil)
			if err != nil {
				t.Fatalf("ServeConn: %v", err)
			}
			const want = "21:Kok 838640135 qp 1390," + "21:Kok 838640135 qp 1391," + "21:Kok 838640135 qp 1391,"
			if out.String() != want {
				t.Fatalf("replies\n got %q\nwant %q", out.String(), want)
			}
			if len(got) != 2 {
				t.Fatalf("handler saw %d packages", len(got))
			}
			if got[0].body != rcvd+specMsg1[1:] || got[0].bodyErr != nil {
				t.Errorf("body 1 = %q, %v", got[0].body, got[0].bodyErr)
			}
			wantBody2 := rcvd + strings.ReplaceAll(specMsg2[1:], "\r\n", "\n")
			if got[1].body != wantBody2 || got[1].bodyErr != nil {
				t.Errorf("body 2 = %q, %v", got[1].body, got[1].bodyErr)
			}
			if e := got[0].env; e.Sender != "God-DSN-37@heaven.af.mil" || len(e.Recipients) != 1 || e.Recipients[0] != "djb@silverton.berkeley.edu" {
				t.Errorf("envelope 1 = %q", e)
			}
			// Raw bytes: no SMTP unquoting, no case folding.
			if e := got[1].env; e.Sender != "" || len(e.Recipients) != 2 ||
				e.Recipients[0] != "Hate.The Quoting@silverton.berkeley.edu" ||
				e.Recipients[1] != `\Backslashes!@silverton.berkeley.EDU` {
				t.Errorf("envelope 2 = %q", e)
			}
		})
	}
}

// readModes deliver the client's bytes whole, one at a time (every CR then
// lands on a buffer boundary) and in halves.
var readModes = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"whole", func(r io.Reader) io.Reader { return r }},
	{"onebyte", iotest.OneByteReader},
	{"half", iotest.HalfReader},
}

func TestTranscripts(t *testing.T) {
	long999, long1000 := addr(999), addr(1000)
	hdrs := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i%2 == 0 {
				fmt.Fprintf(&b, "Received: from hop%d\n", i)
			} else {
				fmt.Fprintf(&b, "Delivered-To: box%d@example.com\n", i)
			}
		}
		return b.String() + "Subject: loop\n\nbody\n"
	}
	type pkgWant struct {
		body    string // stored message, without our Received line
		partial bool   // the Body ends early with envErr (a limit)
		rcpts   []string
		sender  string
		envErr  error // a mail.Status, or ErrProtocolish for "any non-Status"
	}
	anyIOErr := errors.New("any non-Status error")
	for _, tc := range []struct {
		name    string
		in      string
		tweak   func(*Server)
		out     string // exact replies
		pkgs    []pkgWant
		protoOK bool // ServeConn returns nil (clean EOF)
		errIs   error
	}{
		{
			name: "lf", in: pk("\nSubject: x\n\nhello\n", "s@x", "r@x"),
			out: ns("Kok 0"), protoOK: true,
			pkgs: []pkgWant{{body: "Subject: x\n\nhello\n", sender: "s@x", rcpts: []string{"r@x"}}},
		},
		{
			name: "lf keeps CRLF", in: pk("\na\r\nb\r", "s@x", "r@x"),
			out: ns("Kok 0"), protoOK: true,
			pkgs: []pkgWant{{body: "a\r\nb\r", sender: "s@x", rcpts: []string{"r@x"}}},
		},
		{
			name: "cr", in: pk("\rSubject: x\r\n\r\nhello\r\n", "s@x", "r@x"),
			out: ns("Kok 0"), protoOK: true,
			pkgs: []pkgWant{{body: "Subject: x\n\nhello\n", sender: "s@x", rcpts: []string{"r@x"}}},
		},
		{
			name: "cr lone CR kept", in: pk("\ra\rb\r\n", "", "r@x"),
			out: ns("Kok 0"), protoOK: true,
			pkgs: []pkgWant{{body: "a\rb\n", rcpts: []string{"r@x"}}},
		},
		{
			name: "cr CR CR LF", in: pk("\ra\r\r\nb\r\r\r\n", "", "r@x"),
			out: ns("Kok 0"), protoOK: true,
			pkgs: []pkgWant{{body: "a\r\nb\r\r\n", rcpts: []string{"r@x"}}},
		},
		{
			name: "cr trailing CR kept", in: pk("\rabc\r", "", "r@x"),
			out: ns("Kok 0"), protoOK: true,
			pkgs: []pkgWant{{body: "abc\r", rcpts: []string{"r@x"}}},
		},
		{
			name: "cr bare LF passes", in: pk("\ra\nb\r\nc\n", "", "r@x"),
			out: ns("Kok 0"), protoOK: true,
			pkgs: []pkgWant{{body: "a\nb\nc\n", rcpts: []string{"r@x"}}},
		},
		{
			name: "empty message", in: pk("\n", "", "r@x") + pk("\r", "", "r@x"),
			out: ns("Kok 0") + ns("Kok 0"), protoOK: true,
			pkgs: []pkgWant{{body: "", rcpts: []string{"r@x"}}, {body: "", rcpts: []string{"r@x"}}},
		},
		{
			name: "pipelined in one write",
			in:   pk("\none\n", "a@x", "r1@x") + pk("\rtwo\r\n", "b@x", "r2@x", "z2@x") + pk("\nthree", "c@x", "d3@x"),
			out:  ns("Kok 0") + ns("Kok 0") + ns("Ztry later (#4.2.0)") + ns("Dno such user (#5.1.1)"),
			pkgs: []pkgWant{
				{body: "one\n", sender: "a@x", rcpts: []string{"r1@x"}},
				{body: "two\n", sender: "b@x", rcpts: []string{"r2@x", "z2@x"}},
				{body: "three", sender: "c@x", rcpts: []string{"d3@x"}},
			},
			protoOK: true,
		},
		{
			name: "duplicate recipients", in: pk("\nx", "s@x", "r@x", "r@x", "z@x", "r@x"),
			out: ns("Kok 0") + ns("Kok 1") + ns("Ztry later (#4.2.0)") + ns("Kok 3"), protoOK: true,
			pkgs: []pkgWant{{body: "x", sender: "s@x", rcpts: []string{"r@x", "r@x", "z@x", "r@x"}}},
		},
		{
			name: "address 999 vs 1000 bytes", in: pk("\nx", "s@x", long999, long1000, "r@x"),
			out: ns("Kok 0") + ns(replyBadRcpt) + ns("Kok 1"), protoOK: true,
			pkgs: []pkgWant{{body: "x", sender: "s@x", rcpts: []string{long999, "r@x"}}},
		},
		{
			name: "NUL in recipient", in: pk("\nx", "s@x", "a\x00b@x", "r@x"),
			out: ns(replyBadRcpt) + ns("Kok 0"), protoOK: true,
			pkgs: []pkgWant{{body: "x", sender: "s@x", rcpts: []string{"r@x"}}},
		},
		{
			name: "no well-formed recipient", in: pk("\nx", "s@x", "a\x00", long1000),
			out: ns(replyBadRcpt) + ns(replyBadRcpt), protoOK: true,
			pkgs: []pkgWant{{body: "x", sender: "s@x"}},
		},
		{
			name: "NUL in sender", in: pk("\nx", "s\x00@x", "r@x", long1000, "d@x"),
			out: ns(replyBadSender) + ns(replyBadSender) + ns(replyBadSender), protoOK: true,
			pkgs: []pkgWant{{body: "x", rcpts: []string{"r@x", "d@x"}, envErr: mail.StatusBadSender}},
		},
		{
			name: "sender 999 vs 1000 bytes", in: pk("\nx", long999, "r@x") + pk("\nx", long1000, "r@x"),
			out: ns("Kok 0") + ns(replyBadSender), protoOK: true,
			pkgs: []pkgWant{
				{body: "x", sender: long999, rcpts: []string{"r@x"}},
				{body: "x", rcpts: []string{"r@x"}, envErr: mail.StatusBadSender},
			},
		},
		{
			name:  "size limit lf at and over",
			tweak: func(s *Server) { s.MaxMessageBytes = 10 },
			in:    pk("\n0123456789", "", "r@x") + pk("\n0123456789A", "", "r@x", "q@x"),
			out:   ns("Kok 0") + ns(replyTooBig) + ns(replyTooBig), protoOK: true,
			pkgs: []pkgWant{
				{body: "0123456789", rcpts: []string{"r@x"}},
				{body: "0123456789A", partial: true, rcpts: []string{"r@x", "q@x"}, envErr: mail.StatusTooBig},
			},
		},
		{
			// Counted after conversion: 13 bytes on the wire, 10 stored.
			name:  "size limit cr at and over",
			tweak: func(s *Server) { s.MaxMessageBytes = 10 },
			in:    pk("\r0\r\n12\r\n345\r\n6", "", "r@x") + pk("\r0\r\n12\r\n345\r\n67", "", "r@x"),
			out:   ns("Kok 0") + ns(replyTooBig), protoOK: true,
			pkgs: []pkgWant{
				{body: "0\n12\n345\n6", rcpts: []string{"r@x"}},
				{body: "0\n12\n345\n67", partial: true, rcpts: []string{"r@x"}, envErr: mail.StatusTooBig},
			},
		},
		{
			name: "hop limit 99 passes, 100 loops",
			in:   pk("\n"+hdrs(99), "", "r@x") + pk("\r"+strings.ReplaceAll(hdrs(100), "\n", "\r\n"), "", "r@x", "z@x"),
			out:  ns("Kok 0") + ns(replyHops) + ns(replyHops), protoOK: true,
			pkgs: []pkgWant{
				{body: hdrs(99), rcpts: []string{"r@x"}},
				{body: hdrs(100), partial: true, rcpts: []string{"r@x", "z@x"}, envErr: mail.StatusTooManyHops},
			},
		},
		{
			name:  "too many recipients",
			tweak: func(s *Server) { s.MaxRecipients = 2 },
			in:    pk("\nx", "", "r@x", "a\x00", "z@x", "q@x", "d@x"),
			out:   ns("Kok 0") + ns(replyBadRcpt) + ns("Ztry later (#4.2.0)") + ns(replyExcess) + ns(replyExcess), protoOK: true,
			pkgs: []pkgWant{{body: "x", rcpts: []string{"r@x", "z@x"}}},
		},
		{
			name: "zero-length message closes", in: "0:," + ns("s@x") + ns(ns("r@x")),
			errIs: ErrProtocol,
		},
		{
			name: "zero-length after a good package", in: pk("\nx", "", "r@x") + "0:,",
			out: ns("Kok 0"), errIs: ErrProtocol,
			pkgs: []pkgWant{{body: "x", rcpts: []string{"r@x"}}},
		},
		{
			name: "bad mode byte closes", in: pk("xabc", "", "r@x"),
			errIs: ErrProtocol,
		},
		{
			name: "empty recipient list closes", in: pk("\nx", "s@x") + pk("\nx", "", "r@x"),
			errIs: ErrProtocol,
			pkgs:  []pkgWant{{body: "x", envErr: anyIOErr}},
		},
		{
			name: "non-digit length closes", in: "1a:\n," + ns("") + ns(ns("r@x")),
			errIs: ErrProtocol,
		},
		{
			name: "length overflow closes", in: "99999999999999999999999999:\n",
			errIs: ErrProtocol,
		},
		{
			name: "message over the hard cap closes", in: "2147483650:\n",
			errIs: ErrProtocol,
		},
		{
			name: "missing comma after message", in: "2:\nxX" + ns("") + ns(ns("r@x")),
			errIs: ErrProtocol,
			pkgs:  []pkgWant{{body: "x", envErr: anyIOErr}},
		},
		{
			name: "missing outer comma", in: ns("\nx") + ns("") + "5:3:r@x,X",
			errIs: ErrProtocol,
			pkgs:  []pkgWant{{body: "x", envErr: anyIOErr}},
		},
		{
			name: "inner netstring without comma", in: ns("\nx") + ns("") + "6:3:r@xX,",
			errIs: ErrProtocol,
			pkgs:  []pkgWant{{body: "x", envErr: anyIOErr}},
		},
		{
			name: "inner length past the list", in: ns("\nx") + ns("") + "6:9:r@x,,",
			errIs: ErrProtocol,
			pkgs:  []pkgWant{{body: "x", envErr: anyIOErr}},
		},
		{
			name: "inner non-digit", in: ns("\nx") + ns("") + "6:x:r@x,,",
			errIs: ErrProtocol,
			pkgs:  []pkgWant{{body: "x", envErr: anyIOErr}},
		},
		{
			name:  "recipient list over its bound",
			tweak: func(s *Server) { s.MaxRecipients = 1 },
			in:    ns("\nx") + ns("") + "1006:",
			errIs: ErrProtocol,
			pkgs:  []pkgWant{{body: "x", envErr: anyIOErr}},
		},
		{
			name: "client closes mid-body", in: "10:\nabc",
			errIs: io.ErrUnexpectedEOF,
			pkgs:  []pkgWant{{body: "abc", envErr: anyIOErr}},
		},
		{
			name: "client closes before the outer comma", in: pk("\nabc", "s@x", "r@x")[:len(pk("\nabc", "s@x", "r@x"))-1],
			errIs: io.ErrUnexpectedEOF,
			pkgs:  []pkgWant{{body: "abc", envErr: anyIOErr}},
		},
		{
			name: "leading zeros and empty length accepted", in: "03:\nab," + ":," + "006:3:r@x,,",
			out: ns("Kok 0"), protoOK: true,
			pkgs: []pkgWant{{body: "ab", rcpts: []string{"r@x"}}},
		},
	} {
		for _, mode := range readModes {
			t.Run(tc.name+"/"+mode.name, func(t *testing.T) {
				srv := newTestServer(tc.tweak)
				res := runSession(t, srv, mode.wrap(strings.NewReader(tc.in)))
				if res.out != tc.out {
					t.Errorf("replies\n got %q\nwant %q", res.out, tc.out)
				}
				switch {
				case tc.protoOK && res.err != nil:
					t.Errorf("ServeConn = %v, want nil", res.err)
				case tc.errIs != nil && !errors.Is(res.err, tc.errIs):
					t.Errorf("ServeConn = %v, want %v", res.err, tc.errIs)
				}
				if len(res.pkgs) != len(tc.pkgs) {
					t.Fatalf("handler saw %d packages, want %d", len(res.pkgs), len(tc.pkgs))
				}
				for i, w := range tc.pkgs {
					g := res.pkgs[i]
					full := rcvd + w.body
					if w.partial || w.envErr == anyIOErr {
						// Cut short by a limit or a broken package: what
						// the handler got is a prefix of the real thing.
						if !strings.HasPrefix(full, g.body) {
							t.Errorf("pkg %d: body %q is not a prefix of %q", i, g.body, full)
						}
					} else if g.body != full || g.bodyErr != nil {
						t.Errorf("pkg %d: body %q, %v; want %q", i, g.body, g.bodyErr, full)
					}
					if w.envErr == anyIOErr {
						if g.envErr == nil {
							t.Errorf("pkg %d: Envelope gave no error", i)
						}
						if _, isStatus := g.envErr.(mail.Status); isStatus {
							t.Errorf("pkg %d: Envelope error %v is a Status; a broken package must not look answerable", i, g.envErr)
						}
						continue
					}
					if g.envErr != w.envErr {
						t.Errorf("pkg %d: Envelope error %v, want %v", i, g.envErr, w.envErr)
					}
					if w.partial && g.bodyErr != w.envErr {
						t.Errorf("pkg %d: Body error %v, want %v", i, g.bodyErr, w.envErr)
					}
					if g.env.Sender != w.sender || strings.Join(g.env.Recipients, "|") != strings.Join(w.rcpts, "|") {
						t.Errorf("pkg %d: envelope %q, want sender %q rcpts %q", i, g.env, w.sender, w.rcpts)
					}
				}
			})
		}
	}
}
