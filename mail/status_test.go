package mail

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestReply(t *testing.T) {
	tests := []struct {
		st   Status
		want string
	}{
		{OK(""), "Kok"},
		{OK("ok 1700000000 qp 4242"), "Kok 1700000000 qp 4242"},
		{Status{}, "Zfailure (#4.3.0)"}, // the zero value is never an acceptance
		{Temp("", ""), "Zfailure (#4.3.0)"},
		{Perm("", ""), "Dfailure (#5.0.0)"},
		{Temp("4.2.2", "mailbox full"), "Zmailbox full (#4.2.2)"},
		// qmail's exact texts (qmail-qmtpd.c).
		{StatusBadRecipient, "Dsorry, I can't handle that recipient (#5.1.3)"},
		{StatusNotRcptHost, "Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"},
		{StatusTooBig, "Dsorry, that message size exceeds my databytes limit (#5.3.4)"},
		{StatusBadSender, "Dunacceptable sender (#5.1.7)"},
		{StatusQueueTrouble, "Zqq write error or disk full (#4.3.0)"},
		// A code of the wrong class or form is replaced by the class default.
		{Perm("4.1.1", "x"), "Dx (#5.0.0)"},
		{Temp("5.1.1", "x"), "Zx (#4.3.0)"},
		{Perm("5.1", "x"), "Dx (#5.0.0)"},
		{Perm("5.1.1.1", "x"), "Dx (#5.0.0)"},
		{Perm("#5.1.1", "x"), "Dx (#5.0.0)"},
		{Perm("5.1234.1", "x"), "Dx (#5.0.0)"},
		{Perm("55.1.1", "x"), "Dx (#5.0.0)"},
		{Perm("5.a.1", "x"), "Dx (#5.0.0)"},
		{Perm("5.100.999", "x"), "Dx (#5.100.999)"},
		// Sanitizing: one line, no '#', no leading space, printable ASCII.
		{Perm("5.1.1", "line one\r\nline two"), "Dline one  line two (#5.1.1)"},
		{Perm("5.1.1", "  leading"), "Dleading (#5.1.1)"},
		{Perm("5.1.1", "no # here (#5.1.2)"), "Dno   here ( 5.1.2) (#5.1.1)"},
		{Perm("5.1.1", "tab\there"), "Dtab here (#5.1.1)"},
		{Perm("5.1.1", "nul\x00 del\x7f bell\a"), "Dnul? del? bell? (#5.1.1)"},
		{Perm("5.1.1", "Grüße"), "DGr????e (#5.1.1)"}, // per byte, like qmail
		{Perm("5.1.1", "###"), "Dfailure (#5.1.1)"},
		{OK(" "), "Kok"},
		// An unknown class is temporary everywhere.
		{Status{Class: 7, Code: "4.4.1", Text: "x"}, "Zx (#4.4.1)"},
	}
	for _, tt := range tests {
		if got := string(tt.st.Reply()); got != tt.want {
			t.Errorf("%#v.Reply() = %q, want %q", tt.st, got, tt.want)
		}
		if got := string(tt.st.AppendReply([]byte("x"))); got != "x"+tt.want {
			t.Errorf("AppendReply = %q", got)
		}
	}
	// The rcpthosts reply is the 66-byte netstring qmail-qmtpd sends.
	if n := len(StatusNotRcptHost.Reply()); n != 66 {
		t.Errorf("rcpthosts reply length = %d, want 66", n)
	}
	if n := len(StatusBadRecipient.Reply()); n != 46 {
		t.Errorf("can't-handle reply length = %d, want 46", n)
	}
}

func TestReplyLengthBounded(t *testing.T) {
	st := Perm("5.1.1", strings.Repeat("x", 100_000))
	r := st.Reply()
	if len(r) > MaxStatusText+20 {
		t.Fatalf("reply is %d bytes", len(r))
	}
	if !strings.HasSuffix(string(r), " (#5.1.1)") {
		t.Fatalf("code lost: %q", r[len(r)-20:])
	}
}

