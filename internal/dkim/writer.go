package dkim

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/qmgate/qmgate/mail"
)

// Writer signs one message written through it. It holds the header (up to
// Options.MaxHeaderBytes) until the blank line that ends it, then chooses the
// domain and keys and streams the body through one relaxed body hash, which
// every key's signature shares, without keeping it.
// Close finishes the signatures; Result then returns them.
//
// The caller writes the message to its own store at the same time (an
// io.MultiWriter, or a second read of a spool file) and prepends
// Result().Header when it sends the message on. A Writer is for one goroutine;
// Close must always be called, also after an error, to release the
// verifier of an earlier signature.
type Writer struct {
	s      *Signer
	hdr    []byte
	inBody bool
	closed bool
	err    error
	res    Result
	crlf   bool
	dom    *domain
	keys   []Key
	fields []field   // the header, for the signatures
	hkeys  []string  // the h= list
	body   *bodyHash // from bodyHashes, between start and Close
	now    func() time.Time

	// The check for a signature of ours already present.
	own      []string // selectors of our signatures, in header order
	verifyW  *io.PipeWriter
	verified chan []*msgdkim.Verification
}

// NewWriter starts signing one message.
func (s *Signer) NewWriter() *Writer { return &Writer{s: s, now: time.Now} }

// Write takes the next bytes of the message. It never keeps body bytes.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("dkim: write after close")
	}
	if w.inBody {
		return len(p), w.feed(p)
	}
	if len(w.hdr) == 0 {
		// The first write usually holds the whole header: keep only that
		// rather than copy the body into the header buffer.
		if e := mail.HeaderEnd(p, 0); e >= 0 {
			w.header(p[:e])
			if w.err == nil && w.inBody && e < len(p) {
				w.err = w.feed(p[e:])
			}
			return len(p), w.err
		}
	}
	w.header(p)
	return len(p), w.err
}

// header takes bytes of the header, and whatever follows it in the same
// write, until the blank line that ends it; then it starts the signatures.
func (w *Writer) header(p []byte) {
	old := len(w.hdr)
	w.hdr = append(w.hdr, p...)
	end := mail.HeaderEnd(w.hdr, max(0, old-2))
	if end < 0 {
		if len(w.hdr) > w.s.maxHeader {
			w.skip("the header is larger than " + strconv.Itoa(w.s.maxHeader) + " bytes")
			w.inBody, w.hdr = true, nil
		}
		return
	}
	if end > w.s.maxHeader {
		w.skip("the header is larger than " + strconv.Itoa(w.s.maxHeader) + " bytes")
		w.inBody, w.hdr = true, nil
		return
	}
	rest := w.hdr[end:]
	w.start(w.hdr[:end])
	w.inBody = true
	if w.err == nil && len(rest) > 0 {
		w.err = w.feed(rest)
	}
	w.hdr = nil
}

func (w *Writer) skip(reason string) {
	if w.res.Skipped == "" {
		w.res.Skipped = reason
	}
}

// start looks at the complete header (blank line included) and sets up the
// signers, and the verifier when the message already has signatures of ours.
func (w *Writer) start(hdr []byte) {
	if i := bytes.IndexByte(hdr, '\n'); i > 0 && hdr[i-1] == '\r' {
		w.crlf = true
	}
	fields := splitHeader(trimBlankLine(hdr))
	from, why := fromDomain(fields)
	if from == "" {
		w.skip(why)
		return
	}
	d := w.s.lookup(from)
	if d == nil {
		w.skip("no signing key for " + from)
		return
	}
	w.dom, w.keys = d, d.Keys
	w.res.Domain = d.Name
	w.fields = fields
	w.hkeys = w.s.headerKeys(fields)
	w.body = newBodyHash()
	w.startVerify(fields, hdr)
}

