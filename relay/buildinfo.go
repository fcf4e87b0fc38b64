package relay

import "github.com/prometheus/client_golang/prometheus"

// BuildInfo names the running binary: its version, the commit it was built
// from and the Go release, as `qmgate version` prints them.
type BuildInfo struct{ Version, Revision, GoVersion string }

// SetBuildInfo records what the daemon exports as qmgate_build_info once
// it starts (a gauge of 1 labelled with the three, the usual way to put a
// version on a dashboard). Call it before Start.
func (h *Hub) SetBuildInfo(b BuildInfo) { h.build = b }

func (h *Hub) registerBuildInfo() {
	if h.build == (BuildInfo{}) {
		return
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "qmgate_build_info",
		Help:        "The running qmgate: 1, labelled with its version, commit and Go release.",
		ConstLabels: prometheus.Labels{"version": h.build.Version, "revision": h.build.Revision, "goversion": h.build.GoVersion},
	})
	g.Set(1)
	h.metrics.Registry.MustRegister(g)
}
