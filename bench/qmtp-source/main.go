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
//	            [-d depth] [-f from] [-t to] [-seq] [-acked FILE] [-json]
//	            host:port
//
// With -seq every message carries a header "X-Bench-Seq: NNNNNNNNNN" with
// its own sequence number (fixed width, so sizes stay equal), and -acked
// FILE writes the numbers of the messages accepted for every recipient, one
// per line: with qmtp-sink's /seqs, a harness can check that every
// acknowledged message arrived.
//
// The exit status is 0 when every recipient of every message got K, 1
// otherwise, 64 for bad usage.
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qmgate/qmgate/netstring"
)

// seqHeader matches qmtp-sink's SeqHeader.
const (
	seqHeader = "X-Bench-Seq: "
	seqDigits = 10
)

type counts struct {
	K, Z, D, Lost atomic.Int64
	Messages      atomic.Int64 // messages whose every recipient got some reply
	AllK          atomic.Int64 // messages accepted for every recipient

	mu    sync.Mutex
	acked []int64 // with -acked: sequence numbers of AllK messages
}

// load is what every session sends.
type load struct {
	pkg     []byte
	seqAt   int // offset of the sequence digits in pkg, or -1
	rcpts   int
	depth   int
	total   int64
	timeout time.Duration
	record  bool // keep acked sequence numbers
}

func main() {
	sessions := flag.Int("s", 1, "parallel sessions")
	messages := flag.Int("m", 1, "total messages")
	length := flag.Int("l", 1024, "message size in bytes, headers included")
	rcpts := flag.Int("r", 1, "recipients per message")
	depth := flag.Int("d", 32, "pipelining depth: packages in flight per session")
	from := flag.String("f", "foo@qmtp-source.invalid", "sender")
	to := flag.String("t", "foo@example.com", "recipient; with -r N a number is prepended, as qmqp-source does")
	seq := flag.Bool("seq", false, "number the messages with an X-Bench-Seq header")
	ackedFile := flag.String("acked", "", "write the sequence numbers of accepted messages to this file (implies -seq)")
	asJSON := flag.Bool("json", false, "print the summary as JSON")
	timeout := flag.Duration("timeout", 5*time.Minute, "per-I/O timeout")
	flag.Parse()
	if flag.NArg() != 1 || *sessions < 1 || *messages < 0 || *rcpts < 1 || *depth < 1 || *length < 0 {
		fmt.Fprintln(os.Stderr, "usage: qmtp-source [-s sessions] [-m messages] [-l bytes] [-r rcpts] [-d depth] [-seq] [-acked FILE] [-json] host:port")
		os.Exit(64)
	}
	if *ackedFile != "" {
		*seq = true
	}
	addr := flag.Arg(0)
	pkg, seqAt := buildPackage(*from, *to, *length, *rcpts, *seq)
	ld := &load{pkg: pkg, seqAt: seqAt, rcpts: *rcpts, depth: *depth, total: int64(*messages),
		timeout: *timeout, record: *ackedFile != ""}

	var c counts
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < *sessions; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			session(addr, ld, &next, &c)
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if *ackedFile != "" {
		slices.Sort(c.acked)
		var b strings.Builder
		for _, s := range c.acked {
			b.WriteString(strconv.FormatInt(s, 10))
			b.WriteByte('\n')
		}
		if err := os.WriteFile(*ackedFile, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "qmtp-source:", err)
			os.Exit(1)
		}
	}
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

// buildPackage builds one QMTP package (LF mode) once; every message reuses
// it. With seq it holds a run of zeros for the sequence number, at the
// returned offset (-1 without).
func buildPackage(from, to string, length, rcpts int, seq bool) ([]byte, int) {
	hdr := "From: " + from + "\nTo: " + to + "\nSubject: qmtp-source test\nMessage-Id: <qmtp-source@" + strconv.Itoa(os.Getpid()) + ">\n"
	seqOff := -1
	if seq {
		seqOff = len(hdr) + len(seqHeader)
		hdr += seqHeader + strings.Repeat("0", seqDigits) + "\n"
	}
	hdr += "\n"
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
	b := netstring.AppendHeader(nil, int64(len(msg)))
	if seqOff >= 0 {
		seqOff += len(b) + 1 // the length prefix and the mode byte
	}
	b = netstring.AppendString(append(append(b, msg...), ','), from)
	var list []byte
	for i := 0; i < rcpts; i++ {
		r := to
		if rcpts > 1 {
			r = strconv.Itoa(i) + to
		}
		list = netstring.AppendString(list, r)
	}
	return netstring.Append(b, list), seqOff
}

// session sends messages until the shared counter runs out, reconnecting
// after failures.
func session(addr string, ld *load, next *atomic.Int64, c *counts) {
	for next.Load() < ld.total {
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			// The server is down: the message this attempt was for is lost;
			// keep trying with the rest, as a client with a queue would.
			if next.Add(1) > ld.total {
				return
			}
			c.Lost.Add(int64(ld.rcpts))
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ok := run(conn, ld, next, c)
		conn.Close()
		if !ok {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// writePackage writes the package with its sequence number filled in.
func writePackage(w *bufio.Writer, ld *load, seq int64) error {
	if ld.seqAt < 0 {
		_, err := w.Write(ld.pkg)
		return err
	}
	var digits [seqDigits]byte
	s := strconv.FormatInt(seq, 10)
	for i := range digits {
		digits[i] = '0'
	}
	copy(digits[seqDigits-len(s):], s)
	w.Write(ld.pkg[:ld.seqAt])
	w.Write(digits[:])
	_, err := w.Write(ld.pkg[ld.seqAt+seqDigits:])
	return err
}

// run drives one connection: a writer goroutine keeps up to depth packages
// in flight while this goroutine reads replies. It returns false after a
// failure.
func run(conn net.Conn, ld *load, next *atomic.Int64, c *counts) bool {
	inflight := make(chan struct{}, ld.depth)
	sent := make(chan int64, ld.depth+1)
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
			seq := next.Add(1)
			if seq > ld.total {
				<-inflight
				bw.Flush()
				return
			}
			conn.SetWriteDeadline(time.Now().Add(ld.timeout))
			err := writePackage(bw, ld, seq)
			// Flush when nothing more can be queued right now, so the
			// server sees whole packages promptly.
			if err == nil && (len(inflight) == cap(inflight) || next.Load() >= ld.total) {
				err = bw.Flush()
			}
			if err != nil {
				werr = err
				c.Lost.Add(int64(ld.rcpts))
				return
			}
			sent <- seq
		}
	}()
	br := bufio.NewReaderSize(conn, 16<<10)
	ok := true
	var acked []int64
	for seq := range sent {
		allK := true
		for i := 0; i < ld.rcpts; i++ {
			conn.SetReadDeadline(time.Now().Add(ld.timeout))
			reply, err := readReply(br)
			if err != nil {
				c.Lost.Add(int64(ld.rcpts - i))
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
			if ld.record {
				acked = append(acked, seq)
			}
		}
	}
	close(done)
	if !ok {
		conn.Close() // unblocks a writer stuck on a dead connection
	}
	for range sent {
		c.Lost.Add(int64(ld.rcpts))
	}
	if len(acked) > 0 {
		c.mu.Lock()
		c.acked = append(c.acked, acked...)
		c.mu.Unlock()
	}
	return ok && werr == nil
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
