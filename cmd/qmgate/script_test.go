package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
)

// TestMain lets the test binary be the qmgate binary in scripts: testscript
// puts "qmgate" (and the names the binary answers to) on the scripts' PATH.
func TestMain(m *testing.M) {
	main := func() { os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr)) }
	testscript.Main(m, map[string]func(){
		"qmgate":      main,
		"sendmail":    main,
		"mailq":       main,
		"qmail-queue": main,
		"qmail-qmqpc": main,
		"newaliases":  main,
	})
}

// TestScripts runs testdata/script/*.txtar: one CLI scenario per file. The
// environment is clean (no QMGATE_CONFIG); scripts name their configuration.
// Extra commands:
//
//	qmqpsink [-unix PATH|-addr H:P] NAME REPLY
//	                                   start a QMQP server answering REPLY
//	                                   (e.g. "Kok", "Zbusy (#4.3.0)"); $NAME
//	                                   is its address; message N is kept as
//	                                   NAME.N.msg and NAME.N.env
//	                                   ("F<sender>" then "T<rcpt>" lines)
//	qmqpsink-stop NAME                 stop it (the hub goes down)
//	waitsink NAME N                    wait (up to 60 s) until sink NAME
//	                                   has kept N messages
//	waitsocket PATH                    wait (up to 30 s) until the unix
//	                                   socket PATH accepts connections
//	deadport NAME                      $NAME is a loopback address nobody
//	                                   listens on, reserved for the script
//	subst FILE...                      in place: $VAR and ${VAR} from the
//	                                   script's environment, <CR> to a CR,
//	                                   and "<EOF>" plus its newline removed
//	                                   (a last line without a newline)
//	signalpid SIG FILE                 send SIG (HUP, TERM, INT) to the process
//	                                   whose id FILE holds (a background
//	                                   command started as
//	                                   sh -c 'echo $$ >FILE; exec ...')
//	scrub FILE...                      replace what changes from run to run
//	                                   (dates, Message-ID, pids, uids, queue
//	                                   ids) with fixed words, in place
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(e *testscript.Env) error {
			e.Setenv("QMGATE_CONFIG", "")
			e.Setenv("TMPDIR", e.WorkDir)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"qmqpsink":      cmdQMQPSink,
			"qmqpsink-stop": cmdQMQPSinkStop,
			"waitsink":      cmdWaitSink,
			"waitsocket":    cmdWaitSocket,
			"deadport":      cmdDeadPort,
			"scrub":         cmdScrub,
			"subst":         cmdSubst,
			"freeport":      cmdFreePort,
			"waitport":      cmdWaitPort,
			"waitfiles":     cmdWaitFiles,
			"waitstdout":    cmdWaitStdout,
			"asroot":        cmdAsRoot,
			"signalpid":     cmdSignalPID,
		},
		Condition: scriptCondition,
		// As root, `qmgate serve` drops to the user nobody: the work
		// directories must be reachable for it.
		WorkdirRoot: scriptWorkdirRoot(),
	})
}

type sink struct {
	srv  *qmqp.Server
	mu   sync.Mutex
	n    int // requests seen
	kept int // messages whose .msg and .env are written
}

var (
	sinksMu sync.Mutex
	sinks   = map[*testscript.TestScript]map[string]*sink{}
)

func cmdQMQPSink(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! qmqpsink")
	}
	network, addr := "tcp", "127.0.0.1:0"
	if len(args) == 4 && args[0] == "-unix" {
		network, addr = "unix", ts.MkAbs(args[1])
		args = args[2:]
	} else if len(args) == 4 && args[0] == "-addr" {
		addr = args[1]
		args = args[2:]
	}
	if len(args) != 2 {
		ts.Fatalf("usage: qmqpsink [-unix PATH|-addr HOST:PORT] NAME REPLY")
	}
	name, reply := args[0], mail.ParseReply([]byte(args[1]))
	l, err := net.Listen(network, addr)
	ts.Check(err)
	s := &sink{}
	dir := ts.Getenv("WORK")
	s.srv = &qmqp.Server{
		AllowFunc: func(*mail.ConnInfo) bool { return true },
		ErrorLog:  slog.New(slog.DiscardHandler),
		Handler: qmqp.HandlerFunc(func(ctx context.Context, req *qmqp.Request) mail.Status {
			s.mu.Lock()
			s.n++
			n := s.n
			s.mu.Unlock()
			base := filepath.Join(dir, fmt.Sprintf("%s.%d", name, n))
			f, err := os.Create(base + ".msg")
			if err != nil {
				return mail.StatusTempFailure
			}
			_, err = io.Copy(f, req.Body)
			f.Close()
			env, eerr := req.Envelope()
			if eerr != nil {
				return mail.StatusOf(eerr)
			}
			if err != nil {
				return mail.StatusTempFailure
			}
			var b strings.Builder
			b.WriteString("F" + env.Sender + "\n")
			for _, r := range env.Recipients {
				b.WriteString("T" + r + "\n")
			}
			os.WriteFile(base+".env", []byte(b.String()), 0o644)
			s.mu.Lock()
			s.kept++
			s.mu.Unlock()
			return reply
		}),
	}
	go s.srv.Serve(l)
	sinksMu.Lock()
	if sinks[ts] == nil {
		sinks[ts] = map[string]*sink{}
		ts.Defer(func() {
			sinksMu.Lock()
			defer sinksMu.Unlock()
			for _, s := range sinks[ts] {
				s.srv.Close()
			}
			delete(sinks, ts)
		})
	}
	sinks[ts][name] = s
	sinksMu.Unlock()
	a := l.Addr().String()
	if network == "unix" {
		a = "unix:" + addr
	}
	ts.Setenv(name, a)
}

