//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

func (h *Harness) memory() *Section {
	s := &Section{}
	z := h.sizes
	s.printf("Resident memory of the `qmgate serve` process from /proc/PID/status: VmRSS now and VmHWM, its peak since start.\n\n")

	// Idle connections, one fresh daemon per protocol.
	s.printf("**%d idle connections.** The harness opens them from loopback addresses and leaves them silent (an SMTP client reads the greeting first); "+
		"the figure is taken once the daemon reports them all open (`qmgate_sessions_open`) and a second has passed.\n\n", z.IdleConns)
	rows := [][]string{{"protocol", "connections", "RSS before", "RSS with them open", "peak (VmHWM)", "per connection", "target"}}
	var worst int64
	var worstProto string
	for _, proto := range []string{"smtp", "qmtp", "qmqp"} {
		q, err := h.startQmgate("idle-"+proto, QmgateOpts{Route: "discard:"})
		h.check(err)
		time.Sleep(500 * time.Millisecond)
		m0 := q.Memory()
		addr := map[string]string{"smtp": q.SMTP, "qmtp": q.QMTP, "qmqp": q.QMQP}[proto]
		conns, err := openIdle(addr, z.IdleConns, proto == "smtp")
		if err != nil {
			closeAll(conns)
			h.fail("opening %d idle %s connections: %v (file limit %d)", z.IdleConns, proto, err, fileLimit())
		}
		open := int64(0)
		testpeer.Poll(time.Minute, 50*time.Millisecond, func() bool {
			open = q.gauge("qmgate_sessions_open", proto)
			return open >= int64(len(conns))
		})
		time.Sleep(time.Second)
		m1 := q.Memory()
		closeAll(conns)
		q.Stop()
		per := float64(m1.RSS-m0.RSS) / float64(max(len(conns), 1)) / 1024
		rows = append(rows, []string{strings.ToUpper(proto), fmt.Sprintf("%d (server counted %d)", len(conns), open), mib(m0.RSS), mib(m1.RSS), mib(m1.HWM),
			fmt.Sprintf("%.1f KiB", per), passFail(m1.HWM < 256<<20)})
		if m1.HWM > worst {
			worst, worstProto = m1.HWM, strings.ToUpper(proto)
		}
		h.logf("   %d idle %s connections: RSS %s → %s, peak %s", len(conns), proto, mib(m0.RSS), mib(m1.RSS), mib(m1.HWM))
	}
	s.table(rows)
	s.target(Target{Name: fmt.Sprintf("%d idle connections: peak RSS < 256 MiB", z.IdleConns), Want: "< 256 MiB",
		Got: fmt.Sprintf("%s (worst: %s)", mib(worst), worstProto), Pass: worst > 0 && worst < 256<<20,
		Limit: fmt.Sprintf("%s sessions cost %s at their peak; see the per-connection column.", worstProto, mib(worst))})

	// One huge message, SMTP in, QMTP out.
	sink, err := h.startQMTPSink(freePort())
	h.check(err)
	q, err := h.startQmgate("big", QmgateOpts{Route: "qmtp://" + sink.Addr, MaxMessageBytes: 2*z.BigMessage + (64 << 20)})
	h.check(err)
	t0 := time.Now()
	err = sendBigSMTP(q.SMTP, z.BigMessage)
	accepted := time.Since(t0)
	if err != nil {
		h.fail("sending the %s message: %v\n%s", mib(z.BigMessage), err, q.Proc.Tail(2000))
	}
	var st QMTPStats
	ok := testpeer.Poll(10*time.Minute, 50*time.Millisecond, func() bool {
		st, _ = sink.QMTPStats()
		return st.Messages >= 1
	})
	relayed := time.Since(t0)
	m := q.Memory()
	h.addCheck(Check{What: fmt.Sprintf("%s message: SMTP 250 → qmtp-sink", mib(z.BigMessage)), Acked: 1, Received: st.Messages,
		OK: ok && st.Messages == 1 && st.Bytes >= z.BigMessage*999/1000})
	h.logf("   %s message relayed in %v (accepted after %v): peak RSS %s, sink got %d bytes", mib(z.BigMessage), relayed.Round(time.Millisecond),
		accepted.Round(time.Millisecond), mib(m.HWM), st.Bytes)
	q.Stop()
	s.printf("**One %s message, SMTP → queue → QMTP.** The harness streams it over SMTP (lines of 998 bytes) to a daemon whose route is "+
		"`qmtp://` bench/qmtp-sink; the figure is the daemon's peak once the sink has the whole message.\n\n", mib(z.BigMessage))
	s.table([][]string{
		{"message", "accepted (250) after", "at the sink after", "bytes at the sink", "peak RSS (VmHWM)", "target"},
		{mib(z.BigMessage), secs(accepted), secs(relayed), fmt.Sprint(st.Bytes), mib(m.HWM), passFail(m.HWM < 64<<20)},
	})
	s.target(Target{Name: fmt.Sprintf("%s relay SMTP → queue → QMTP: peak RSS < 64 MiB", mib(z.BigMessage)), Want: "< 64 MiB",
		Got: mib(m.HWM), Pass: ok && m.HWM > 0 && m.HWM < 64<<20,
		Limit: fmt.Sprintf("the daemon's peak was %s while relaying one %s message.", mib(m.HWM), mib(z.BigMessage))})
	return s
}

