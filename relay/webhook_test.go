package relay

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

func TestWebhook(t *testing.T) {
	var mu sync.Mutex
	var calls int
	var keys []string
	var got []string
	codes := []int{500, 503, 200}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		b, _ := io.ReadAll(r.Body)
		got = append(got, string(b))
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		if r.Header.Get("Content-Type") != "message/rfc822" || r.Header.Get("X-Qmgate-Sender") != "s@x.example" ||
			len(r.Header.Values("X-Qmgate-Recipient")) != 2 || r.ContentLength != int64(len(b)) {
			t.Errorf("bad request headers: %v (len %d)", r.Header, r.ContentLength)
		}
		w.WriteHeader(codes[calls%len(codes)])
		calls++
	}))
	defer srv.Close()
	wh := NewWebhook(srv.URL, http.Header{"Authorization": {"Bearer t"}}, nil, 10*time.Second, slog.New(slog.DiscardHandler))
	wh.client.RetryWaitMin, wh.client.RetryWaitMax = time.Millisecond, 5*time.Millisecond
	defer wh.Close()
	j := testJob("s@x.example", "Subject: x\n\nbody\n", "a@y.example", "b@y.example")
	wh.Deliver(context.Background(), []*Job{j})
	if calls != 3 {
		t.Fatalf("want 3 calls (two failures then success), got %d", calls)
	}
	for _, r := range j.Results {
		if !r.Status.IsAccept() {
			t.Fatalf("want accepted, got %v", r.Status)
		}
	}
	for _, b := range got {
		if b != "Subject: x\n\nbody\n" {
			t.Fatalf("body %q", b)
		}
	}
	if keys[0] == "" || keys[0] != keys[1] || keys[1] != keys[2] {
		t.Fatalf("idempotency keys differ: %v", keys)
	}
}

func TestWebhookStatus(t *testing.T) {
	for code, class := range map[int]string{200: "accept", 204: "accept", 400: "permanent", 404: "permanent",
		408: "temporary", 429: "temporary", 500: "temporary", 502: "temporary", 301: "temporary"} {
		if got := webhookStatus(code, "").Class.String(); got != class {
			t.Errorf("%d: got %s want %s", code, got, class)
		}
	}
}

func TestWebhookPermanent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(400)
	}))
	defer srv.Close()
	wh := NewWebhook(srv.URL, nil, nil, 10*time.Second, slog.New(slog.DiscardHandler))
	j := testJob("", "x\n", "a@y.example")
	wh.Deliver(context.Background(), []*Job{j})
	if !j.Results[0].Status.IsPermanent() {
		t.Fatalf("want permanent, got %v", j.Results[0].Status)
	}
}

func TestWebhookUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	wh := NewWebhook(url, nil, nil, 5*time.Second, slog.New(slog.DiscardHandler))
	wh.client.RetryWaitMin, wh.client.RetryWaitMax = time.Millisecond, 5*time.Millisecond
	j := testJob("", "x\n", "a@y.example")
	wh.Deliver(context.Background(), []*Job{j})
	if !j.Results[0].Status.IsTemporary() {
		t.Fatalf("want temporary, got %v", j.Results[0].Status)
	}
}
