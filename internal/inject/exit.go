package inject

import (
	"strings"

	"github.com/qmgate/qmgate/mail"
)

// Exit codes from sysexits.h, the ones sendmail's callers know.
const (
	ExitOK          = 0
	ExitUsage       = 64 // EX_USAGE: the command line cannot be obeyed
	ExitDataErr     = 65 // EX_DATAERR: the message is refused for its content or size
	ExitNoUser      = 67 // EX_NOUSER: an address is refused
	ExitUnavailable = 69 // EX_UNAVAILABLE: refused for good for another reason
	ExitTempFail    = 75 // EX_TEMPFAIL: not sent, try again later
	ExitConfig      = 78 // EX_CONFIG: the configuration cannot be used
)

// ExitCode is the decision table from a final Status to sendmail's exit
// code:
//
//	accepted                               0
//	temporary failure (any)                75 EX_TEMPFAIL
//	permanent, 5.1.x (address)             67 EX_NOUSER
//	permanent, 5.6.x or 5.3.4 (content)    65 EX_DATAERR
//	permanent, anything else               69 EX_UNAVAILABLE
//
// Only a permanent failure gives 65, 67 or 69; everything unknown is 75.
func ExitCode(st mail.Status) int {
	switch {
	case st.IsAccept():
		return ExitOK
	case !st.IsPermanent():
		return ExitTempFail
	}
	code := st.EnhancedCode()
	switch {
	case strings.HasPrefix(code, "5.1."):
		return ExitNoUser
	case strings.HasPrefix(code, "5.6."), code == "5.3.4":
		return ExitDataErr
	}
	return ExitUnavailable
}

// Error is a failure that already knows its exit code and its one line for
// stderr.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// ExitOf returns the exit code for an error from this package: a *Error's
// code, a *UsageError's 64, a mail.Status by ExitCode, and 75 for anything
// else.
func ExitOf(err error) int {
	switch e := err.(type) {
	case nil:
		return ExitOK
	case *Error:
		return e.Code
	case *UsageError:
		return ExitUsage
	case mail.Status:
		return ExitCode(e)
	}
	return ExitTempFail
}

// Status turns an Error into the reply an SMTP client (sendmail -bs) gets:
// a usage or data error is permanent, everything else temporary.
func (e *Error) Status() mail.Status {
	switch e.Code {
	case ExitUsage:
		return mail.Perm("5.5.4", e.Msg)
	case ExitNoUser:
		return mail.Perm("5.1.3", e.Msg)
	case ExitDataErr:
		if strings.HasPrefix(e.Msg, "message larger") {
			return mail.StatusTooBig
		}
		return mail.Perm("5.6.0", e.Msg)
	}
	return mail.Temp("4.3.0", e.Msg)
}
