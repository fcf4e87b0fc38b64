package qmail

import (
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestStdioConnPipes(t *testing.T) {
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	c := StdioConn(inR, outW)
	if _, ok := c.(*stdioConn); !ok {
		t.Fatalf("pipes gave %T", c)
	}
	go func() { inW.Write([]byte("ping")); inW.Close() }()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "ping" {
		t.Fatalf("read %q %v", b, err)
	}
	if err := c.SetDeadline(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("pong"))
	c.(interface{ CloseWrite() error }).CloseWrite()
	if b, _ := io.ReadAll(outR); string(b) != "pong" {
		t.Fatalf("wrote %q", b)
	}
	c.Close()
}

// Under tcpserver fd 0 and fd 1 are one socket: StdioConn gives the socket
// itself, with its addresses.
func TestStdioConnSocket(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "sock")
	peer := os.NewFile(uintptr(fds[1]), "peer")
	defer peer.Close()
	c := StdioConn(f, f)
	f.Close()
	if _, ok := c.(*net.UnixConn); !ok {
		t.Fatalf("socket gave %T", c)
	}
	defer c.Close()
	peer.Write([]byte("x"))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil || b[0] != 'x' {
		t.Fatal(err)
	}
}
