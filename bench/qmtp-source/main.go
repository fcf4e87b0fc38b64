// Command qmtp-source is a QMTP load generator, the sibling that Postfix's
// qmqp-source and smtp-source lack: it opens sessions to a QMTP server and
// sends messages over them, pipelined, counting the K, Z and D replies per
// recipient. It never stops at the first failure: a broken connection counts
// its unanswered recipients as lost and the session reconnects.
//
// It frames packages itself rather than using qmgate's qmtp package, so that
// it measures a server, not qmgate against itself.
//
//	qmtp-source [-s sessions] [-m messages] [-l bytes] [-r recipients]
//	            [-d depth] [-f from] [-t to] [-json] host:port
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type counts struct {
	K, Z, D, Lost atomic.Int64
	Messages      atomic.Int64 // messages whose every recipient got some reply
	AllK          atomic.Int64 // messages accepted for every recipient
}

func main() {
	sessions := flag.Int("s", 1, "parallel sessions")
	messages := flag.Int("m", 1, "total messages")
	length := flag.Int("l", 1024, "message size in bytes, headers included")
	rcpts := flag.Int("r", 1, "recipients per message")
	depth := flag.Int("d", 32, "pipelining depth: packages in flight per session")
	from := flag.String("f", "foo@qmtp-source.invalid", "sender")
	to := flag.String("t", "foo@example.com", "recipient; with -r N a number is prepended, as qmqp-source does")
	asJSON := flag.Bool("json", false, "print the summary as JSON")
	timeout := flag.Duration("timeout", 5*time.Minute, "per-I/O timeout")
	flag.Parse()
	if flag.NArg() != 1 || *sessions < 1 || *messages < 0 || *rcpts < 1 || *depth < 1 || *length < 0 {
		fmt.Fprintln(os.Stderr, "usage: qmtp-source [-s sessions] [-m messages] [-l bytes] [-r rcpts] [-d depth] host:port")
		os.Exit(64)
	}
	addr := flag.Arg(0)
	pkg := buildPackage(*from, *to, *length, *rcpts)

	var c counts
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < *sessions; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			session(addr, pkg, *rcpts, *depth, int64(*messages), &next, &c, *timeout)
		}()
	}
	wg.Wait()
	el := time.Since(start)
	sum := map[string]any{
		"server": addr, "sessions": *sessions, "messages": *messages, "bytes": *length, "recipients": *rcpts,
		"depth": *depth, "seconds": el.Seconds(), "msgs_per_sec": float64(c.AllK.Load()) / el.Seconds(),
		"K": c.K.Load(), "Z": c.Z.Load(), "D": c.D.Load(), "lost": c.Lost.Load(), "accepted_messages": c.AllK.Load(),
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(sum)
	} else {
		fmt.Printf("qmtp-source: %d messages in %.3fs: %.0f msg/s; replies K=%d Z=%d D=%d lost=%d\n",
			c.AllK.Load(), el.Seconds(), sum["msgs_per_sec"], c.K.Load(), c.Z.Load(), c.D.Load(), c.Lost.Load())
	}
	if c.K.Load() != int64(*messages**rcpts) {
		os.Exit(1)
	}
}

// buildPackage builds one QMTP package (LF mode) once; every message reuses it.
func buildPackage(from, to string, length, rcpts int) []byte {
	hdr := "From: " + from + "\nTo: " + to + "\nSubject: qmtp-source test\nMessage-Id: <qmtp-source@" + strconv.Itoa(os.Getpid()) + ">\n\n"
	var body strings.Builder
	body.WriteString(hdr)
	for body.Len() < length {
		n := min(length-body.Len(), 79)
		if n > 1 {
			body.WriteString(strings.Repeat("X", n-1))
		}
		body.WriteByte('\n')
	}
	msg := "\n" + body.String()
	var b []byte
	b = strconv.AppendInt(b, int64(len(msg)), 10)
	b = append(b, ':')
	b = append(b, msg...)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(len(from)), 10)
	b = append(b, ':')
	b = append(b, from...)
	b = append(b, ',')
	var list []byte
	for i := 0; i < rcpts; i++ {
		r := to
		if rcpts > 1 {
			r = strconv.Itoa(i) + to
		}
		list = strconv.AppendInt(list, int64(len(r)), 10)
		list = append(list, ':')
		list = append(list, r...)
		list = append(list, ',')
	}
	b = strconv.AppendInt(b, int64(len(list)), 10)
	b = append(b, ':')
	b = append(b, list...)
	return append(b, ',')
}