func TestEnhancedCode(t *testing.T) {
	tests := []struct {
		st    Status
		want  string
		parts [3]int
	}{
		{OK(""), "2.0.0", [3]int{2, 0, 0}},
		{Status{Class: Accept, Code: "2.6.0"}, "2.6.0", [3]int{2, 6, 0}},
		{Status{Class: Accept, Code: "5.6.0"}, "2.0.0", [3]int{2, 0, 0}},
		{Temp("", ""), "4.3.0", [3]int{4, 3, 0}},
		{Temp("4.2.2", ""), "4.2.2", [3]int{4, 2, 2}},
		{Temp("4.4.1", ""), "4.4.1", [3]int{4, 4, 1}},
		{Temp("2.0.0", ""), "4.3.0", [3]int{4, 3, 0}},
		{Perm("", ""), "5.0.0", [3]int{5, 0, 0}},
		{Perm("5.1.3", ""), "5.1.3", [3]int{5, 1, 3}},
		{Perm("5.10.200", ""), "5.10.200", [3]int{5, 10, 200}},
		{Perm("bogus", ""), "5.0.0", [3]int{5, 0, 0}},
		{Status{Class: 42}, "4.3.0", [3]int{4, 3, 0}},
	}
	for _, tt := range tests {
		if got := tt.st.EnhancedCode(); got != tt.want {
			t.Errorf("%#v.EnhancedCode() = %q, want %q", tt.st, got, tt.want)
		}
		if got := tt.st.EnhancedCodeParts(); got != tt.parts {
			t.Errorf("%#v.EnhancedCodeParts() = %v, want %v", tt.st, got, tt.parts)
		}
	}
}

func TestSMTPCode(t *testing.T) {
	tests := []struct {
		st   Status
		want int
	}{
		{OK(""), 250},
		{Status{Class: Accept, SMTP: 251}, 251},
		{Status{Class: Accept, SMTP: 550}, 250}, // contradicts the class
		{Temp("", ""), 451},
		{Temp("4.2.2", ""), 452},
		{Temp("4.3.1", ""), 452},
		{Temp("4.5.3", ""), 452},
		{Temp("4.4.1", ""), 451},
		{Status{Class: Temporary, SMTP: 421}, 421},
		{Status{Class: Temporary, SMTP: 550}, 451},
		{Status{Class: Temporary, SMTP: 99}, 451},
		{Perm("", ""), 554},
		{Perm("5.3.4", ""), 552},
		{Perm("5.2.2", ""), 552},
		{Perm("5.2.3", ""), 552},
		{Perm("5.1.1", ""), 550},
		{Perm("5.1.3", ""), 553},
		{Perm("5.1.7", ""), 553},
		{Perm("5.7.1", ""), 550},
		{Perm("5.7.27", ""), 550},
		{Perm("5.5.2", ""), 501},
		{Perm("5.4.6", ""), 554},
		{Status{Class: Permanent, Code: "5.1.1", SMTP: 551}, 551},
		{Status{Class: Permanent, SMTP: 450}, 554},
		{Status{Class: Permanent, SMTP: 600}, 554},
		{Status{Class: 9}, 451},
		// The shared statuses keep the codes qmail-smtpd uses.
		{StatusNotRcptHost, 553},
		{StatusBadRecipient, 553},
		{StatusTooBig, 552},
		{StatusTooManyHops, 554},
		{StatusQueueTrouble, 451},
		{StatusShuttingDown, 421},
		{StatusTooManyRcpts, 452},
	}
	for _, tt := range tests {
		if got := tt.st.SMTPCode(); got != tt.want {
			t.Errorf("%#v.SMTPCode() = %d, want %d", tt.st, got, tt.want)
		}
	}
}

