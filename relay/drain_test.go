package relay

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func getStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHubReadyz: /readyz answers 200 while the hub serves and 503 once it
// drains, while /healthz still says the process is alive.
func TestHubReadyz(t *testing.T) {
	h := startHub(t, `
[qmtp]
listen = ["127.0.0.1:0"]
[metrics]
listen = "127.0.0.1:0"
[[route]]
domains = ["*"]
via = "discard:"
`)
	base := "http://" + h.addr("metrics")
	if code, body := getStatus(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	h.hub.draining.Store(true)
	if code, body := getStatus(t, base+"/readyz"); code != 503 || !strings.Contains(body, "draining") {
		t.Fatalf("/readyz while draining: %d %q", code, body)
	}
	if code, body := getStatus(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz while draining: %d %q", code, body)
	}
}
