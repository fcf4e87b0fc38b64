//go:build linux

package reliability

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/smtp"
)

// Wire builders for hand-made sessions.

// qmtpPackage is one QMTP package in LF mode.
func qmtpPackage(body []byte, sender string, rcpts ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%d:\n", len(body)+1)
	b.Write(body)
	b.WriteString(",")
	b.WriteString(netstr(sender))
	var rl strings.Builder
	for _, r := range rcpts {
		rl.WriteString(netstr(r))
	}
	b.WriteString(netstr(rl.String()))
	return b.Bytes()
}

// qmqpRequest is one QMQP request.
func qmqpRequest(body []byte, sender string, rcpts ...string) []byte {
	var in strings.Builder
	in.WriteString(strconv.Itoa(len(body)) + ":")
	in.Write(body)
	in.WriteString(",")
	in.WriteString(netstr(sender))
	for _, r := range rcpts {
		in.WriteString(netstr(r))
	}
	return []byte(netstr(in.String()))
}

// smtpData renders a message for DATA: CRLF line ends, dot-stuffed, with
// the terminating dot.
func smtpData(body []byte) []byte {
	var b bytes.Buffer
	for _, line := range strings.SplitAfter(string(body), "\n") {
		if line == "" {
			continue
		}
		line = strings.TrimSuffix(line, "\n")
		if strings.HasPrefix(line, ".") {
			b.WriteString(".")
		}
		b.WriteString(line + "\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// exchangeResult is what a hand-made session got back.
type exchangeResult struct {
	Out     []byte
	Closed  bool          // the server closed (EOF or reset) before the deadline
	Elapsed time.Duration // until the close, or the deadline
}

// exchange connects to addr (from src when not empty), writes input while
// reading, optionally half-closes, and reads until the server closes or
// the deadline passes.
func exchange(addr, src string, input []byte, halfClose bool, deadline time.Duration) exchangeResult {
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	start := time.Now()
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return exchangeResult{Out: []byte("dial: " + err.Error()), Closed: true}
	}
	defer c.Close()
	c.SetDeadline(start.Add(deadline))
	go func() {
		c.Write(input)
		if halfClose {
			c.(*net.TCPConn).CloseWrite()
		}
	}()
	var out bytes.Buffer
	_, err = io.Copy(&out, c)
	r := exchangeResult{Out: out.Bytes(), Elapsed: time.Since(start)}
	var ne net.Error
	r.Closed = err == nil || !(asNetErr(err, &ne) && ne.Timeout())
	return r
}

func asNetErr(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}

// replies parses QMTP/QMQP reply netstrings; garbage after them is
// returned as rest.
func replies(out []byte) (rs []string, rest []byte) {
	br := bufio.NewReader(bytes.NewReader(out))
	for {
		s, err := readNetstring(br, 1<<20)
		if err != nil {
			rest, _ = io.ReadAll(br)
			return rs, rest
		}
		rs = append(rs, string(s))
	}
}

func anyAccept(rs []string) bool {
	for _, r := range rs {
		if strings.HasPrefix(r, "K") {
			return true
		}
	}
	return false
}

// smtpAccepted reports whether an SMTP transcript holds a message
// acceptance (qmgate's "250 ok <time> qp <id>").
func smtpAccepted(out []byte) int { return bytes.Count(out, []byte(" qp ")) }

// canary sends a message over each protocol in turn, every interval, from
// its own source address, and records what it is told: the service must
// go on while the battery runs.
type canary struct {
	t     *testing.T
	led   *ledger
	stop  atomic.Bool
	wg    sync.WaitGroup
	mu    sync.Mutex
	fails []string
	sent  atomic.Int64
	slow  time.Duration // longest exchange
}

func startCanary(t *testing.T, qmtpA, qmqpA, smtpA, src, domain string, led *ledger) *canary {
	cn := &canary{t: t, led: led}
	cn.wg.Add(1)
	go func() {
		defer cn.wg.Done()
		local := &net.TCPAddr{IP: net.ParseIP(src)}
		dialer := &net.Dialer{LocalAddr: local}
		qc := &qmtp.Client{Dialer: dialer, ConnectTimeout: 10 * time.Second, IOTimeout: 20 * time.Second}
		pc := &qmqp.Client{Servers: []string{qmqpA}, Dialer: dialer, ConnectTimeout: 10 * time.Second, IOTimeout: 20 * time.Second}
		sc := &smtp.Client{TLS: smtp.TLSNone, LocalName: "canary.test", ErrorLog: quietLog, DialContext: dialer.DialContext,
			ConnectTimeout: 10 * time.Second, CommandTimeout: 20 * time.Second, DataTimeout: 20 * time.Second}
		for i := 0; !cn.stop.Load(); i++ {
			marker := fmt.Sprintf("canary-%d", i)
			body := makeBody(marker)
			rcpt := "canary@" + domain
			env := mail.Envelope{Sender: "canary@src.test", Recipients: []string{rcpt}}
			led.attempt(marker)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			t0 := time.Now()
			var st mail.Status
			proto := []string{"QMTP", "QMQP", "SMTP"}[i%3]
			switch proto {
			case "QMTP":
				res, err := qc.Send(ctx, qmtpA, &qmtp.Message{Envelope: env, Body: bytes.NewReader(body), Size: int64(len(body))})
				st = mail.StatusOf(err)
				if len(res) == 1 && len(res[0]) == 1 {
					st = res[0][0]
				}
			case "QMQP":
				res, _ := pc.Send(ctx, env, bytes.NewReader(body), int64(len(body)))
				st = res.Status
			case "SMTP":
				conn, err := sc.Dial(ctx, "smtp://"+smtpA)
				st = mail.StatusOf(err)
				if err == nil {
					sts, err := conn.Send(ctx, env, bytes.NewReader(body))
					st = mail.StatusOf(err)
					if len(sts) == 1 {
						st = sts[0]
					}
					conn.Close()
				}
			}
			cancel()
			took := time.Since(t0)
			led.result(proto, marker, rcpt, st)
			cn.sent.Add(1)
			cn.mu.Lock()
			cn.slow = max(cn.slow, took)
			if !st.IsAccept() {
				cn.fails = append(cn.fails, fmt.Sprintf("%s %s after %s: %s", proto, marker, took.Round(time.Millisecond), st.Reply()))
			}
			cn.mu.Unlock()
			time.Sleep(150 * time.Millisecond)
		}
	}()
	return cn
}

// finish stops the canary and fails the test if any message was refused.
func (cn *canary) finish() {
	cn.stop.Store(true)
	testpeer.Wait(cn.t, "the canary's last message", stuckAfter, &cn.wg)
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if len(cn.fails) > 0 {
		cn.t.Errorf("the canary was refused %d times while the battery ran, e.g. %v", len(cn.fails), cn.fails[:min(5, len(cn.fails))])
	}
}

func (cn *canary) summary() string {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return fmt.Sprintf("canary: %d messages over QMTP/QMQP/SMTP during the run, %d refused, slowest %s", cn.sent.Load(), len(cn.fails), cn.slow.Round(time.Millisecond))
}