// TestSharedStatusesConsistent: every shared status renders with its own
// code and an SMTP code of its own class.
func TestSharedStatusesConsistent(t *testing.T) {
	all := []Status{StatusTooBig, StatusBadRecipient, StatusBadSender, StatusBadAddresses,
		StatusTooManyHops, StatusNotRcptHost, StatusNoRecipients, StatusTooManyRcpts,
		StatusTempFailure, StatusQueueTrouble, StatusShuttingDown, StatusTooManyConns,
		StatusNoReply, StatusBadReply, StatusConnectFailed}
	for _, st := range all {
		if st.EnhancedCode() != st.Code {
			t.Errorf("%q: code %q renders as %q", st.Text, st.Code, st.EnhancedCode())
		}
		if st.SMTP != 0 && st.SMTPCode() != st.SMTP {
			t.Errorf("%q: SMTP %d renders as %d", st.Text, st.SMTP, st.SMTPCode())
		}
		if st.IsAccept() {
			t.Errorf("%q is an acceptance", st.Text)
		}
		if got := ParseReply(st.Reply()); got.Class != st.Class || got.Code != st.Code || got.Text != st.Text {
			t.Errorf("round trip of %q = %#v", st.Reply(), got)
		}
	}
}

func TestSMTPText(t *testing.T) {
	for _, tt := range []struct {
		st   Status
		want string
	}{
		{OK(""), "ok"},
		{Temp("", ""), "failure"},
		{Perm("5.1.1", "no\r\nsuch user"), "no  such user"},
		{OK("queued as 42"), "queued as 42"},
	} {
		if got := tt.st.SMTPText(); got != tt.want {
			t.Errorf("SMTPText(%#v) = %q, want %q", tt.st, got, tt.want)
		}
	}
}

func TestClass(t *testing.T) {
	for _, tt := range []struct {
		c      Class
		name   string
		letter byte
	}{{Accept, "accept", 'K'}, {Temporary, "temporary", 'Z'}, {Permanent, "permanent", 'D'}, {Class(200), "temporary", 'Z'}} {
		if tt.c.String() != tt.name || tt.c.Letter() != tt.letter {
			t.Errorf("Class %d: %q %c", tt.c, tt.c.String(), tt.c.Letter())
		}
	}
	var zero Status
	if zero.IsAccept() || zero.IsPermanent() || !zero.IsTemporary() {
		t.Error("zero Status is not temporary")
	}
	odd := Status{Class: 77}
	if odd.IsAccept() || odd.IsPermanent() || !odd.IsTemporary() {
		t.Error("unknown class is not temporary")
	}
}

func TestParseReply(t *testing.T) {
	tests := []struct {
		in   string
		want Status
	}{
		{"Kok", Status{Class: Accept, Text: "ok"}},
		{"Kok 838640135 qp 1390", Status{Class: Accept, Text: "ok 838640135 qp 1390"}},
		{"K", Status{Class: Accept}},
		{"Kok (#2.6.0)", Status{Class: Accept, Code: "2.6.0", Text: "ok"}},
		{"Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
			Status{Class: Permanent, Code: "5.7.1", Text: "sorry, that domain isn't in my list of allowed rcpthosts"}},
		{"Dsorry, no mailbox here by that name.", Status{Class: Permanent, Text: "sorry, no mailbox here by that name."}},
		{"Zqq write error or disk full (#4.3.0)", Status{Class: Temporary, Code: "4.3.0", Text: "qq write error or disk full"}},
		{"Zmailbox full(#4.2.2)", Status{Class: Temporary, Code: "4.2.2", Text: "mailbox full"}},
		{"Zmailbox full (#4.2.2) \r\n", Status{Class: Temporary, Code: "4.2.2", Text: "mailbox full"}},
		{"Dtwo (#5.1.1) codes (#5.1.2)", Status{Class: Permanent, Code: "5.1.2", Text: "two (#5.1.1) codes"}},
		{"Dcode mid (#5.1.1) text", Status{Class: Permanent, Text: "code mid (#5.1.1) text"}},
		{"Dbad code (#5.1)", Status{Class: Permanent, Text: "bad code (#5.1)"}},
		// The letter decides the class; a contradicting code is dropped.
		{"Dwrong class (#4.2.2)", Status{Class: Permanent, Text: "wrong class"}},
		{"Zwrong class (#5.1.1)", Status{Class: Temporary, Text: "wrong class"}},
		{"Kwrong class (#5.1.1)", Status{Class: Accept, Text: "wrong class"}},
		// Multi-line text as mailfront sends it is kept raw.
		{"Dline one\nline two", Status{Class: Permanent, Text: "line one\nline two"}},
		{"Z", Status{Class: Temporary}},
		// Anything but K, Z or D is a temporary protocol failure.
		{"", StatusBadReply},
		{"k lower case", StatusBadReply},
		{"d lower case", StatusBadReply},
		{" Kok", StatusBadReply},
		{"250 ok", StatusBadReply},
		{"\x00", StatusBadReply},
	}
	for _, tt := range tests {
		if got := ParseReply([]byte(tt.in)); got != tt.want {
			t.Errorf("ParseReply(%q) = %#v, want %#v", tt.in, got, tt.want)
		}
	}
	if ParseReply([]byte("D")).Reply()[0] != 'D' {
		t.Error("D must stay permanent")
	}
}

