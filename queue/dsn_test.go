package queue

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"io"
	"mime"
	"mime/multipart"
	netmail "net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const origMessage = "Received: from app1.example.org (10.0.0.5)\n  by hub.example.net with QMQP; 14 Mar 2025 15:09:26 -0000\n" +
	"From: Alice <alice@example.org>\nTo: bob@example.com\nSubject: quarterly report\n" +
	"Message-ID: <q1@example.org>\nDate: Fri, 14 Mar 2025 15:09:20 +0000\n\nThe body, which is not attached.\n"

// dsnScenario queues origMessage, drives its deliveries and returns the
// one notice the queue generated.
func dsnScenario(t *testing.T, opt Options, clk *fakeClock, sender string, rcpts []string,
	drive func(q *Queue, ds []*Delivery)) (mail.Envelope, []byte) {
	t.Helper()
	q := openT(t, t.TempDir(), opt)
	defer q.Close()
	id := putT(t, q, sender, []byte(origMessage), rcpts...)
	clk.Advance(time.Minute)
	drive(q, claimAll(q))
	rows, _ := q.List(context.Background())
	var notices []Row
	for _, r := range rows {
		if r.ID != id {
			notices = append(notices, r)
		}
	}
	if len(notices) != 1 {
		t.Fatalf("want one notice, got %+v", rows)
	}
	q.mu.Lock()
	m := q.msgs.get(notices[0].ID)
	q.mu.Unlock()
	rc, err := q.openBody(m)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return mail.Envelope{Sender: m.sender, Recipients: notices[0].Pending}, b
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "dsn", name+".eml")
	if *update {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\n--- got ---\n%s", path, got)
	}
}

// dsnReport is a parsed DSN.
type dsnReport struct {
	header   netmail.Header
	text     string
	perMsg   textproto.MIMEHeader
	perRcpt  []textproto.MIMEHeader
	original string
}

