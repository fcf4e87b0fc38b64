package dkim

import (
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"time"
)

// sigLineLen is where the tag list of a DKIM-Signature field is folded, so
// that its lines stay under RFC 5322's 78 characters.
const sigLineLen = 72

// signature makes one DKIM-Signature field (RFC 6376 section 3.5) for key k
// (of algorithm algo) over the picked header fields and the body hash bh (base64), with the line
// end nl. The field's relaxed form with an empty b= is hashed last, after
// the signed fields (section 3.7), and the key signs that hash once: RSA as
// PKCS #1 v1.5 over SHA-256, Ed25519 over the SHA-256 hash (RFC 8463
// section 3).
//
// The body hash c, finished, lends its hash state and buffers as scratch
// space, so that a signature allocates little besides its field.
func signature(d *domain, k Key, algo string, hkeys []string, fields []field, bh []byte, now time.Time, nl string, c *bodyHash) ([]byte, error) {
	f := make([]byte, 0, 512)
	f = append(f, "DKIM-Signature: v=1; a="...)
	f = append(f, algo...)
	f = append(f, "-sha256; c=relaxed/relaxed; d="...)
	f = append(f, d.Name...)
	f = append(f, "; s="...)
	f = append(f, k.Selector...)
	f = append(f, ';')
	f = append(f, nl...)
	f = append(f, "\tt="...)
	f = strconv.AppendInt(f, now.Unix(), 10)
	f = append(f, "; h="...)
	line := len("\tt=1234567890; h=")
	for i, h := range hkeys {
		if i > 0 {
			f = append(f, ':')
			line++
			if line+len(h) > sigLineLen {
				f = append(f, nl...)
				f = append(f, '\t')
				line = 1
			}
		}
		f = append(f, h...)
		line += len(h)
	}
	f = append(f, ';')
	f = append(f, nl...)
	f = append(f, "\tbh="...)
	f = append(f, bh...)
	f = append(f, ';')
	f = append(f, nl...)
	f = append(f, "\tb="...)

	hash := c.h
	hash.Reset()
	buf := c.buf[:0]
	var pickBuf [32]int
	picked := pickFields(pickBuf[:0], hkeys, fields)
	for _, p := range picked {
		if p < 0 {
			continue // an oversigned name with no field left: nothing to hash
		}
		buf = canonHeader(buf[:0], fields[p].raw)
		hash.Write(buf)
	}
	buf = canonHeader(buf[:0], f)
	hash.Write(buf[:len(buf)-2]) // without its CR LF (section 3.7)
	sum := hash.Sum(c.sum[:0])

	opts := crypto.SignerOpts(crypto.SHA256)
	if algo == AlgoEd25519 {
		opts = crypto.Hash(0)
	}
	sig, err := k.Signer.Sign(rand.Reader, sum, opts)
	if err != nil {
		return nil, err
	}
	b := base64.StdEncoding.AppendEncode(buf[:0], sig)
	line = len("\tb=")
	for len(b) > 0 {
		n := min(len(b), sigLineLen-line)
		f = append(f, b[:n]...)
		b = b[n:]
		if len(b) > 0 {
			f = append(f, nl...)
			f = append(f, '\t')
			line = 1
		}
	}
	return append(f, nl...), nil
}

// pickFields appends to dst, for each name in hkeys, the index of the field
// it signs, or -1: the n-th occurrence of a name in h= takes the n-th field
// of that name counted from the bottom of the header (RFC 6376 section
// 5.4.2).
func pickFields(dst []int, hkeys []string, fields []field) []int {
	out := dst[:0]
	for range hkeys {
		out = append(out, -1)
	}
	// hkeys lists each name's occurrences together (headerKeys), so a run
	// of one name walks the fields upwards once.
	for i := 0; i < len(hkeys); {
		j := i + 1
		for j < len(hkeys) && hkeys[j] == hkeys[i] {
			j++
		}
		k := i
		for p := len(fields) - 1; p >= 0 && k < j; p-- {
			if fields[p].is(hkeys[i]) {
				out[k] = p
				k++
			}
		}
		i = j
	}
	return out
}
