package relay

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/internal/dkim"
	"github.com/qmgate/qmgate/internal/qmail"
	"github.com/qmgate/qmgate/internal/rewrite"
	"github.com/qmgate/qmgate/mail"
)

// Identity is what the hub does to its own clients' mail at acceptance:
// masquerading (Rewriter) and DKIM signing (Signer), each nil when not
// configured. It is immutable; a reload builds a new one.
//
// It applies only to mail from trusted submitters (Trusted): relay
// clients, authenticated SMTP users and QMQP clients (the unix socket's
// local users among them). Mail that arrives for rcpthosts from anyone else
// is neither rewritten nor signed. Each message is handled once, as it is
// accepted: the rewritten header and body stream to the queue and through
// the signer side by side, and the signatures, with the server's Received
// line, become the message's queue prefix (queue.Writer.SetPrefix), which
// every delivery sends in front of the body.
type Identity struct {
	Signer   *dkim.Signer
	Rewriter *rewrite.Rewriter
}

// BuildIdentity loads the [[dkim]] keys and compiles the [rewrite] rules.
// A key file that its group or other users may read refuses the whole
// configuration. It returns nil when neither is configured.
func BuildIdentity(cfg *config.Config) (id *Identity, err error) {
	id = &Identity{}
	if len(cfg.DKIM) > 0 {
		var doms []dkim.Domain
		at := map[string]int{}
		for i, d := range cfg.DKIM {
			k, err := dkim.LoadKey(d.Selector, d.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("dkim[%d] (%s, selector %s): %w", i, d.Domain, d.Selector, err)
			}
			if d.Algorithm != "" && k.Algo() != d.Algorithm {
				return nil, fmt.Errorf("dkim[%d] (%s, selector %s): the key in %s is %s, not %s", i, d.Domain, d.Selector, d.KeyFile, k.Algo(), d.Algorithm)
			}
			name := strings.ToLower(strings.TrimSuffix(d.Domain, "."))
			j, ok := at[name]
			if !ok {
				j = len(doms)
				at[name] = j
				doms = append(doms, dkim.Domain{Name: name, Subdomains: d.Subdomains})
			}
			doms[j].Keys = append(doms[j].Keys, k)
		}
		if id.Signer, err = dkim.New(dkim.Options{Domains: doms}); err != nil {
			return nil, err
		}
	}
	if cfg.Rewrite.Enabled() {
		if id.Rewriter, err = rewrite.Compile(cfg.Rewrite.Rules()); err != nil {
			return nil, err
		}
	}
	if id.Signer == nil && id.Rewriter == nil {
		return nil, nil
	}
	return id, nil
}

// Trusted reports whether mail from c is the hub's own clients' mail, which
// Identity rewrites and signs: the submitters who may relay anywhere
// (Policy.Accept's rule).
func Trusted(c *mail.ConnInfo) bool {
	return c != nil && (c.RelayClient || c.AuthUser != "" || c.Proto == "QMQP")
}

// routed returns the sender and recipient that delivery will see for mail
// from c: rewritten as stamp.finish rewrites the envelope at commit when
// id masquerades c's mail, else as they are. The route check at acceptance
// looks these up, so that it accepts mail for the route it will take.
func (id *Identity) routed(c *mail.ConnInfo, from, rcpt string) (string, string) {
	if id == nil || id.Rewriter == nil || !Trusted(c) {
		return from, rcpt
	}
	from, _ = id.Rewriter.Sender(from)
	rcpt, _ = id.Rewriter.Recipient(rcpt)
	return from, rcpt
}

// maxReceivedBytes bounds the server's Received line that a stamp holds
// (mail.MaxReceivedField bounds each of its parts).
const maxReceivedBytes = 4 << 10

// prefixer is a sink message that can carry a queue prefix.
type prefixer interface {
	SetPrefix([]byte) error
}

// stamp is Identity's work on one message.
type stamp struct {
	id       *Identity
	received []byte          // the server's Received line, held for its comment
	rr       *rewrite.Reader // header rewriting
	dw       *dkim.Writer
	dwErr    error
}

// start wraps body for id's work and returns the reader to copy into the
// sink message, and the writer the copy goes through besides it.
func (id *Identity) start(body io.Reader) (*stamp, io.Reader, error) {
	s := &stamp{id: id}
	if id.Rewriter != nil {
		// The server's Received line is held out of the stream: the
		// envelope's rewriting, known only when the envelope arrives
		// (after the body in QMTP and QMQP), goes into its comment, and
		// the line goes in front of the message with the signatures.
		br := bufio.NewReaderSize(body, maxReceivedBytes)
		if b, _ := br.Peek(len("Received:")); string(b) == "Received:" {
			for {
				line, err := br.ReadSlice('\n')
				s.received = append(s.received, line...)
				if err != nil {
					return s, br, err
				}
				if c, _ := br.Peek(1); len(c) == 0 || c[0] != ' ' && c[0] != '\t' {
					break
				}
			}
		}
		s.rr = id.Rewriter.NewReader(br)
		body = s.rr
	}
	if id.Signer != nil {
		s.dw = id.Signer.NewWriter()
	}
	return s, body, nil
}

// Write feeds the signer; its trouble never stops the message (it is
// then sent unsigned, and logged).
func (s *stamp) Write(p []byte) (int, error) {
	if s.dw != nil && s.dwErr == nil {
		_, s.dwErr = s.dw.Write(p)
	}
	return len(p), nil
}

// abort releases the signer.
func (s *stamp) abort() {
	if s != nil && s.dw != nil {
		s.dw.Close()
	}
}

// finish rewrites env, ends the signatures and stores the prefix in msg.
func (s *stamp) finish(ctx context.Context, log *slog.Logger, msg qmail.Message, env *mail.Envelope) error {
	var changes rewrite.Changes
	if s.id.Rewriter != nil {
		changes = s.id.Rewriter.Envelope(env)
		changes = append(changes, s.rr.Changes()...)
	}
	var prefix []byte
	if s.dw != nil {
		err := s.dw.Close()
		if err == nil {
			err = s.dwErr
		}
		res := s.dw.Result()
		switch {
		case err != nil:
			log.LogAttrs(ctx, slog.LevelError, "dkim: signing failed; the message goes unsigned", slog.String("err", err.Error()))
		case len(res.Header) > 0:
			prefix = append(prefix, res.Header...)
			log.LogAttrs(ctx, slog.LevelDebug, "dkim: signed", slog.String("domain", res.Domain), slog.Any("selectors", res.Selectors))
		case res.Skipped != "":
			log.LogAttrs(ctx, slog.LevelDebug, "dkim: not signed", slog.String("reason", res.Skipped))
		}
	}
	if len(s.received) > 0 {
		prefix = append(prefix, withComment(s.received, changes.Comment())...)
	}
	if len(prefix) == 0 {
		return nil
	}
	return msg.(prefixer).SetPrefix(prefix)
}

// withComment puts comment into a Received field before its "; date",
// on a folded line of its own: "  by HOST with QMQP\n  (rewritten: ...); date".
func withComment(rcvd []byte, comment string) []byte {
	i := bytes.LastIndexByte(rcvd, ';')
	if comment == "" || i < 0 {
		return rcvd
	}
	nl := "\n"
	if bytes.HasSuffix(rcvd, []byte("\r\n")) {
		nl = "\r\n"
	}
	out := make([]byte, 0, len(rcvd)+len(comment)+8)
	out = append(out, rcvd[:i]...)
	out = append(out, nl+"  ("+comment+")"...)
	return append(out, rcvd[i:]...)
}