// parseDSN checks the structure RFC 3464 and RFC 6522 require.
func parseDSN(t *testing.T, raw []byte) *dsnReport {
	t.Helper()
	msg, err := netmail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("DSN is not a message: %v", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" || params["boundary"] == "" {
		t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	for _, h := range []string{"From", "To", "Subject", "Date", "Message-Id", "Auto-Submitted", "Mime-Version"} {
		if msg.Header.Get(h) == "" {
			t.Errorf("DSN lacks %s:", h)
		}
	}
	if _, err := msg.Header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
	rep := &dsnReport{header: msg.Header}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var types []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("multipart: %v", err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		types = append(types, ct)
		body, _ := io.ReadAll(p)
		switch ct {
		case "text/plain":
			rep.text = string(body)
		case "message/delivery-status":
			tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
			if rep.perMsg, err = tr.ReadMIMEHeader(); err != nil {
				t.Fatalf("per-message fields: %v", err)
			}
			for {
				h, err := tr.ReadMIMEHeader()
				if len(h) > 0 {
					rep.perRcpt = append(rep.perRcpt, h)
				}
				if err != nil {
					break
				}
			}
		case "text/rfc822-headers":
			rep.original = string(body)
		}
	}
	if strings.Join(types, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Fatalf("parts %v", types)
	}
	if rep.perMsg.Get("Reporting-MTA") != "dns; hub.example.net" || rep.perMsg.Get("Arrival-Date") == "" {
		t.Errorf("per-message fields %v", rep.perMsg)
	}
	for _, r := range rep.perRcpt {
		for _, f := range []string{"Final-Recipient", "Action", "Status", "Diagnostic-Code"} {
			if r.Get(f) == "" {
				t.Errorf("recipient block lacks %s: %v", f, r)
			}
		}
	}
	if !strings.HasPrefix(rep.original, "Received: from app1.example.org") || strings.Contains(rep.original, "The body") {
		t.Errorf("attached header %q", rep.original)
	}
	return rep
}

func dsnOptions() (Options, *fakeClock) {
	clk := newFakeClock()
	opt := testOptions(clk)
	opt.Postmaster = "postmaster@hub.example.net"
	return opt, clk
}

func recordAll(q *Queue, ds []*Delivery, st func(rcpt string) mail.Status) {
	for _, d := range ds {
		var rs []Result
		for _, r := range d.Recipients {
			rs = append(rs, Result{Recipient: r, Status: st(r), Route: "smtp://mx." + d.Destination, Host: "mx." + d.Destination})
		}
		q.Record(context.Background(), d, rs)
	}
}

func TestDSNPermanentFailure(t *testing.T) {
	opt, clk := dsnOptions()
	env, raw := dsnScenario(t, opt, clk, "alice@example.org", []string{"bob@example.com"}, func(q *Queue, ds []*Delivery) {
		recordAll(q, ds, func(string) mail.Status {
			return mail.Status{Class: mail.Permanent, Code: "5.1.1", Text: "<bob@example.com>: Recipient address rejected: User unknown", SMTP: 550}
		})
	})
	golden(t, "permanent", raw)
	if env.Sender != "" || env.Recipients[0] != "alice@example.org" {
		t.Errorf("envelope %+v", env)
	}
	rep := parseDSN(t, raw)
	r := rep.perRcpt[0]
	if r.Get("Final-Recipient") != "rfc822; bob@example.com" || r.Get("Action") != "failed" || r.Get("Status") != "5.1.1" ||
		r.Get("Remote-MTA") != "dns; mx.example.com" ||
		r.Get("Diagnostic-Code") != "smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown" {
		t.Errorf("recipient block %v", r)
	}
	if !strings.Contains(rep.text, "mx.example.com said: 550 5.1.1 <bob@example.com>: Recipient address rejected") {
		t.Errorf("remote reply not quoted:\n%s", rep.text)
	}
	if rep.header.Get("From") != "MAILER-DAEMON@hub.example.net" || rep.header.Get("To") != "<alice@example.org>" {
		t.Errorf("header %v", rep.header)
	}
}

func TestDSNLifetimeExpiry(t *testing.T) {
	opt, clk := dsnOptions()
	opt.Lifetime = 2 * 24 * time.Hour
	opt.DelayNotice = -1
	_, raw := dsnScenario(t, opt, clk, "alice@example.org", []string{"bob@example.com"}, func(q *Queue, ds []*Delivery) {
		clk.Advance(3 * 24 * time.Hour)
		recordAll(q, ds, func(string) mail.Status { return mail.Temp("4.4.1", "Connection timed out") })
	})
	golden(t, "expired", raw)
	rep := parseDSN(t, raw)
	r := rep.perRcpt[0]
	if r.Get("Status") != "5.4.7" || r.Get("Action") != "failed" || r.Get("Diagnostic-Code") != "smtp; 451 4.4.1 Connection timed out" {
		t.Errorf("recipient block %v", r)
	}
	if !strings.Contains(rep.text, "in the queue too long") {
		t.Errorf("no explanation:\n%s", rep.text)
	}
}

func TestDSNDelayNotice(t *testing.T) {
	opt, clk := dsnOptions()
	_, raw := dsnScenario(t, opt, clk, "alice@example.org", []string{"bob@example.com"}, func(q *Queue, ds []*Delivery) {
		clk.Advance(5 * time.Hour)
		recordAll(q, ds, func(string) mail.Status { return mail.Temp("4.2.2", "Mailbox full") })
	})
	golden(t, "delayed", raw)
	rep := parseDSN(t, raw)
	r := rep.perRcpt[0]
	if r.Get("Action") != "delayed" || r.Get("Status") != "4.2.2" || r.Get("Will-Retry-Until") == "" {
		t.Errorf("recipient block %v", r)
	}
	if rep.header.Get("Subject") != "delivery delay notice" {
		t.Errorf("subject %q", rep.header.Get("Subject"))
	}
}

func TestDSNVERPSender(t *testing.T) {
	opt, clk := dsnOptions()
	env, raw := dsnScenario(t, opt, clk, "list-owner-@lists.example.org-@[]", []string{"member@example.com"}, func(q *Queue, ds []*Delivery) {
		if got := ds[0].SenderFor("member@example.com"); got != "list-owner-member=example.com@lists.example.org" {
			t.Errorf("SenderFor = %q", got)
		}
		recordAll(q, ds, func(string) mail.Status {
			return mail.Status{Class: mail.Permanent, Code: "5.2.1", Text: "mailbox disabled", SMTP: 550}
		})
	})
	golden(t, "verp", raw)
	if env.Sender != "" || env.Recipients[0] != "list-owner-@lists.example.org" {
		t.Errorf("VERP bounce envelope %+v", env)
	}
	rep := parseDSN(t, raw)
	if rep.header.Get("To") != "<list-owner-@lists.example.org>" {
		t.Errorf("To %q", rep.header.Get("To"))
	}
}

func TestDSNMultipleRecipients(t *testing.T) {
	opt, clk := dsnOptions()
	opt.LeaseTime = 24 * time.Hour // the clock jumps while deliveries are out
	rcpts := []string{"bob@example.com", "carol@example.com", "dave@example.net", "odd user@example.net"}
	_, raw := dsnScenario(t, opt, clk, "alice@example.org", rcpts, func(q *Queue, ds []*Delivery) {
		clk.Advance(5 * time.Hour) // the deferred one is also due a delay notice
		recordAll(q, ds, func(r string) mail.Status {
			switch r {
			case "bob@example.com":
				return mail.Status{Class: mail.Permanent, Code: "5.1.1", Text: "no such user", SMTP: 550}
			case "carol@example.com":
				return mail.OK("ok")
			case "dave@example.net":
				return mail.Temp("4.4.1", "connection refused")
			}
			return mail.Status{Class: mail.Permanent, Code: "5.1.3", Text: "bad address syntax", SMTP: 553}
		})
	})
	golden(t, "multiple", raw)
	rep := parseDSN(t, raw)
	var got []string
	for _, r := range rep.perRcpt {
		got = append(got, r.Get("Final-Recipient")+" "+r.Get("Action")+" "+r.Get("Status"))
	}
	want := []string{"rfc822; bob@example.com failed 5.1.1", "rfc822; \"odd user\"@example.net failed 5.1.3", "rfc822; dave@example.net delayed 4.4.1"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("recipients\n%v\nwant\n%v", got, want)
	}
}

func TestDSNDoubleBounce(t *testing.T) {
	opt, clk := dsnOptions()
	env, raw := dsnScenario(t, opt, clk, "", []string{"alice@example.org"}, func(q *Queue, ds []*Delivery) {
		recordAll(q, ds, func(string) mail.Status {
			return mail.Status{Class: mail.Permanent, Code: "5.1.1", Text: "no such user", SMTP: 550}
		})
	})
	golden(t, "double", raw)
	if env.Sender != mail.DoubleBounceSender || env.Recipients[0] != "postmaster@hub.example.net" {
		t.Errorf("double bounce envelope %+v", env)
	}
	rep := parseDSN(t, raw)
	if !strings.Contains(rep.text, "the bounce bounced") {
		t.Errorf("text:\n%s", rep.text)
	}
}

// TestDSNHostileContent: nothing a remote host or sender controls can
// break the DSN's structure.
func TestDSNHostileContent(t *testing.T) {
	now := time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)
	d := &dsn{hostname: "hub.example.net", id: "01jpak7y3g003", origID: "01jpak7y3g002", to: "a@b\nBcc: evil@x",
		arrival: now, now: now, retryUntil: now,
		header: []byte("Subject: x\n--qmgate-01jpak7y3g003\nContent-Type: text/html\n"),
		rcpts: []dsnRcpt{{addr: "x@y\r\nAction: delivered", action: actionFailed,
			status: mail.Status{Class: mail.Permanent, Text: "evil\r\n\r\n--qmgate-01jpak7y3g003--"},
			last:   &attempt{at: now, host: "mx\nX: y", status: mail.Status{Class: mail.Permanent, Text: "a\nb"}}}}}
	raw := d.render()
	rep := parseDSN2(t, raw)
	if len(rep.perRcpt) != 1 || rep.perRcpt[0].Get("Action") != "failed" {
		t.Fatalf("recipient blocks %v", rep.perRcpt)
	}
	if rep.header.Get("Bcc") != "" {
		t.Fatal("header injection through the bounce address")
	}
}

