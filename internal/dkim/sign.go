package dkim

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"strings"
)

// DefaultHeaders is the header set signed when Options.Headers is nil: the
// fields RFC 6376 section 5.4.1 says should be signed, plus Sender,
// Message-ID and the MIME fields, whose change in transit would change what
// the reader sees. Return-Path, Received and other trace fields are left out
// (section 5.4): relays add them.
var DefaultHeaders = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc",
	"Resent-Date", "Resent-From", "Resent-To", "Resent-Cc",
	"In-Reply-To", "References",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Subscribe", "List-Post", "List-Owner", "List-Archive",
	"Sender", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
}

// DefaultOversign names the fields signed once more than they occur, so that
// a relay cannot add a second one without breaking the signature (RFC 6376
// section 8.15).
var DefaultOversign = []string{"From"}

// DefaultMaxHeaderBytes bounds the header a Writer holds while it waits for
// the blank line that ends it; a longer header is passed through unsigned.
const DefaultMaxHeaderBytes = 256 << 10

// maxOwnSignatures bounds how many signatures of ours in one message are
// checked for the already-signed test.
const maxOwnSignatures = 4

// Domain is one signing domain (the d= tag) and its keys. Every key signs
// each message, so an RSA and an Ed25519 key give the dual signature of RFC
// 8463 section 5, and two keys of one algorithm carry a key rotation.
type Domain struct {
	Name string
	Keys []Key
	// Subdomains also signs mail whose From: is in a subdomain of Name
	// (app17.example.net signed as d=example.net), which DMARC's relaxed
	// alignment accepts.
	Subdomains bool
}

// Options configure a Signer. Domains is required; the zero values of the
// other fields are the defaults.
type Options struct {
	Domains        []Domain
	Headers        []string // fields to sign; nil means DefaultHeaders; From is always signed
	Oversign       []string // fields to oversign; nil means DefaultOversign
	MaxHeaderBytes int      // 0 means DefaultMaxHeaderBytes
}

// Signer signs messages for its domains. It is immutable and safe for
// concurrent use; a reload builds a new one.
type Signer struct {
	domains   map[string]*domain
	headers   []string
	lower     []string       // headers in lower case
	over      []bool         // whether headers[i] is oversigned
	index     map[string]int // lower[i] -> i
	ascii     bool           // every name in headers is ASCII
	oversign  map[string]bool
	maxHeader int
}

type domain struct {
	Domain
	txt   map[string]string // selector -> TXT record, for checking our own signatures
	algos []string          // the algorithm of Keys[i]
}

// New checks opt and builds a Signer.
func New(opt Options) (*Signer, error) {
	s := &Signer{domains: map[string]*domain{}, oversign: map[string]bool{}, maxHeader: opt.MaxHeaderBytes}
	if s.maxHeader <= 0 {
		s.maxHeader = DefaultMaxHeaderBytes
	}
	if len(opt.Domains) == 0 {
		return nil, errors.New("dkim: no signing domains")
	}
	for _, d := range opt.Domains {
		name := normDomain(d.Name)
		if !isDNSName(name) || !strings.Contains(name, ".") {
			return nil, fmt.Errorf("dkim: signing domain %q is not a domain name", d.Name)
		}
		if s.domains[name] != nil {
			return nil, fmt.Errorf("dkim: signing domain %s configured twice", name)
		}
		if len(d.Keys) == 0 {
			return nil, fmt.Errorf("dkim: signing domain %s has no keys", name)
		}
		dd := &domain{Domain: d, txt: map[string]string{}}
		dd.Name = name
		for _, k := range d.Keys {
			if err := checkSelector(k.Selector); err != nil {
				return nil, fmt.Errorf("dkim: domain %s: %w", name, err)
			}
			if _, dup := dd.txt[k.Selector]; dup {
				return nil, fmt.Errorf("dkim: domain %s: selector %s used twice", name, k.Selector)
			}
			if k.Signer == nil {
				return nil, fmt.Errorf("dkim: domain %s selector %s: no key", name, k.Selector)
			}
			if pub, ok := k.Signer.Public().(*rsa.PublicKey); ok {
				if n := pub.N.BitLen(); n < MinRSABits || n > MaxRSABits {
					return nil, fmt.Errorf("dkim: domain %s selector %s: RSA key of %d bits; DKIM keys must have %d to %d bits", name, k.Selector, n, MinRSABits, MaxRSABits)
				}
			}
			txt, err := TXTRecord(k.Signer.Public())
			if err != nil {
				return nil, fmt.Errorf("dkim: domain %s selector %s: %w", name, k.Selector, err)
			}
			dd.txt[k.Selector] = txt
			dd.algos = append(dd.algos, keyAlgo(k.Signer.Public()))
		}
		s.domains[name] = dd
	}
	s.headers = opt.Headers
	if s.headers == nil {
		s.headers = DefaultHeaders
	}
	hasFrom := false
	for _, h := range s.headers {
		if strings.ContainsAny(h, ": \t\r\n") || h == "" {
			return nil, fmt.Errorf("dkim: %q is not a header field name", h)
		}
		hasFrom = hasFrom || strings.EqualFold(h, "From")
	}
	if !hasFrom {
		s.headers = append([]string{"From"}, s.headers...)
	}
	over := opt.Oversign
	if over == nil {
		over = DefaultOversign
	}
	for _, h := range over {
		s.oversign[strings.ToLower(h)] = true
	}
	seen := map[string]bool{}
	var headers []string
	for _, h := range s.headers {
		l := strings.ToLower(h)
		if seen[l] {
			continue // a name listed twice is signed as often as it occurs, once
		}
		seen[l] = true
		headers = append(headers, h)
		s.lower = append(s.lower, l)
		s.over = append(s.over, s.oversign[l])
	}
	s.headers = headers
	s.index = make(map[string]int, len(s.lower))
	s.ascii = true
	for i, l := range s.lower {
		s.index[l] = i
		s.ascii = s.ascii && isASCII(l)
	}
	return s, nil
}