// session sends messages until the shared counter runs out, reconnecting
// after failures.
func session(addr string, pkg []byte, rcpts, depth int, total int64, next *atomic.Int64, c *counts, timeout time.Duration) {
	for {
		// Claim up to depth messages at a time so sessions share the total.
		if next.Load() >= total {
			return
		}
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			if next.Add(1) > total {
				return
			}
			c.Lost.Add(int64(rcpts))
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if !run(conn, pkg, rcpts, depth, total, next, c, timeout) {
			time.Sleep(10 * time.Millisecond)
		}
		conn.Close()
	}
}

// run drives one connection: a writer goroutine keeps up to depth packages
// in flight while this goroutine reads replies. It returns false after a
// failure.
func run(conn net.Conn, pkg []byte, rcpts, depth int, total int64, next *atomic.Int64, c *counts, timeout time.Duration) bool {
	inflight := make(chan struct{}, depth)
	sent := make(chan struct{}, 1<<16)
	done := make(chan struct{})
	var werr error
	go func() {
		defer close(sent)
		bw := bufio.NewWriterSize(conn, 64<<10)
		for {
			select {
			case inflight <- struct{}{}:
			case <-done:
				return
			}
			if next.Add(1) > total {
				<-inflight
				bw.Flush()
				return
			}
			conn.SetWriteDeadline(time.Now().Add(timeout))
			if _, err := bw.Write(pkg); err != nil {
				werr = err
				c.Lost.Add(int64(rcpts))
				return
			}
			// Flush when nothing more can be queued right now, so the
			// server sees whole packages promptly.
			if len(inflight) == cap(inflight) || next.Load() >= total {
				if err := bw.Flush(); err != nil {
					werr = err
					c.Lost.Add(int64(rcpts))
					return
				}
			}
			sent <- struct{}{}
		}
	}()
	br := bufio.NewReaderSize(conn, 16<<10)
	ok := true
	for range sent {
		allK := true
		for i := 0; i < rcpts; i++ {
			conn.SetReadDeadline(time.Now().Add(timeout))
			reply, err := readReply(br)
			if err != nil {
				c.Lost.Add(int64(rcpts - i))
				ok = false
				allK = false
				break
			}
			switch reply {
			case 'K':
				c.K.Add(1)
			case 'Z':
				c.Z.Add(1)
				allK = false
			default:
				c.D.Add(1)
				allK = false
			}
		}
		<-inflight
		if !ok {
			break
		}
		c.Messages.Add(1)
		if allK {
			c.AllK.Add(1)
		}
	}
	close(done)
	for range sent {
		c.Lost.Add(int64(rcpts))
	}
	if werr != nil {
		ok = false
	}
	return ok
}

// readReply reads one reply netstring and returns its first byte.
func readReply(br *bufio.Reader) (byte, error) {
	n := 0
	digits := 0
	for {
		ch, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		if ch == ':' {
			break
		}
		if ch < '0' || ch > '9' || digits > 6 {
			return 0, errors.New("bad reply length")
		}
		n = n*10 + int(ch-'0')
		digits++
	}
	if n < 1 {
		return 0, errors.New("empty reply")
	}
	first, err := br.ReadByte()
	if err != nil {
		return 0, err
	}
	if _, err := br.Discard(n - 1); err != nil {
		return 0, err
	}
	if ch, err := br.ReadByte(); err != nil || ch != ',' {
		return 0, io.ErrUnexpectedEOF
	}
	return first, nil
}
