// Command qmtp-sink is a QMTP server that accepts every recipient and throws
// the message away, counting what it received: the QMTP counterpart of
// Postfix's smtp-sink and qmqp-sink, for measuring a QMTP client (a hub
// draining its queue, hub A relaying to hub B).
//
// Unlike qmqp-sink it parses the protocol fully (it is qmgate's qmtp.Server
// with a handler that discards), so a count it reports is a count of
// well-formed packages. When a message carries qmtp-source's sequence
// header (-seq), the sink remembers which numbers it saw, so a harness can
// check that every message a hub acknowledged arrived.
//
//	qmtp-sink [-stats host:port] [-max-conns N] host:port
//
// GET /stats on the stats address returns JSON counts; GET /seqs returns
// the sequence numbers seen, one per line, in ascending order.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmtp"
)

// SeqHeader is the header qmtp-source -seq writes: a fixed-width decimal
// sequence number, so every message keeps the same size.
const SeqHeader = "X-Bench-Seq: "

// seqScan is how much of a message's start the sink searches for
// SeqHeader: the server's Received line and qmtp-source's short header.
const seqScan = 2048

type sink struct {
	packages, recipients, bytes, conns atomic.Int64

	mu   sync.Mutex
	seqs map[int64]int // sequence number -> times seen
}

func (k *sink) ServeQMTP(_ context.Context, req *qmtp.Request) []mail.Status {
	br := bufio.NewReaderSize(req.Body, seqScan)
	head, _ := br.Peek(seqScan)
	seq := int64(-1)
	if i := bytes.Index(head, []byte(SeqHeader)); i >= 0 {
		rest := head[i+len(SeqHeader):]
		if j := bytes.IndexByte(rest, '\n'); j > 0 {
			if n, err := strconv.ParseInt(string(bytes.TrimSpace(rest[:j])), 10, 64); err == nil {
				seq = n
			}
		}
	}
	n, _ := io.Copy(io.Discard, br)
	env, err := req.Envelope()
	if err != nil {
		return nil // the server answers or closes for a broken package
	}
	k.packages.Add(1)
	k.recipients.Add(int64(len(env.Recipients)))
	k.bytes.Add(n)
	if seq >= 0 {
		k.mu.Lock()
		k.seqs[seq]++
		k.mu.Unlock()
	}
	out := make([]mail.Status, len(env.Recipients))
	for i := range out {
		out[i] = mail.OK("ok qmtp-sink")
	}
	return out
}

func (k *sink) stats(w http.ResponseWriter, _ *http.Request) {
	k.mu.Lock()
	unique, dups := len(k.seqs), 0
	for _, c := range k.seqs {
		dups += c - 1
	}
	k.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]int64{
		"messages": k.packages.Load(), "recipients": k.recipients.Load(), "bytes": k.bytes.Load(),
		"connections": k.conns.Load(), "seqs_unique": int64(unique), "seqs_duplicate": int64(dups),
	})
}

func (k *sink) seqList(w http.ResponseWriter, _ *http.Request) {
	k.mu.Lock()
	list := make([]int64, 0, len(k.seqs))
	for s := range k.seqs {
		list = append(list, s)
	}
	k.mu.Unlock()
	slices.Sort(list)
	bw := bufio.NewWriter(w)
	for _, s := range list {
		bw.WriteString(strconv.FormatInt(s, 10))
		bw.WriteByte('\n')
	}
	bw.Flush()
}

func main() {
	statsAddr := flag.String("stats", "", "serve GET /stats (JSON) and /seqs here (loopback host:port)")
	maxConns := flag.Int("max-conns", 4096, "connections served at once")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: qmtp-sink [-stats host:port] [-max-conns N] host:port")
		os.Exit(64)
	}
	k := &sink{seqs: map[int64]int{}}
	l, err := net.Listen("tcp", flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "qmtp-sink:", err)
		os.Exit(71)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := &qmtp.Server{
		Handler:         k,
		Hostname:        "qmtp-sink",
		MaxMessageBytes: -1,
		MaxHops:         -1,
		MaxConns:        *maxConns,
		MaxConnsPerIP:   *maxConns,
		SessionTimeout:  -1,
		ErrorLog:        log,
		ConnContext: func(ctx context.Context, _ *mail.ConnInfo) (context.Context, error) {
			k.conns.Add(1)
			return ctx, nil
		},
	}
	if *statsAddr != "" {
		sl, err := net.Listen("tcp", *statsAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "qmtp-sink: stats:", err)
			os.Exit(71)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/stats", k.stats)
		mux.HandleFunc("/seqs", k.seqList)
		go http.Serve(sl, mux)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
	}()
	if err := srv.Serve(l); err != nil && err != qmtp.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "qmtp-sink:", err)
		os.Exit(71)
	}
	fmt.Fprintf(os.Stderr, "qmtp-sink: %d messages, %d recipients, %d bytes\n",
		k.packages.Load(), k.recipients.Load(), k.bytes.Load())
}
