package dotqmail

import (
	"bytes"
	"strings"

	"github.com/qmgate/qmgate/mail"
)

// Parse reads the delivery instructions of a control file, line by line, as
// qmail-local does (dot-qmail(5)):
//
//   - trailing spaces and tabs are ignored; an empty line is skipped, except
//     that an empty first line makes the whole file an error;
//   - '#' starts a comment;
//   - a line starting with '.' or '/' names a Maildir when it ends in '/'
//     and an mbox file otherwise (Path holds the name as written; Lookup
//     checks it and fills Rel);
//   - '|' starts a program line (Command is the rest);
//   - "+list" makes the rest of the file forward-only, as the file's
//     execute bit (forwardOnly) does for all of it: a mailbox or program
//     line after it is an error;
//   - '&' starts a forward; any other line is a forward too.
//
// Unlike qmail-local, Parse refuses what qmail-local would pass on blindly
// and fail with later: NUL bytes, control characters in a line, and forward
// addresses that are empty, too long, or hold white space or angle
// brackets. Every error is temporary (an *Error), so a broken file delays
// mail instead of losing it. An empty data gives no deliveries and no
// error; the caller treats an empty file as no file.
func Parse(data []byte, forwardOnly bool) ([]Delivery, error) {
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, tempErr0("4.2.1", 0, "the file contains a NUL byte")
	}
	var out []Delivery
	for n := 1; len(data) > 0; n++ {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		line = bytes.TrimRight(line, " \t")
		if len(line) == 0 {
			if n == 1 {
				return nil, tempErr0("4.2.1", n, "the first line is blank")
			}
			continue
		}
		if i := bytes.IndexFunc(line, isControl); i >= 0 {
			what := "a control character"
			if line[i] == '\r' {
				what = "a carriage return (save the file with Unix line ends)"
			}
			return nil, tempErr0("4.2.1", n, "the line contains "+what)
		}
		s := string(line)
		switch s[0] {
		case '#':
		case '.', '/':
			if forwardOnly {
				return nil, tempErr0("4.7.0", n, "a mailbox line in a forward-only file (execute bit or +list)")
			}
			k := Mbox
			if s[len(s)-1] == '/' {
				k = Maildir
			}
			out = append(out, Delivery{Kind: k, Path: s, Line: n})
		case '|':
			if forwardOnly {
				return nil, tempErr0("4.7.0", n, "a program line in a forward-only file (execute bit or +list)")
			}
			out = append(out, Delivery{Kind: Program, Command: s[1:], Line: n})
		case '+':
			if s == "+list" {
				forwardOnly = true
			}
		default:
			addr := strings.TrimPrefix(s, "&")
			if why := badForward(addr); why != "" {
				return nil, tempErr0("4.2.1", n, why)
			}
			out = append(out, Delivery{Kind: Forward, Address: addr, Line: n})
		}
	}
	return out, nil
}

func isControl(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }

// badForward says what is wrong with a forward address, or "". dot-qmail(5)
// lists "& me@x", "&<me@x>" and "&me@x (Name)" as wrong; qmail-local would
// queue them and the mail would bounce later.
func badForward(a string) string {
	switch {
	case a == "":
		return "a forward line has no address"
	case !mail.ValidAddress(a):
		return "the forward address is too long"
	case strings.ContainsAny(a, " \t<>"):
		return "the forward address holds spaces or angle brackets"
	case a[0] == '@' || a[len(a)-1] == '@':
		return "the forward address is not of the form user@domain"
	}
	return ""
}
