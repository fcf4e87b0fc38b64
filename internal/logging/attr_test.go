package logging

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestReplaceAttr(t *testing.T) {
	for _, json := range []bool{false, true} {
		var buf bytes.Buffer
		opt := &slog.HandlerOptions{ReplaceAttr: ReplaceAttr}
		var h slog.Handler = slog.NewTextHandler(&buf, opt)
		if json {
			h = slog.NewJSONHandler(&buf, opt)
		}
		slog.New(h).Info("x", "delay", 19*time.Millisecond,
			"listeners", map[string][]string{"smtp": {"127.0.0.1:2525"}, "qmqp": {"127.0.0.1:2628", "unix:/s"}})
		out := buf.String()
		for _, want := range []string{"0.019", "qmqp=127.0.0.1:2628,unix:/s smtp=127.0.0.1:2525"} {
			if !strings.Contains(out, want) {
				t.Errorf("json=%v: %q lacks %q", json, out, want)
			}
		}
		if strings.Contains(out, "map[") || strings.Contains(out, "19ms") || strings.Contains(out, "19000000") {
			t.Errorf("json=%v: Go forms in %q", json, out)
		}
	}
}
