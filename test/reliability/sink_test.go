//go:build linux

package reliability

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/smtp"
)

// sink is a next hop run by the test: a QMTP or SMTP server that records
// every recipient it accepted, when, and on which connection, so that kills
// of the daemon mid-delivery can be judged.
type sink struct {
	t     *testing.T
	proto string
	l     net.Listener
	// Delay, when set, runs before each acceptance: it stretches deliveries
	// so that kills land inside them.
	Delay func() time.Duration
	// Refuse, when set and true, makes the sink answer with a temporary
	// failure instead of recording.
	Refuse atomic.Bool

	mu       sync.Mutex
	got      []sinkCopy
	accepted map[string]time.Time // connKey → accept time
	runs     map[string]int       // connKey → daemon run
	runAddrs []string             // per-run listeners: runAddrs[i] for run i+1
	corrupt  []string
	inflight atomic.Int32 // handler calls under way
	qsrv     *qmtp.Server
	ssrv     *smtp.Server
}

// sinkCopy is one recipient accepted by a sink.
type sinkCopy struct {
	Key      rcptKey
	Sender   string
	ConnAt   time.Time // when the connection that carried it was accepted
	At       time.Time // when the sink accepted it (just before replying)
	Helo     string    // SMTP only: the delivering daemon's EHLO name
	Received string    // the top Received line
	Remote   string    // the connection's remote address
	Run      int       // the daemon run that made the connection (with Daemon set)
}

// acceptLog wraps a listener to remember when each connection came, and
// for per-run listeners which daemon run made it.
type acceptLog struct {
	net.Listener
	s   *sink
	run int
}

func (a acceptLog) Accept() (net.Conn, error) {
	c, err := a.Listener.Accept()
	if err == nil {
		k := connKey(c.LocalAddr(), c.RemoteAddr())
		a.s.mu.Lock()
		a.s.accepted[k] = time.Now()
		a.s.runs[k] = a.run
		a.s.mu.Unlock()
	}
	return c, err
}

// connKey names a connection by both its ends. The remote address alone is
// not enough: a killed run's connection may still be served when the next
// run's connection, to that run's own listener, gets the same source port
// from the kernel.
func connKey(local, remote net.Addr) string {
	return local.String() + " " + remote.String()
}

// listenPerRun opens one more listener for each of n daemon runs. The
// daemon's configuration names addrFor(run) as the next hop, so the
// listener a connection arrives on tells which run made it, however late
// the sink gets to it (a killed run's pipelined packages sit in socket
// buffers and are read after its death).
func (s *sink) listenPerRun(n int) {
	s.t.Helper()
	host, _, _ := net.SplitHostPort(s.l.Addr().String())
	for run := 1; run <= n; run++ {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			s.t.Fatal(err)
		}
		s.runAddrs = append(s.runAddrs, l.Addr().String())
		al := acceptLog{l, s, run}
		if s.qsrv != nil {
			go s.qsrv.Serve(al)
		} else {
			go s.ssrv.Serve(al)
		}
		s.t.Cleanup(func() { l.Close() })
	}
}

// addrFor returns the listener for a daemon run.
func (s *sink) addrFor(run int) string {
	if run < 1 || run > len(s.runAddrs) {
		s.t.Fatalf("no sink listener for run %d", run)
	}
	return s.runAddrs[run-1]
}

func newSink(t *testing.T, proto, addr string) *sink {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{t: t, proto: proto, l: l, accepted: map[string]time.Time{}, runs: map[string]int{}}
	al := acceptLog{l, s, 0}
	switch proto {
	case "qmtp":
		s.qsrv = &qmtp.Server{Handler: qmtp.HandlerFunc(s.serveQMTP), Hostname: "sink.test", ErrorLog: quietLog,
			MaxConns: -1, MaxConnsPerIP: -1}
		go s.qsrv.Serve(al)
	case "smtp":
		s.ssrv = &smtp.Server{Handler: smtpSink{s}, Hostname: "sink.test", ErrorLog: quietLog,
			MaxConns: -1, MaxConnsPerIP: -1}
		go s.ssrv.Serve(al)
	default:
		t.Fatalf("sink protocol %q", proto)
	}
	t.Cleanup(s.close)
	return s
}

func (s *sink) addr() string { return s.l.Addr().String() }

func (s *sink) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.qsrv != nil {
		s.qsrv.Shutdown(ctx)
	}
	if s.ssrv != nil {
		s.ssrv.Shutdown(ctx)
	}
	s.l.Close()
}

// take checks and records one accepted message.
func (s *sink) take(c *mail.ConnInfo, env mail.Envelope, body []byte) mail.Status {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	if s.Delay != nil {
		time.Sleep(s.Delay())
	}
	if s.Refuse.Load() {
		return mail.Temp("4.3.0", "sink refusing for now")
	}
	marker, ok := parseDelivered(body)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok {
		s.corrupt = append(s.corrupt, string(body[:min(len(body), 300)]))
		return mail.OK("") // accept and report it; a refusal would only hide it
	}
	recv, _, _ := strings.Cut(string(body), "\n")
	k := connKey(c.LocalAddr, c.RemoteAddr)
	for _, r := range env.Recipients {
		s.got = append(s.got, sinkCopy{Key: rcptKey{marker, r}, Sender: env.Sender, ConnAt: s.accepted[k],
			At: now, Helo: c.Helo, Received: recv, Remote: c.RemoteAddr.String(), Run: s.runs[k]})
	}
	return mail.OK("")
}

func (s *sink) serveQMTP(ctx context.Context, req *qmtp.Request) []mail.Status {
	body, err := io.ReadAll(req.Body)
	env, eerr := req.Envelope()
	if err != nil || eerr != nil {
		return nil
	}
	st := s.take(req.Conn, env, body)
	out := make([]mail.Status, len(env.Recipients))
	for i := range out {
		out[i] = st
	}
	return out
}

type smtpSink struct{ s *sink }

func (smtpSink) Sender(ctx context.Context, c *mail.ConnInfo, from string) mail.Status {
	return mail.OK("")
}

func (smtpSink) Recipient(ctx context.Context, c *mail.ConnInfo, from, rcpt string) mail.Status {
	return mail.OK("")
}

func (k smtpSink) Deliver(ctx context.Context, c *mail.ConnInfo, env mail.Envelope, body io.Reader) mail.Status {
	b, err := io.ReadAll(body)
	if err != nil {
		return mail.Temp("4.3.0", "read failed")
	}
	return k.s.take(c, env, b)
}

func (s *sink) copies() []sinkCopy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkCopy(nil), s.got...)
}

func (s *sink) corruptCopies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.corrupt...)
}

// sinkSet gathers the copies of several sinks into a deliveredSet.
func sinkSet(sinks ...*sink) *deliveredSet {
	ds := &deliveredSet{count: map[rcptKey]int{}, copies: map[rcptKey][]copyInfo{}}
	for _, s := range sinks {
		for _, c := range s.copies() {
			ds.count[c.Key]++
		}
		ds.corrupt = append(ds.corrupt, s.corruptCopies()...)
	}
	return ds
}

// runOfHelo extracts N from an EHLO name "deliver-N.test".
func runOfHelo(helo string) int {
	s := strings.TrimPrefix(helo, "deliver-")
	s, _, _ = strings.Cut(s, ".")
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}
