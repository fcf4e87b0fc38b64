package relay

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
)

// TestDoorRefusalLogged: every refusal at the door leaves exactly one log
// line naming the client, the protocol, the sender, the recipient, the
// reason and the reply, in words.
func TestDoorRefusalLogged(t *testing.T) {
	h := startHub(t, `
rcpthosts = ["example.net"]
[qmtp]
listen = ["127.0.0.1:0"]
[qmqp]
listen = ["127.0.0.1:0"]
allow = ["10.0.0.0/8"]
[smtp]
listen = ["127.0.0.1:0"]
[[route]]
domains = ["*"]
via = "discard:"
`)
	sts := sendQMTP(t, h.addr("qmtp"), mail.Envelope{Sender: "s@x.test", Recipients: []string{"victim@other.org", "ok@example.net"}}, "x\n")
	if sts[0].IsAccept() || !sts[1].IsAccept() {
		t.Fatalf("statuses %v", sts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, _ := (&qmqp.Client{Servers: []string{h.addr("qmqp")}}).Send(ctx, mail.Envelope{Sender: "q@x.test", Recipients: []string{"ok@example.net"}}, strings.NewReader("x\n"), 2)
	if res.Status.IsAccept() {
		t.Fatalf("QMQP from a stranger accepted")
	}

	c, err := gosmtp.Dial(h.addr("smtp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("m@x.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("victim@other.org", nil); err == nil {
		t.Fatal("SMTP relay accepted")
	}
	if err := c.Rcpt("a\x7f@example.net", nil); err == nil {
		t.Fatal("bad address accepted")
	}
	c.Quit()

	var lines []string
	for _, l := range strings.Split(h.logText(), "\n") {
		if strings.Contains(l, "msg=refused") {
			lines = append(lines, l)
		}
	}
	want := []*regexp.Regexp{
		regexp.MustCompile(`^.* msg=refused client=127\.0\.0\.1 proto=QMTP from=s@x\.test rcpt=victim@other\.org reason=relay reply="sorry, that domain isn't in my list of allowed rcpthosts" code=5\.7\.1 result=refused$`),
		// The QMQP server refuses a stranger before reading the envelope.
		regexp.MustCompile(`^.* msg=refused proto=QMQP client=127\.0\.0\.1 reason=access reply="client 127\.0\.0\.1 is not authorized to use this service" code=5\.7\.1 result=refused$`),
		regexp.MustCompile(`^.* msg=refused client=127\.0\.0\.1 proto=SMTP from=m@x\.test rcpt=victim@other\.org reason=relay reply="sorry, that domain isn't in my list of allowed rcpthosts" code=5\.7\.1 result=refused$`),
		// The server refuses the address itself; its logger names the protocol.
		regexp.MustCompile(`^.* msg=refused proto=SMTP client=127\.0\.0\.1 from=m@x\.test rcpt="?a.?@example\.net"? reason=address reply="[^"]+" code=5\.1\.3 result=refused$`),
	}
	if len(lines) != len(want) {
		t.Fatalf("%d refusal lines, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d:\n%s\ndoes not match %s", i, lines[i], re)
		}
	}
}
