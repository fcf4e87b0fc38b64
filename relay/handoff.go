package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmtp"
	"github.com/qmgate/qmgate/queue"
)

// HandoffHeader is the trace header a hub puts on each message it hands to
// a peer: the original arrival time and the most attempts made so far, so
// that the peer's lifetime and delay notices can continue where they were.
const HandoffHeader = "X-Qmgate-Handoff"

// handoffBatch is how many messages one QMTP connection carries per
// pipelined round during a hand-off.
const handoffBatch = 64

// HandoffResult counts what a hand-off moved and what it left.
type HandoffResult struct {
	Messages   int // messages of which at least one recipient moved
	Recipients int // recipients a peer accepted (and that left the queue)
	Refused    int // recipients every peer refused; they stay queued
}

// HandoffOptions say where a hand-off goes and how it proves itself.
type HandoffOptions struct {
	// Peers are tried in order: "qmtp://host[:port]", "qmtps://host:port"
	// (TLS from the first byte, the peer's certificate verified against
	// CAFile or the system's roots), or a bare "host[:port]" for QMTP.
	Peers []string
	// Held hands off held messages too.
	Held bool
	// CAFile holds PEM roots for qmtps:// peers; empty: the system's.
	CAFile string
	// CertFile and KeyFile are the client certificate shown to qmtps://
	// peers (which then trust this hub as a relay client); empty: none.
	CertFile, KeyFile string
	// Log gets one line per refusal; nil logs nothing.
	Log *slog.Logger
}

// handoffPeer is one peer, ready to dial.
type handoffPeer struct {
	name   string // as named, for logs and the route of the record
	addr   string
	client *qmtp.Client
}

// handoffPeers checks the peers' URLs and builds their clients.
func handoffPeers(opt *HandoffOptions) ([]handoffPeer, error) {
	if len(opt.Peers) == 0 {
		return nil, errors.New("hand-off: no peer named")
	}
	var tc *tls.Config
	out := make([]handoffPeer, 0, len(opt.Peers))
	for _, p := range opt.Peers {
		if !strings.Contains(p, "://") {
			p = "qmtp://" + p
		}
		if err := config.CheckHandoffPeer(p); err != nil {
			return nil, fmt.Errorf("hand-off: %w", err)
		}
		u, _ := url.Parse(p)
		hp := handoffPeer{name: strings.TrimSuffix(p, "/"), client: &qmtp.Client{}}
		hp.addr = u.Host
		if u.Port() == "" {
			hp.addr = net.JoinHostPort(u.Hostname(), strconv.Itoa(qmtp.DefaultPort))
		}
		if u.Scheme == "qmtps" {
			if tc == nil {
				var err error
				if tc, err = handoffTLS(opt); err != nil {
					return nil, err
				}
			}
			c := tc.Clone()
			c.ServerName = u.Hostname()
			hp.client.TLSConfig = c
		}
		out = append(out, hp)
	}
	return out, nil
}

// handoffTLS is the TLS client configuration of qmtps:// peers.
func handoffTLS(opt *HandoffOptions) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if opt.CAFile != "" {
		pem, err := os.ReadFile(opt.CAFile)
		if err != nil {
			return nil, fmt.Errorf("hand-off: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("hand-off: ca_file %s: no certificates", opt.CAFile)
		}
		tc.RootCAs = pool
	}
	if opt.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(opt.CertFile, opt.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("hand-off: cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Handoff moves every pending recipient of q (of held messages too, with
// opt.Held) to a peer hub over QMTP or QMTPS, peers tried in order. A
// recipient leaves the local journal only once a peer acknowledged it,
// so an interrupted hand-off loses nothing and a new one resumes with
// what is left. Each message carries HandoffHeader, which a peer that
// trusts this hub reads to continue the message's arrival time, attempts
// and delay notice. Recipients a peer refuses stay queued untouched (no
// attempt is counted). It returns an error when no peer answers.
func Handoff(ctx context.Context, q *queue.Queue, opt HandoffOptions) (HandoffResult, error) {
	var res HandoffResult
	peers, err := handoffPeers(&opt)
	if err != nil {
		return res, err
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	held := opt.Held
	refused := map[string]bool{} // id + rcpt a peer refused this run
	// Only what was queued when the hand-off began: on a running hub new
	// mail keeps coming, and a hand-off must end.
	began := time.Now()
	for ctx.Err() == nil {
		ds := q.ClaimAll(handoffBatch, held)
		var todo []*queue.Delivery
		for _, d := range ds {
			var keep []string
			for _, r := range d.Recipients {
				if !d.Received.After(began) && !refused[d.ID+"\x00"+r] {
					keep = append(keep, r)
				}
			}
			if len(keep) == 0 {
				q.Record(ctx, d, nil) // give the lease back
				continue
			}
			d.Recipients = keep
			todo = append(todo, d)
		}
		if len(todo) == 0 {
			return res, ctx.Err()
		}
		sts, peer, err := sendHandoff(ctx, peers, todo)
		results := make([][]queue.Result, len(todo))
		for i, d := range todo {
			for j, r := range d.Recipients {
				if sts == nil || j >= len(sts[i]) {
					continue
				}
				st := sts[i][j]
				if st.IsAccept() {
					results[i] = append(results[i], queue.Result{Recipient: r, Status: st,
						Route: "handoff " + peer.name, Host: peer.addr})
					res.Recipients++
				} else if st.IsPermanent() || err == nil {
					refused[d.ID+"\x00"+r] = true
					res.Refused++
					log.Warn("hand-off refused", "id", d.ID, "rcpt", r, "peer", peer.name, "status", st.Text)
				}
			}
			if len(results[i]) > 0 {
				res.Messages++
			}
		}
		// Recorded at once, so that the records share group commits
		// instead of waiting for one flush each.
		errs := make([]error, len(todo))
		var wg sync.WaitGroup
		for i, d := range todo {
			wg.Go(func() { errs[i] = q.Record(context.WithoutCancel(ctx), d, results[i]) })
		}
		wg.Wait()
		for i, rerr := range errs {
			if rerr != nil {
				return res, fmt.Errorf("hand-off: recording %s: %w", todo[i].ID, rerr)
			}
		}
		if err != nil {
			return res, err
		}
	}
	return res, ctx.Err()
}

// sendHandoff sends the Deliveries to the first peer that takes the
// connection; it returns the per-recipient statuses and the peer used.
func sendHandoff(ctx context.Context, peers []handoffPeer, ds []*queue.Delivery) ([][]mail.Status, handoffPeer, error) {
	var last error
	for _, peer := range peers {
		msgs := make([]*qmtp.Message, len(ds))
		var closers []io.Closer
		closeAll := func() {
			for _, c := range closers {
				c.Close()
			}
		}
		for i, d := range ds {
			body, err := d.Open()
			if err != nil {
				closeAll()
				return nil, peer, fmt.Errorf("hand-off: message %s: %w", d.ID, err)
			}
			closers = append(closers, body)
			hdr := handoffHeaderLine(d.Received, d.Attempts, d.DelayNotified())
			msgs[i] = &qmtp.Message{Envelope: d.Envelope(), Body: io.MultiReader(strings.NewReader(hdr), body), Size: int64(len(hdr)) + d.Size}
		}
		sts, err := peer.client.Send(ctx, peer.addr, msgs...)
		closeAll()
		var de *qmtp.DialError
		if errors.As(err, &de) {
			last = fmt.Errorf("hand-off: peer %s: %w", peer.name, err)
			continue
		}
		return sts, peer, err
	}
	return nil, handoffPeer{}, last
}
