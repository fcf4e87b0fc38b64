package serve

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestMinRate: a client that trickles its bytes is cut off with ErrTooSlow
// once a window has passed below the rate.
func TestMinRate(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	defer cli.Close()
	c := NewIOConn(srv, Timing{ReadTimeout: time.Minute, MinRate: 1000, RateWindow: 50 * time.Millisecond})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := cli.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 16)
	for {
		_, err := c.Read(buf)
		if errors.Is(err, ErrTooSlow) {
			return
		}
		if err != nil {
			t.Fatalf("read: %v, want ErrTooSlow", err)
		}
	}
}

// TestMinRateWaitNotCounted: the time before the client's first byte after
// a reply (waiting for the reply, thinking about the next command) does not
// count against the rate.
func TestMinRateWaitNotCounted(t *testing.T) {
	var tm Timing
	tm.MinRate, tm.RateWindow = 1000, time.Hour
	if err := tm.ReadDone(10, nil); err != nil {
		t.Fatal(err)
	}
	tm.winStart = time.Now().Add(-2 * time.Hour) // a window passed below the rate
	tm.Wrote()                                   // but the server replied since
	if err := tm.ReadDone(10, nil); err != nil {
		t.Fatalf("a wait after a reply counted: %v", err)
	}
	tm.winStart = time.Now().Add(-2 * time.Hour)
	if err := tm.ReadDone(10, nil); !errors.Is(err, ErrTooSlow) {
		t.Fatalf("got %v, want ErrTooSlow", err)
	}
}

// TestFirstDeadline: until Started, no read waits past First, and the
// timeout reads as ErrFirstTimeout.
func TestFirstDeadline(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	defer cli.Close()
	c := NewIOConn(srv, Timing{ReadTimeout: time.Hour, First: time.Now().Add(20 * time.Millisecond)})
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, ErrFirstTimeout) {
		t.Fatalf("got %v, want ErrFirstTimeout", err)
	}
	c.Started()
	if d := c.Deadline(time.Hour); time.Until(d) < 30*time.Minute {
		t.Fatalf("First still applies after Started: %v", d)
	}
}

// TestFlushBeforeRead: pending replies go out before the connection waits
// for input.
func TestFlushBeforeRead(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	defer cli.Close()
	c := NewIOConn(srv, Timing{})
	bw := bufio.NewWriter(c)
	c.Flush = bw
	bw.WriteString("reply")
	go func() {
		buf := make([]byte, 5)
		io.ReadFull(cli, buf)
		cli.Write(buf) // echo: arrives only if the reply was flushed
	}()
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "reply" {
		t.Fatalf("got %q, %v", got, err)
	}
}