// parseDSN2 is parseDSN without the checks specific to origMessage.
func parseDSN2(t *testing.T, raw []byte) *dsnReport {
	t.Helper()
	msg, err := netmail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	_, params, _ := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	rep := &dsnReport{header: msg.Header}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	n := 0
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		n++
		body, _ := io.ReadAll(p)
		if p.Header.Get("Content-Type") == "message/delivery-status" {
			tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
			tr.ReadMIMEHeader()
			for {
				h, err := tr.ReadMIMEHeader()
				if len(h) > 0 {
					rep.perRcpt = append(rep.perRcpt, h)
				}
				if err != nil {
					break
				}
			}
		}
	}
	if n != 3 {
		t.Fatalf("%d parts, want 3:\n%s", n, raw)
	}
	return rep
}

// TestDSNQuotesRemoteReplyOnce: a reply the SMTP client recorded as
// "remote host said: 550 5.1.1 ..." is quoted once in Diagnostic-Code, and a
// next hop recorded as a URL is named by its host alone in Remote-MTA.
func TestDSNQuotesRemoteReplyOnce(t *testing.T) {
	opt, clk := dsnOptions()
	_, raw := dsnScenario(t, opt, clk, "alice@example.org", []string{"bob@example.com"}, func(q *Queue, ds []*Delivery) {
		for _, d := range ds {
			q.Record(context.Background(), d, []Result{{Recipient: d.Recipients[0],
				Status: mail.Status{Class: mail.Permanent, Code: "5.1.1", Text: "remote host said: 550 5.1.1 no such user", SMTP: 550},
				Route:  "smtp://127.0.0.1:24027", Host: "smtp://127.0.0.1:24027"}})
		}
	})
	r := parseDSN(t, raw).perRcpt[0]
	if got := r.Get("Diagnostic-Code"); got != "smtp; 550 5.1.1 no such user" {
		t.Errorf("Diagnostic-Code: %q", got)
	}
	if got := r.Get("Remote-MTA"); got != "dns; 127.0.0.1" {
		t.Errorf("Remote-MTA: %q", got)
	}
	if !strings.Contains(string(raw), "127.0.0.1 said: 550 5.1.1 no such user\n") {
		t.Errorf("text part:\n%s", raw)
	}
}

func TestRemoteMTA(t *testing.T) {
	for in, want := range map[string]string{
		"mx.example.com":             "mx.example.com",
		"smtp://mx.example.com:25":   "mx.example.com",
		"qmtp://[::1]:209":           "::1",
		"https://hook.example/x?y=1": "hook.example",
		"mx.example.com:2525":        "mx.example.com",
		"":                           "",
	} {
		if got := remoteMTA(in); got != want {
			t.Errorf("remoteMTA(%q) = %q, want %q", in, got, want)
		}
	}
}
