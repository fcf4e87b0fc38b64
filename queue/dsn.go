package queue

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// DSN actions (RFC 3464 2.3.3).
const (
	actionFailed  = "failed"
	actionDelayed = "delayed"
)

// dsnRcpt is one recipient reported in a DSN.
type dsnRcpt struct {
	addr   string
	action string
	status mail.Status // final status (failed) or latest (delayed)
	last   *attempt    // the latest attempt, for Remote-MTA and Diagnostic-Code
}

// dsn holds everything a delivery status notification says. It is built
// under the queue lock and rendered outside it.
type dsn struct {
	hostname   string
	id         string // the DSN's own queue ID
	origID     string
	to         string // who receives it (bounce address or postmaster)
	origSender string
	arrival    time.Time
	now        time.Time
	retryUntil time.Time // delayed recipients: Will-Retry-Until
	double     bool      // the original was itself a bounce
	rcpts      []dsnRcpt
	header     []byte // the original header, already cut to size
}

// render writes the DSN as an RFC 3464 multipart/report with LF line ends:
// a human-readable part in qmail's voice, the message/delivery-status
// part, and the original header as text/rfc822-headers.
func (d *dsn) render() []byte {
	var text, status bytes.Buffer
	d.writeText(&text)
	d.writeStatus(&status)
	boundary := "qmgate-" + d.id
	for n := 1; bytes.Contains(text.Bytes(), []byte(boundary)) || bytes.Contains(status.Bytes(), []byte(boundary)) ||
		bytes.Contains(d.header, []byte(boundary)); n++ {
		boundary = fmt.Sprintf("qmgate-%s-%d", d.id, n)
	}
	var b bytes.Buffer
	subject := "failure notice"
	if !d.anyFailed() {
		subject = "delivery delay notice"
	}
	fmt.Fprintf(&b, "From: MAILER-DAEMON@%s\n", mail.OneLine(d.hostname))
	fmt.Fprintf(&b, "To: <%s>\n", mail.OneLine(mail.QuoteSMTP(d.to)))
	fmt.Fprintf(&b, "Subject: %s\n", subject)
	fmt.Fprintf(&b, "Date: %s\n", d.now.UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s.dsn@%s>\n", d.id, mail.OneLine(d.hostname))
	b.WriteString("Auto-Submitted: auto-replied\n") // RFC 3834 5
	b.WriteString("MIME-Version: 1.0\n")
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"%s\"\n", boundary)
	b.WriteString("\nThis is a MIME-formatted delivery status notification (RFC 3464).\n")

	fmt.Fprintf(&b, "\n--%s\nContent-Type: text/plain; charset=us-ascii\nContent-Description: Notification\n\n", boundary)
	b.Write(text.Bytes())
	fmt.Fprintf(&b, "\n--%s\nContent-Type: message/delivery-status\nContent-Description: Delivery report\n\n", boundary)
	b.Write(status.Bytes())
	fmt.Fprintf(&b, "\n--%s\nContent-Type: text/rfc822-headers\nContent-Description: Undelivered message header\n", boundary)
	if !isASCII(d.header) {
		b.WriteString("Content-Transfer-Encoding: 8bit\n")
	}
	b.WriteString("\n")
	b.Write(d.header)
	if len(d.header) > 0 && d.header[len(d.header)-1] != '\n' {
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "\n--%s--\n", boundary)
	return b.Bytes()
}

func (d *dsn) anyFailed() bool {
	for _, r := range d.rcpts {
		if r.action == actionFailed {
			return true
		}
	}
	return false
}

func (d *dsn) writeText(b *bytes.Buffer) {
	fmt.Fprintf(b, "Hi. This is the qmgate program at %s.\n", mail.OneLine(d.hostname))
	var failed, delayed []dsnRcpt
	for _, r := range d.rcpts {
		if r.action == actionFailed {
			failed = append(failed, r)
		} else {
			delayed = append(delayed, r)
		}
	}
	if len(failed) > 0 {
		if d.double {
			b.WriteString("I tried to deliver a bounce message to the following addresses,\n" +
				"but the bounce bounced! The original bounce is described below.\n")
		} else {
			b.WriteString("I'm afraid I wasn't able to deliver your message to the following addresses.\n" +
				"This is a permanent error; I've given up. Sorry it didn't work out.\n")
		}
		for _, r := range failed {
			d.writeRcptText(b, r)
		}
	}
	if len(delayed) > 0 {
		if len(failed) > 0 {
			b.WriteString("\nDelivery to the following addresses is delayed; I'm still trying.\n")
		} else {
			b.WriteString("I haven't been able to deliver your message to the following addresses yet.\n" +
				"This is a temporary problem: you do not need to send the message again.\n")
		}
		fmt.Fprintf(b, "I'll keep trying until %s.\n", d.retryUntil.UTC().Format(time.RFC1123Z))
		for _, r := range delayed {
			d.writeRcptText(b, r)
		}
	}
	fmt.Fprintf(b, "\nThe message was queued here as %s on %s.\n", d.origID, d.arrival.UTC().Format(time.RFC1123Z))
}

