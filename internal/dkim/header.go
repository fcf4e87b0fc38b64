package dkim

import (
	"bytes"
	"net/mail"
	"strings"
)

// field is one header field: its name in lower case and its raw bytes,
// continuation lines and line end included.
type field struct {
	name string
	raw  []byte
}

// splitHeader cuts a header (without its ending blank line) into fields. A
// line that starts with a space or tab continues the field before it.
func splitHeader(h []byte) []field {
	fields := make([]field, 0, bytes.Count(h, []byte("\n"))+1) // one per line at most
	for len(h) > 0 {
		end := bytes.IndexByte(h, '\n')
		if end < 0 {
			end = len(h)
		} else {
			end++
		}
		line := h[:end]
		h = h[end:]
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			f := &fields[len(fields)-1]
			f.raw = f.raw[:len(f.raw)+len(line)] // lines are contiguous in h
			continue
		}
		fields = append(fields, field{raw: line})
	}
	for i := range fields {
		// Named from the whole field, continuation lines included: a
		// first line without a colon does not name the field alone.
		fields[i].name = fieldName(fields[i].raw)
	}
	return fields
}

// fieldName is a field's name in lower case: what comes before the colon,
// or the whole field when there is none, trimmed, as go-msgauth's verifier
// names fields so that both pick the same fields for h=.
func fieldName(line []byte) string {
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		line = line[:i]
	}
	var buf [64]byte
	if len(line) <= len(buf) {
		b := appendLowerTrim(buf[:0], line)
		if n, ok := knownNames[string(b)]; ok { // no allocation to look up
			return n
		}
	}
	for _, b := range line {
		if b >= 0x80 {
			return strings.TrimSpace(strings.ToLower(string(line)))
		}
	}
	return string(appendLowerTrim(nil, line))
}

// knownNames holds the common field names, so that naming them allocates
// nothing.
var knownNames = func() map[string]string {
	m := map[string]string{}
	for _, n := range append(DefaultHeaders, "DKIM-Signature", "Received", "Return-Path", "X-Mailer", "Bcc",
		"Content-Disposition", "Content-ID", "Auto-Submitted", "Precedence", "Delivered-To", "User-Agent") {
		n = strings.ToLower(n)
		m[n] = n
	}
	return m
}()

// is reports whether the field has the name n, in any case, with the
// Unicode case folding a verifier such as go-msgauth applies.
func (f field) is(n string) bool { return strings.EqualFold(f.name, n) }

// value returns a field's unfolded value.
func (f field) value() string {
	v := f.raw
	if i := bytes.IndexByte(v, ':'); i >= 0 {
		v = v[i+1:]
	}
	v = bytes.TrimSpace(v) // the field's own line end too
	if bytes.ContainsAny(v, "\r\n") {
		return strings.TrimSpace(unfold.Replace(string(v)))
	}
	return string(v)
}

var unfold = strings.NewReplacer("\r\n", "", "\n", "", "\r", "")

// fromDomain returns the domain of the author in the message's From: field,
// or a reason in plain words why there is none to sign for.
func fromDomain(fields []field) (string, string) {
	var from *field
	for i := range fields {
		if fields[i].name == "from" {
			if from != nil {
				return "", "the message has more than one From: field"
			}
			from = &fields[i]
		}
	}
	if from == nil {
		return "", "the message has no From: field"
	}
	v := from.value()
	if !strings.ContainsAny(v, ",\"(:;\\") {
		// One address, bare or in angle brackets, which is what nearly
		// every program writes: no need for the full parser, which gives
		// the same domain.
		return oneDomain(v)
	}
	var doms []string
	if list, err := mail.ParseAddressList(v); err == nil {
		for _, a := range list {
			doms = append(doms, addrDomain(a.Address))
		}
	} else {
		// A From: that net/mail cannot parse (bad quoting in the display
		// name, say) still names its address in angle brackets or alone.
		return oneDomain(v)
	}
	d := doms[0]
	for _, o := range doms[1:] {
		if o != d {
			return "", "the From: field names authors in more than one domain"
		}
	}
	if d == "" {
		return "", "the From: address has no domain"
	}
	return d, ""
}

// oneDomain returns the domain of the one address in v: the one in the
// last angle brackets, or v itself.
func oneDomain(v string) (string, string) {
	a := v
	if i := strings.LastIndexByte(a, '<'); i >= 0 {
		a = a[i+1:]
		if j := strings.IndexByte(a, '>'); j >= 0 {
			a = a[:j]
		}
	}
	d := addrDomain(strings.TrimSpace(a))
	if d == "" {
		return "", "the From: address has no domain"
	}
	return d, ""
}

func addrDomain(a string) string {
	i := strings.LastIndexByte(a, '@')
	if i < 0 {
		return ""
	}
	return normDomain(a[i+1:])
}

// sigTags returns the d= and s= tags of a DKIM-Signature field.
func sigTags(f field) (d, s string) {
	for _, t := range strings.Split(f.value(), ";") {
		k, v, ok := strings.Cut(t, "=")
		if !ok {
			continue
		}
		v = strings.Join(strings.Fields(v), "")
		switch strings.TrimSpace(k) {
		case "d":
			d = normDomain(v)
		case "s":
			s = v
		}
	}
	return d, s
}
