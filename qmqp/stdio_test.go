package qmqp

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// TestMain doubles as a tcpserver child: with QMQP_TEST_STDIO set, the test
// binary serves one QMQP session on stdin/stdout, as "qmgate qmqpd" does
// under tcpserver, and writes what it accepted into that directory.
func TestMain(m *testing.M) {
	if dir := os.Getenv("QMQP_TEST_STDIO"); dir != "" {
		os.Exit(stdioChild(dir))
	}
	os.Exit(m.Run())
}

// tcpEnvInfo builds the ConnInfo from tcpserver's environment
// (TCPREMOTEIP, TCPREMOTEPORT, TCPREMOTEHOST, TCPREMOTEINFO, TCPLOCALIP,
// TCPLOCALPORT, TCPLOCALHOST).
func tcpEnvInfo() *mail.ConnInfo {
	addr := func(ip, port string) net.Addr {
		p, _ := strconv.Atoi(os.Getenv(port))
		if a := net.ParseIP(os.Getenv(ip)); a != nil {
			return &net.TCPAddr{IP: a, Port: p}
		}
		return nil
	}
	return &mail.ConnInfo{
		RemoteAddr: addr("TCPREMOTEIP", "TCPREMOTEPORT"),
		LocalAddr:  addr("TCPLOCALIP", "TCPLOCALPORT"),
		RemoteHost: os.Getenv("TCPREMOTEHOST"),
		RemoteInfo: os.Getenv("TCPREMOTEINFO"),
		LocalHost:  os.Getenv("TCPLOCALHOST"),
	}
}

func stdioChild(dir string) int {
	// The socket is on fd 0 and 1: as a net.Conn it has deadlines and a
	// half-close.
	var rw io.ReadWriter = struct {
		io.Reader
		io.Writer
	}{os.Stdin, os.Stdout}
	if c, err := net.FileConn(os.Stdin); err == nil {
		rw = c
	}
	s := &Server{
		Allow:    loopback,
		Hostname: "stdio.example",
		Handler: HandlerFunc(func(ctx context.Context, req *Request) mail.Status {
			body, err := io.ReadAll(req.Body)
			if err != nil {
				req.Envelope()
				return mail.StatusOf(err)
			}
			env, err := req.Envelope()
			if err != nil {
				return mail.StatusOf(err)
			}
			out := fmt.Sprintf("%s\n%s\n%s", env.Sender, strings.Join(env.Recipients, ","), body)
			if err := os.WriteFile(filepath.Join(dir, "msg"), []byte(out), 0o644); err != nil {
				return mail.StatusQueueTrouble
			}
			return mail.OK("ok via stdio")
		}),
	}
	if err := s.ServeConn(context.Background(), rw, tcpEnvInfo()); err != nil {
		return 100
	}
	return 0
}

// TestServeConnUnderTcpserver runs the server as tcpserver's child on
// stdin/stdout and sends it a message with the client.
func TestServeConnUnderTcpserver(t *testing.T) {
	tcpserver := testpeer.Need(t, "tcpserver")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	addr := testpeer.FreePort(t)
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(tcpserver, "-q", "-H", "-R", "-l", "local.example", host, port, self)
	cmd.Env = append(os.Environ(), "QMQP_TEST_STDIO="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close() // the child sees an empty request and exits
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tcpserver does not listen: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	body := "Subject: stdio\n\nthrough tcpserver\n"
	res, err := send(t, &Client{Servers: []string{addr}}, testEnv, body)
	if err != nil || !res.Status.IsAccept() || res.Status.Text != "ok via stdio" {
		t.Fatalf("%+v, %v", res, err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "msg"))
	if err != nil {
		t.Fatal(err)
	}
	sender, rest, _ := strings.Cut(string(got), "\n")
	rcpts, msg, _ := strings.Cut(rest, "\n")
	if sender != testEnv.Sender || rcpts != testEnv.Recipients[0] {
		t.Fatalf("envelope %q %q", sender, rcpts)
	}
	rcv, m := stripReceived(t, []byte(msg))
	if string(m) != body || !strings.HasPrefix(rcv, "Received: from unknown (127.0.0.1)\n  by local.example with QMQP; ") {
		t.Fatalf("message %q", msg)
	}
}
