package relay

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/qmgate/qmgate/queue"
)

// Metrics are the daemon's Prometheus metrics, on a registry of their own so
// that embedding programs and tests never collide on the global one.
type Metrics struct {
	Registry   *prometheus.Registry
	Accepted   *prometheus.CounterVec // proto
	Rejected   *prometheus.CounterVec // proto, reason
	Deliveries *prometheus.CounterVec // route, result
	Sessions   *prometheus.GaugeVec   // proto
	Refused    *prometheus.CounterVec // proto, reason
	// TLSPolicy counts per-recipient delivery attempts made under a TLS
	// policy (transport.TLSPolicies), by policy and result.
	TLSPolicy *prometheus.CounterVec // policy, result
	// Ready, when set, answers /readyz: whether the daemon wants new
	// connections now (see Hub.Ready).
	Ready func() error
}

// NewMetrics creates the metrics. queueStats, when not nil, feeds the queue
// gauges at scrape time.
func NewMetrics(queueStats func() (messages, recipients int, oldest time.Duration)) *Metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m := &Metrics{
		Registry:   prometheus.NewRegistry(),
		Accepted:   counter("qmgate_messages_accepted_total", "Messages accepted into the queue, by protocol.", "proto"),
		Rejected:   counter("qmgate_messages_rejected_total", "Messages or recipients refused, by protocol and reason.", "proto", "reason"),
		Deliveries: counter("qmgate_deliveries_total", "Per-recipient delivery attempts, by route and result (accept, temporary, permanent).", "route", "result"),
		TLSPolicy: counter("qmgate_deliveries_by_tls_policy_total",
			"Per-recipient SMTP and mx delivery attempts, by the TLS policy they were made under (none, opportunistic, required, smarthost-required, mta-sts-enforce, mta-sts-testing) and result.",
			"policy", "result"),
		Sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "qmgate_sessions_open", Help: "Client connections open now, by protocol.",
		}, []string{"proto"}),
		Refused: counter("qmgate_connections_refused_total",
			"Connections refused before they were served, by protocol and reason (limit: over max_conns or max_conns_per_ip; access: off the QMQP allow list).",
			"proto", "reason"),
	}
	m.Registry.MustRegister(m.Accepted, m.Rejected, m.Deliveries, m.TLSPolicy, m.Sessions, m.Refused, smarthostCollector{},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if queueStats != nil {
		var mu sync.Mutex
		var last time.Time
		var msgs, rcpts int
		var oldest time.Duration
		get := func() (int, int, time.Duration) {
			// One scrape reads three gauges; ask the queue once.
			mu.Lock()
			defer mu.Unlock()
			if time.Since(last) > time.Second {
				msgs, rcpts, oldest = queueStats()
				last = time.Now()
			}
			return msgs, rcpts, oldest
		}
		m.Registry.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "qmgate_queue_messages", Help: "Messages in the queue."},
				func() float64 { n, _, _ := get(); return float64(n) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "qmgate_queue_recipients", Help: "Pending recipients in the queue."},
				func() float64 { _, n, _ := get(); return float64(n) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "qmgate_queue_oldest_seconds", Help: "Age of the oldest queued message."},
				func() float64 { _, _, d := get(); return d.Seconds() }),
		)
	}
	return m
}

// WatchCommits registers counters of the queue's group commit, read from
// stats at scrape time.
func (m *Metrics) WatchCommits(stats func() queue.CommitStats) {
	counter := func(name, help string, v func(queue.CommitStats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return v(stats()) })
	}
	m.Registry.MustRegister(
		counter("qmgate_queue_flushes_total", "Group commits: journal writes made durable with one fdatasync each.",
			func(s queue.CommitStats) float64 { return float64(s.Flushes) }),
		counter("qmgate_queue_records_total", "Records appended to the journal (messages and state changes).",
			func(s queue.CommitStats) float64 { return float64(s.Records) }),
		counter("qmgate_queue_commit_holds_total", "Flushes whose batch was held open for writers on their way ([queue] commit_linger).",
			func(s queue.CommitStats) float64 { return float64(s.Holds) }),
		counter("qmgate_queue_commit_hold_seconds_total", "Time batches were held open for writers on their way.",
			func(s queue.CommitStats) float64 { return s.HoldTime.Seconds() }),
	)
}

// Serve runs the /metrics, /healthz and /readyz listener until ctx ends. healthy
// reports whether the daemon can accept mail (the queue is open and writable).
func (m *Metrics) Serve(ctx context.Context, l net.Listener, healthy func() error, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := healthy(); err != nil {
			log.Warn("health check failed", "err", err)
			http.Error(w, "unhealthy\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	if m.Ready != nil {
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
			if err := m.Ready(); err != nil {
				http.Error(w, "not ready: "+err.Error()+"\n", http.StatusServiceUnavailable)
				return
			}
			w.Write([]byte("ok\n"))
		})
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// countingListener counts open connections in a gauge.
type countingListener struct {
	net.Listener
	g prometheus.Gauge
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	l.g.Inc()
	return &countedConn{Conn: c, g: l.g}, nil
}

type countedConn struct {
	net.Conn
	g    prometheus.Gauge
	once atomic.Bool
}

func (c *countedConn) Close() error {
	if c.once.CompareAndSwap(false, true) {
		c.g.Dec()
	}
	return c.Conn.Close()
}