// openIdle opens n connections to addr, spread over loopback source
// addresses so the ephemeral ports of one address never run out. With
// greet it reads each server's first line.
func openIdle(addr string, n int, greet bool) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%200))}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return conns, err
		}
		conns = append(conns, c)
	}
	if greet {
		for _, c := range conns {
			c.SetReadDeadline(time.Now().Add(time.Minute))
			if _, err := bufio.NewReaderSize(c, 512).ReadString('\n'); err != nil {
				return conns, fmt.Errorf("greeting: %w", err)
			}
			c.SetReadDeadline(time.Time{})
		}
	}
	return conns, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// sendBigSMTP sends one message of size bytes (headers included) over SMTP,
// generated as it goes.
func sendBigSMTP(addr string, size int64) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Minute))
	br := bufio.NewReader(c)
	bw := bufio.NewWriterSize(c, 256<<10)
	expect := func(code string) error {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return err
			}
			if !strings.HasPrefix(line, code) {
				return fmt.Errorf("want %s, got %q", code, strings.TrimSpace(line))
			}
			if len(line) < 4 || line[3] != '-' {
				return nil
			}
		}
	}
	cmd := func(line, code string) error {
		if _, err := bw.WriteString(line + "\r\n"); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		return expect(code)
	}
	if err := expect("220"); err != nil {
		return err
	}
	for _, step := range [][2]string{{"EHLO bench.test", "250"}, {"MAIL FROM:<" + benchSender + ">", "250"}, {"RCPT TO:<" + benchRcpt + ">", "250"}, {"DATA", "354"}} {
		if err := cmd(step[0], step[1]); err != nil {
			return fmt.Errorf("%s: %w", step[0], err)
		}
	}
	hdr := "From: <" + benchSender + ">\r\nTo: <" + benchRcpt + ">\r\nSubject: one big message\r\n\r\n"
	bw.WriteString(hdr)
	line := strings.Repeat("X", 998) + "\r\n"
	left := size - int64(len(hdr))
	for left > 0 {
		chunk := line
		if left < int64(len(line)) {
			chunk = strings.Repeat("Y", int(max(left-2, 0))) + "\r\n"
		}
		if _, err := io.WriteString(bw, chunk); err != nil {
			return err
		}
		left -= int64(len(chunk))
	}
	if err := cmd(".", "250"); err != nil {
		return fmt.Errorf("end of data: %w", err)
	}
	return cmd("QUIT", "221")
}
