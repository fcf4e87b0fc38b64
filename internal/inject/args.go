package inject

import (
	"fmt"
	"strings"
)

// Mode is what sendmail was asked to do.
type Mode int

const (
	// ModeDeliver (-bm, the default) reads one message from stdin and sends it.
	ModeDeliver Mode = iota
	// ModeList (-bp, mailq) lists the local queue.
	ModeList
	// ModeSMTP (-bs) speaks SMTP on stdin and stdout.
	ModeSMTP
	// ModeNoop (-bi, -I newaliases, -q queue runs) has nothing to do in a
	// nullclient and succeeds without reading stdin.
	ModeNoop
)

// Options is the parsed sendmail command line.
type Options struct {
	Mode Mode
	// ExtractRecipients (-t) takes recipients from the header as well.
	ExtractRecipients bool
	// IgnoreDots (-i, -oi) keeps a line holding a single "." as data;
	// without it such a line ends the message, as in sendmail.
	IgnoreDots bool
	// Sender (-f, -r) is the envelope sender; SenderSet tells an explicit
	// empty sender (-f '<>') from none.
	Sender    string
	SenderSet bool
	// FullName (-F) goes into an added From: header.
	FullName string
	// Verbose (-v) reports each step on stderr.
	Verbose bool
	// ConfigPath is qmgate's own -config FILE (also --config, -config=FILE).
	ConfigPath string
	// Recipients are the arguments after the flags; each may be an address
	// list ("a@x, b@y").
	Recipients []string
	// Ignored lists the flags accepted and ignored, for -v.
	Ignored []string
}

// UsageError is a command line that cannot be obeyed (exit 64).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Flag letters that take a value, either attached (-fuser) or as the next
// argument (-f user), as sendmail's getopt string has them. 'q' is special:
// its value is optional and only ever attached.
const valueFlags = "ABbCdeFfhLMNOoprRVX"

// ParseArgs parses a sendmail command line (without the program name) by
// sendmail's rules, not Go's flag package: single-letter flags that can be
// grouped (-ti), values attached or separate (-fuser, -f user), -o options
// with their value attached (-oi, -oem, -odb), "--" ending the flags, and
// the first argument that is not a flag starting the recipients.
//
// Flags that matter in a nullclient:
//
//	-t            recipients from To:, Cc:, Bcc: (Resent-* when present) too
//	-i, -oi       a line with a single "." is data, not the end
//	-f ADDR, -r   envelope sender; "" or "<>" is the null sender
//	-F NAME       full name for an added From:
//	-bm           deliver a message (the default)
//	-bp           list the queue (mailq)
//	-bs           SMTP on stdin/stdout
//	-bi, -I, -q   nothing to do; exit 0 without reading stdin
//	-v            report on stderr
//	-config FILE  qmgate's configuration file
//
// Accepted and ignored, never an error: -o with any other option (-odb,
// -odi, -oem, -oep, -om, ...), -B TYPE, -N DSN, -R RET, -V ENVID, -X LOG,
// -L TAG, -C FILE, -h HOPS, -A, -d, -e, -M, -O, -p, -G, -m, -n, -s, -U and
// any unknown letter (with the rest of its argument). The modes -bd, -bD,
// -bt, -bv, -bh, -bH, -bP and other -b letters are usage errors: they ask
// for a daemon or a test this program is not.
func ParseArgs(args []string) (*Options, error) {
	o := &Options{}
	i := 0
	next := func() (string, bool) {
		if i+1 < len(args) {
			i++
			return args[i], true
		}
		return "", false
	}
args:
	for ; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			i++
			break args
		case a == "-config" || a == "--config":
			v, ok := next()
			if !ok {
				return nil, &UsageError{"-config needs a file name"}
			}
			o.ConfigPath = v
			continue
		case strings.HasPrefix(a, "-config="), strings.HasPrefix(a, "--config="):
			_, o.ConfigPath, _ = strings.Cut(a, "=")
			continue
		case len(a) < 2 || a[0] != '-':
			break args
		}
		for j := 1; j < len(a); j++ {
			c := a[j]
			if c == 'q' {
				// -q[time]: a queue run. Nothing to do here, and stdin must
				// not be read (cron runs "sendmail -q").
				o.Mode = ModeNoop
				o.Ignored = append(o.Ignored, a)
				break
			}
			if strings.IndexByte(valueFlags, c) < 0 {
				switch c {
				case 't':
					o.ExtractRecipients = true
				case 'i':
					o.IgnoreDots = true
				case 'v':
					o.Verbose = true
				case 'I':
					o.Mode = ModeNoop
				case 'G', 'm', 'n', 's', 'U':
					o.Ignored = append(o.Ignored, "-"+string(c))
				default:
					// Unknown: whether it takes a value is unknown too, so
					// the rest of this argument goes with it.
					o.Ignored = append(o.Ignored, "-"+a[j:])
					continue args
				}
				continue
			}
			v := a[j+1:]
			if v == "" {
				var ok bool
				v, ok = next()
				if !ok {
					switch c {
					case 'f', 'r', 'F', 'b':
						return nil, &UsageError{fmt.Sprintf("-%c needs a value", c)}
					}
					o.Ignored = append(o.Ignored, "-"+string(c))
					continue args
				}
			}
			switch c {
			case 'f', 'r':
				o.Sender, o.SenderSet = v, true
			case 'F':
				o.FullName = v
			case 'o':
				if v == "i" {
					o.IgnoreDots = true
				} else {
					o.Ignored = append(o.Ignored, "-o"+v)
				}
			case 'b':
				switch v {
				case "m":
					o.Mode = ModeDeliver
				case "p":
					o.Mode = ModeList
				case "s":
					o.Mode = ModeSMTP
				case "i", "I":
					o.Mode = ModeNoop
				default:
					return nil, &UsageError{fmt.Sprintf("-b%s is not supported: this sendmail only sends mail (-bm), lists the queue (-bp) and speaks SMTP on stdin (-bs)", v)}
				}
			default:
				o.Ignored = append(o.Ignored, "-"+string(c)+" "+v)
			}
			continue args
		}
	}
	if i < len(args) {
		o.Recipients = append(o.Recipients, args[i:]...)
	}
	return o, nil
}