func TestStatusOf(t *testing.T) {
	wrapped := fmt.Errorf("delivering: %w", StatusTooBig)
	ptr := &Status{Class: Permanent, Code: "5.1.1", Text: "no"}
	var nilPtr *Status
	tests := []struct {
		err  error
		want Status
	}{
		{nil, OK("")},
		{StatusTooBig, StatusTooBig},
		{wrapped, StatusTooBig},
		{ptr, *ptr},
		{fmt.Errorf("x: %w", ptr), *ptr},
		{fmt.Errorf("x: %w", nilPtr), StatusTempFailure},
		{io.ErrUnexpectedEOF, StatusTempFailure},
		{errors.New("open /var/spool/secret: permission denied"), StatusTempFailure},
		{errors.Join(errors.New("a"), StatusBadSender), StatusBadSender},
	}
	for _, tt := range tests {
		if got := StatusOf(tt.err); got != tt.want {
			t.Errorf("StatusOf(%v) = %#v, want %#v", tt.err, got, tt.want)
		}
	}
	// Internal text never reaches the reply.
	if r := string(StatusOf(errors.New("/var/spool/secret")).Reply()); strings.Contains(r, "secret") {
		t.Errorf("reply leaks: %q", r)
	}
}

func TestStatusError(t *testing.T) {
	var err error = StatusBadRecipient
	if err.Error() != "permanent: sorry, I can't handle that recipient (#5.1.3)" {
		t.Errorf("Error() = %q", err.Error())
	}
	if OK("").Error() != "accept: ok" {
		t.Errorf("Error() = %q", OK("").Error())
	}
}

func TestValidEnhanced(t *testing.T) {
	for c, want := range map[string]bool{
		"2.0.0": true, "5.1.1": true, "4.999.999": true, "5.10.0": true,
		"": false, "5": false, "5.1": false, "5.1.": false, ".1.1": false, "5..1": false,
		"5.1.1.": false, "5.1.1.1": false, "55.1.1": false, "5.1000.1": false, "5.1.1000": false,
		"5.1.a": false, " 5.1.1": false, "5.1.1 ": false, "#5.1.1": false, "5-1-1": false,
	} {
		if got := validEnhanced(c); got != want {
			t.Errorf("validEnhanced(%q) = %v", c, got)
		}
	}
}

func TestDescribe(t *testing.T) {
	for st, want := range map[Status]string{
		OK("ok 1 qp 2"):                  "accepted: ok 1 qp 2",
		StatusConnectFailed:              "deferred: could not connect to remote host (#4.4.1)",
		Perm("5.1.1", "no such user"):    "refused: no such user (#5.1.1)",
		{Class: Temporary, Text: "busy"}: "deferred: busy (#4.3.0)",
	} {
		if got := st.Describe(); got != want {
			t.Errorf("Describe(%+v) = %q, want %q", st, got, want)
		}
	}
}