func cmdQMQPSinkStop(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: qmqpsink-stop NAME")
	}
	sinksMu.Lock()
	s := sinks[ts][args[0]]
	sinksMu.Unlock()
	if s == nil {
		ts.Fatalf("no qmqpsink %s", args[0])
	}
	s.srv.Close()
}

func cmdDeadPort(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: deadport NAME")
	}
	ts.Setenv(args[0], reservePort(ts))
}

// scrubbers replace the parts of generated mail that differ between runs.
var scrubbers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`(?m)^(Date: |Resent-Date: ).*$`), "${1}DATE"},
	{regexp.MustCompile(`(?m)^(Message-ID: |Resent-Message-ID: )<[^@>]*@`), "${1}<ID@"},
	{regexp.MustCompile(`\(qmgate (sendmail )?\d+ invoked by uid \d+\); .*`), "(qmgate ${1}PID invoked by uid UID); DATE"},
	{regexp.MustCompile(`(?m)( with (QMQP|QMTP|SMTP|ESMTP)); .*$`), "${1}; DATE"},
	{regexp.MustCompile(`\b\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d -0000`), "DATE"},
	{regexp.MustCompile(`ok \d+ qp \d+`), "ok TIME qp PID"},
	{regexp.MustCompile(`queued (locally )?as [0-9a-z]+`), "queued ${1}as QUEUEID"},
}

func cmdScrub(ts *testscript.TestScript, neg bool, args []string) {
	for _, f := range args {
		p := ts.MkAbs(f)
		b, err := os.ReadFile(p)
		ts.Check(err)
		s := string(b)
		for _, sc := range scrubbers {
			s = sc.re.ReplaceAllString(s, sc.with)
		}
		ts.Check(os.WriteFile(p, []byte(s), 0o644))
	}
}

func cmdSubst(ts *testscript.TestScript, neg bool, args []string) {
	for _, f := range args {
		p := ts.MkAbs(f)
		b, err := os.ReadFile(p)
		ts.Check(err)
		s := os.Expand(string(b), ts.Getenv)
		s = strings.ReplaceAll(s, "<CR>", "\r")
		s = strings.ReplaceAll(s, "<EOF>\n", "")
		ts.Check(os.WriteFile(p, []byte(s), 0o644))
	}
}

func cmdWaitSink(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: waitsink NAME N")
	}
	want, err := strconv.Atoi(args[1])
	ts.Check(err)
	sinksMu.Lock()
	s := sinks[ts][args[0]]
	sinksMu.Unlock()
	if s == nil {
		ts.Fatalf("no qmqpsink %s", args[0])
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		s.mu.Lock()
		n := s.kept
		s.mu.Unlock()
		if n >= want {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("sink %s kept %d messages, want %d", args[0], n, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cmdWaitSocket(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: waitsocket PATH")
	}
	p := ts.MkAbs(args[0])
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("unix", p, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s never accepted a connection: %v", p, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cmdSignalPID(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: signalpid HUP|TERM|INT FILE")
	}
	sigs := map[string]syscall.Signal{"HUP": syscall.SIGHUP, "TERM": syscall.SIGTERM, "INT": syscall.SIGINT}
	sig, ok := sigs[args[0]]
	if !ok {
		ts.Fatalf("signalpid: unknown signal %q", args[0])
	}
	pid, err := strconv.Atoi(strings.TrimSpace(ts.ReadFile(args[1])))
	ts.Check(err)
	ts.Check(syscall.Kill(pid, sig))
}