func (d *dsn) writeRcptText(b *bytes.Buffer, r dsnRcpt) {
	fmt.Fprintf(b, "\n<%s>:\n", textSafe(mail.QuoteSMTP(r.addr)))
	if r.status.Code == statusExpired.Code && r.status.Text == statusExpired.Text {
		b.WriteString(statusExpired.Text + ".\n")
		if r.last != nil {
			b.WriteString("The last attempt: ")
		}
	}
	if r.last != nil {
		if r.last.host != "" {
			fmt.Fprintf(b, "%s said: %s\n", textSafe(remoteMTA(r.last.host)), smtpReply(r.last.status))
		} else {
			fmt.Fprintf(b, "%s\n", smtpReply(r.last.status))
		}
	} else if r.status.Code != statusExpired.Code {
		fmt.Fprintf(b, "%s\n", smtpReply(r.status))
	}
}

func (d *dsn) writeStatus(b *bytes.Buffer) {
	fmt.Fprintf(b, "Reporting-MTA: dns; %s\n", textSafe(d.hostname))
	fmt.Fprintf(b, "Arrival-Date: %s\n", d.arrival.UTC().Format(time.RFC1123Z))
	for _, r := range d.rcpts {
		b.WriteString("\n")
		fmt.Fprintf(b, "Final-Recipient: rfc822; %s\n", textSafe(mail.QuoteSMTP(r.addr)))
		fmt.Fprintf(b, "Action: %s\n", r.action)
		fmt.Fprintf(b, "Status: %s\n", r.status.EnhancedCode())
		diag := r.status
		if r.last != nil {
			if r.last.host != "" {
				fmt.Fprintf(b, "Remote-MTA: dns; %s\n", textSafe(remoteMTA(r.last.host)))
			}
			diag = r.last.status
		}
		fmt.Fprintf(b, "Diagnostic-Code: smtp; %s\n", smtpReply(diag))
		if r.last != nil {
			fmt.Fprintf(b, "Last-Attempt-Date: %s\n", r.last.at.UTC().Format(time.RFC1123Z))
		}
		if r.action == actionDelayed {
			fmt.Fprintf(b, "Will-Retry-Until: %s\n", d.retryUntil.UTC().Format(time.RFC1123Z))
		}
	}
}

// smtpReply renders a status as an SMTP reply line: "550 5.1.1 text".
func smtpReply(s mail.Status) string {
	t := s.SMTPText()
	if t == "" {
		t = s.Class.String()
	}
	// A remote server's own reply is quoted once, verbatim: the SMTP client
	// keeps it as "remote host said: 550 5.1.1 text" (qmail-remote's
	// convention), which already carries the codes.
	if r, ok := strings.CutPrefix(t, remoteSaid); ok && len(r) >= 3 && isDigits(r[:3]) {
		return r
	}
	return fmt.Sprintf("%d %s %s", s.SMTPCode(), s.EnhancedCode(), t)
}

// remoteSaid prefixes a remote server's reply in a status text.
const remoteSaid = "remote host said: "

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// remoteMTA is the host name of the remote MTA that answered, for the
// Remote-MTA field (RFC 3464 2.3.5: a name of type dns): a transport may
// record its next hop as a URL ("smtp://mx.example.com:25"), whose scheme
// and port are dropped here.
func remoteMTA(host string) string {
	if _, rest, ok := strings.Cut(host, "://"); ok {
		host = rest
	}
	if i := strings.IndexAny(host, "/?#"); i >= 0 {
		host = host[:i]
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return host
}

// textSafe is headerSafe for the us-ascii text part: 8-bit bytes become
// '?' as well.
func textSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c >= 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