// Result says what a Writer did with one message.
type Result struct {
	Domain    string   // the d= of the signatures; "" when no domain applies
	Selectors []string // selectors that signed now
	Kept      []string // selectors whose valid signature the message already carried
	// Header holds the DKIM-Signature fields to prepend to the message, with
	// the message's own line ends; nil when nothing was signed.
	Header []byte
	// Skipped says in plain words why nothing was signed, when Header is nil.
	Skipped string
}

// Signed reports whether the message now carries a signature of ours,
// either a new one or one it already had.
func (r Result) Signed() bool { return len(r.Selectors) > 0 || len(r.Kept) > 0 }

// Sign reads a whole message from r and returns the signature fields to
// prepend; the body is not held in memory.
func (s *Signer) Sign(r io.Reader) (Result, error) {
	w := s.NewWriter()
	if _, err := io.Copy(w, r); err != nil {
		w.Close()
		return Result{}, err
	}
	if err := w.Close(); err != nil {
		return Result{}, err
	}
	return w.Result(), nil
}

// SignTo signs the message in src and writes it, with its signature fields
// first, to dst: it reads src twice (a spool file), so only the header is
// ever held in memory.
func (s *Signer) SignTo(dst io.Writer, src io.ReadSeeker) (Result, error) {
	res, err := s.Sign(src)
	if err != nil {
		return res, err
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return res, err
	}
	if _, err := dst.Write(res.Header); err != nil {
		return res, err
	}
	_, err = io.Copy(dst, src)
	return res, err
}

// lookup finds the signing domain for a From: domain: the domain itself, or
// the nearest parent configured with Subdomains.
func (s *Signer) lookup(from string) *domain {
	if d := s.domains[from]; d != nil {
		return d
	}
	for i := strings.IndexByte(from, '.'); i >= 0; i = strings.IndexByte(from, '.') {
		from = from[i+1:]
		if d := s.domains[from]; d != nil && d.Subdomains {
			return d
		}
	}
	return nil
}

// headerKeys is the h= list for a header: each configured field as often as
// it occurs, oversigned fields once more.
func (s *Signer) headerKeys(fields []field) []string {
	var countBuf [64]int
	counts := countBuf[:0]
	for range s.headers {
		counts = append(counts, 0)
	}
	for _, f := range fields {
		if s.ascii && isASCII(f.name) {
			// Both names are in lower case: Unicode case folding (is)
			// makes no other pair of ASCII names equal.
			if i, ok := s.index[f.name]; ok {
				counts[i]++
			}
			continue
		}
		for i, l := range s.lower {
			if f.is(l) {
				counts[i]++
			}
		}
	}
	keys := make([]string, 0, len(fields)+len(s.headers))
	for i, h := range s.headers {
		n := counts[i]
		if s.over[i] {
			n++
		}
		for range n {
			keys = append(keys, h)
		}
	}
	return keys
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func normDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}