// startVerify checks the message's own earlier signatures (same d= and s=
// as one of our keys) against our public keys, without DNS. The verifier
// sees the header without the other DKIM-Signature fields, which our
// signatures never cover, so that it checks ours alone.
func (w *Writer) startVerify(fields []field, hdr []byte) {
	ours := func(f field) (string, bool) {
		if f.name != "dkim-signature" {
			return "", false
		}
		d, s := sigTags(f)
		_, known := w.dom.txt[s]
		return s, known && d == w.dom.Name
	}
	var keep bytes.Buffer
	for i, f := range fields {
		if f.name == "dkim-signature" {
			s, ok := ours(f)
			if !ok || len(w.own) == maxOwnSignatures {
				continue
			}
			if len(w.own) == 0 {
				// The first of ours: the fields before it were skipped.
				for _, g := range fields[:i] {
					if g.name != "dkim-signature" {
						keep.Write(g.raw)
					}
				}
			}
			w.own = append(w.own, s)
		}
		if len(w.own) > 0 {
			keep.Write(f.raw)
		}
	}
	if len(w.own) == 0 {
		return
	}
	if w.crlf {
		keep.WriteString("\r\n")
	} else {
		keep.WriteString("\n")
	}
	pr, pw := io.Pipe()
	w.verifyW = pw
	w.verified = make(chan []*msgdkim.Verification, 1)
	dom := w.dom
	go func() {
		vs, _ := msgdkim.VerifyWithOptions(pr, &msgdkim.VerifyOptions{
			LookupTXT: func(name string) ([]string, error) {
				sel, ok := strings.CutSuffix(strings.ToLower(name), "._domainkey."+dom.Name)
				if txt, found := dom.txt[sel]; ok && found {
					return []string{txt}, nil
				}
				return nil, errors.New("not one of our keys")
			},
		})
		// Verify may stop before the end of the body; drain the pipe so
		// that writes never block.
		io.Copy(io.Discard, pr)
		w.verified <- vs
	}()
	if _, err := pw.Write(keep.Bytes()); err != nil {
		w.err = err
	}
}

func (w *Writer) feed(p []byte) error {
	if w.dom == nil {
		return nil
	}
	w.body.Write(p)
	if w.verifyW != nil {
		_, err := w.verifyW.Write(p)
		return err
	}
	return nil
}

// trimBlankLine drops the blank line that ends a header.
func trimBlankLine(h []byte) []byte {
	if bytes.HasSuffix(h, []byte("\r\n")) {
		return h[:len(h)-2]
	}
	return bytes.TrimSuffix(h, []byte("\n"))
}

// Close finishes the signatures. It must be called once the whole message
// has been written, and also after an error; it is safe to call twice.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if !w.inBody && w.err == nil {
		// The message ended inside its header: sign it as a header with
		// an empty body, as it will be sent.
		nl := []byte("\r\n")
		if i := bytes.IndexByte(w.hdr, '\n'); i == 0 || i > 0 && w.hdr[i-1] != '\r' {
			nl = []byte("\n")
		}
		hdr := w.hdr
		if len(hdr) > 0 && hdr[len(hdr)-1] != '\n' {
			hdr = append(hdr, nl...)
		}
		hdr = append(hdr, nl...)
		w.start(hdr)
		w.hdr = nil
		w.inBody = true
	}
	var vs []*msgdkim.Verification
	if w.verifyW != nil {
		w.verifyW.Close()
		vs = <-w.verified
	}
	if w.body != nil {
		defer func() {
			putBodyHash(w.body)
			w.body = nil
		}()
	}
	if w.err != nil {
		return w.err
	}
	if w.dom == nil {
		return nil
	}
	var kept map[string]bool
	for i, v := range vs {
		if i < len(w.own) && v != nil && v.Err == nil {
			if kept == nil {
				kept = map[string]bool{}
			}
			kept[w.own[i]] = true
		}
	}
	nl := "\n"
	if w.crlf {
		nl = "\r\n"
	}
	var bh []byte
	var out []byte
	for i, k := range w.keys {
		if kept[k.Selector] {
			w.res.Kept = append(w.res.Kept, k.Selector)
			continue
		}
		if bh == nil {
			bh = w.body.SumBase64()
		}
		sig, err := signature(w.dom, k, w.dom.algos[i], w.hkeys, w.fields, bh, w.now(), nl, w.body)
		if err != nil {
			w.err = err
			return err
		}
		w.res.Selectors = append(w.res.Selectors, k.Selector)
		if out == nil {
			out = sig
		} else {
			out = append(out, sig...)
		}
	}
	if out == nil {
		w.skip("the message already carries our valid signatures")
		return nil
	}
	w.res.Header = out
	return nil
}

// Result returns what Close did; it is complete only after Close returned nil.
func (w *Writer) Result() Result { return w.res }
