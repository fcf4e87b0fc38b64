package relay

import (
	"testing"
	"time"
)

func TestBuildInfoMetric(t *testing.T) {
	h := &Hub{metrics: NewMetrics(func() (int, int, time.Duration) { return 0, 0, 0 })}
	h.SetBuildInfo(BuildInfo{Version: "0.1.0", Revision: "abc123", GoVersion: "go1.26.8"})
	h.registerBuildInfo()
	mfs, err := h.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "qmgate_build_info" {
			continue
		}
		m := mf.GetMetric()[0]
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if m.GetGauge().GetValue() != 1 || labels["version"] != "0.1.0" || labels["revision"] != "abc123" || labels["goversion"] != "go1.26.8" {
			t.Fatalf("qmgate_build_info = %v %v", m.GetGauge().GetValue(), labels)
		}
		return
	}
	t.Fatal("no qmgate_build_info metric")
}
