package relay

import "github.com/prometheus/client_golang/prometheus"

// limitsCollector exports the rate limits of the configuration in force:
// qmgate_limit_refusals_total{limit} (one counter for the hub's life,
// carried across reloads) and qmgate_limit_keys{limit}, how many clients,
// users, local users or sender domains each limit is counting now.
type limitsCollector struct {
	current func() *Limits
}

var limitKeysDesc = prometheus.NewDesc("qmgate_limit_keys",
	"Clients (networks), users, local users or sender domains whose mail a rate limit is counting now, by limit.",
	[]string{"limit"}, nil)

func (c limitsCollector) Describe(ch chan<- *prometheus.Desc) {
	if l := c.current(); l != nil {
		l.refusals.Describe(ch)
	}
	ch <- limitKeysDesc
}

func (c limitsCollector) Collect(ch chan<- prometheus.Metric) {
	l := c.current()
	if l == nil {
		return
	}
	l.refusals.Collect(ch)
	for _, r := range l.rules() {
		ch <- prometheus.MustNewConstMetric(limitKeysDesc, prometheus.GaugeValue, float64(r.counts.Len()), r.name)
	}
}
