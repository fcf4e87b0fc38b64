package relay

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/qmgate/qmgate/queue"
	"github.com/qmgate/qmgate/relay/transport"
)

// smarthostCollector exports, at scrape time, the shared next hop health
// (qmgate_nexthop_up{host}: 1 up, 0 in its backoff after a failed
// connection) and the OAuth2 grants found revoked, per route.
type smarthostCollector struct{}

var (
	nexthopUpDesc = prometheus.NewDesc("qmgate_nexthop_up",
		"Whether a next hop of a route with several is taking connections (0: marked down after a failed connect, TLS, authentication or greeting, for its backoff).",
		[]string{"host"}, nil)
	revokedDesc = prometheus.NewDesc("qmgate_oauth2_revoked_total",
		"Connections that found the route's OAuth2 grant revoked or expired (mail waits until qmgate oauth2 login renews it).",
		[]string{"route"}, nil)
)

func (smarthostCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- nexthopUpDesc
	ch <- revokedDesc
}

func (smarthostCollector) Collect(ch chan<- prometheus.Metric) {
	for _, h := range transport.Nexthops.Snapshot() {
		v := 0.0
		if h.Up {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(nexthopUpDesc, prometheus.GaugeValue, v, h.Host)
	}
	for route, n := range transport.RevokedGrants() {
		ch <- prometheus.MustNewConstMetric(revokedDesc, prometheus.CounterValue, float64(n), route)
	}
}

// queueNextHops is the next hop health that `qmgate queue stat` shows,
// read from the daemon through the queue's control socket: the same table
// as qmgate_nexthop_up.
func queueNextHops() []queue.NextHop {
	snap := transport.Nexthops.Snapshot()
	out := make([]queue.NextHop, len(snap))
	for i, h := range snap {
		out[i] = queue.NextHop{Host: h.Host, Up: h.Up, Since: h.Since, DownUntil: h.DownUntil, Failures: h.Failures,
			LastError: h.LastError, LastErrorAt: h.LastErrorAt}
	}
	return out
}
