package qmtp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
)

// TestMain doubles as the qmail-qmtpd-style program that tcpserver runs in
// TestUnderTCPServer: with QMTP_TEST_STDIO set, it serves one session on
// stdin/stdout and exits.
func TestMain(m *testing.M) {
	if os.Getenv("QMTP_TEST_STDIO") == "1" {
		os.Exit(stdioServe())
	}
	os.Exit(m.Run())
}

// stdioServe is what an embedding program does under tcpserver: the socket
// on fd 0 becomes a net.Conn (so deadlines work) and the tcp-environ
// variables describe the connection.
func stdioServe() int {
	conn, err := net.FileConn(os.Stdin)
	if err != nil {
		return 111
	}
	ip := net.ParseIP(os.Getenv("TCPREMOTEIP"))
	info := &mail.ConnInfo{
		RemoteAddr: &net.TCPAddr{IP: ip},
		RemoteHost: os.Getenv("TCPREMOTEHOST"),
		LocalHost:  os.Getenv("TCPLOCALHOST"),
	}
	srv := &Server{
		ErrorLog:    slog.New(slog.NewTextHandler(os.Stderr, nil)),
		ReadTimeout: 10 * time.Second,
		Handler: HandlerFunc(func(ctx context.Context, req *Request) []mail.Status {
			b, _ := io.ReadAll(req.Body)
			env, err := req.Envelope()
			if err != nil {
				return nil
			}
			st := answer(env.Recipients)
			if strings.Contains(string(b), "from unknown (127.0.0.1)\n  by stdio.test with QMTP") {
				for i := range st {
					if st[i].IsAccept() {
						st[i].Text = "ok via tcpserver"
					}
				}
			}
			return st
		}),
	}
	if err := srv.ServeConn(context.Background(), conn, info); err != nil {
		return 100
	}
	return 0
}

func TestUnderTCPServer(t *testing.T) {
	tcpserver := testpeer.Need(t, "tcpserver")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	addr := testpeer.FreePort(t)
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(tcpserver, "-q", "-H", "-R", "-l", "stdio.test", host, port, self)
	cmd.Env = append(os.Environ(), "QMTP_TEST_STDIO=1")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})

	var res [][]mail.Status
	deadline := time.Now().Add(long)
	for {
		res, err = Send(context.Background(), addr,
			msg("one\n", false, "", "r@x", "z@x"),
			msg("two\r\n", true, "", "d@x", "r@x"))
		var de *DialError
		if err == nil || !errors.As(err, &de) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // tcpserver is still starting
	}
	if err != nil {
		t.Fatal(err)
	}
	wantClass(t, "first", res[0], "KZ")
	wantClass(t, "second", res[1], "DK")
	if res[0][0].Text != "ok via tcpserver" {
		t.Errorf("Received line not built from the tcp-environ: %q", res[0][0].Text)
	}
}
