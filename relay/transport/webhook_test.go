package transport

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
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
	wh := NewWebhook(WebhookOptions{URL: srv.URL, Headers: http.Header{"Authorization": {"Bearer t"}}, Timeout: 10 * time.Second})
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
	wh := NewWebhook(WebhookOptions{URL: srv.URL, Timeout: 10 * time.Second})
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
	wh := NewWebhook(WebhookOptions{URL: url, Timeout: 5 * time.Second})
	wh.client.RetryWaitMin, wh.client.RetryWaitMax = time.Millisecond, 5*time.Millisecond
	j := testJob("", "x\n", "a@y.example")
	wh.Deliver(context.Background(), []*Job{j})
	if !j.Results[0].Status.IsTemporary() {
		t.Fatalf("want temporary, got %v", j.Results[0].Status)
	}
}

// TestWebhookNoRedirects: a 303 (which would turn the POST into a body-less
// GET) and a 307 (which would send the message and its headers elsewhere)
// are failures, temporary unless the route says permanent, and the target
// never sees a request.
func TestWebhookNoRedirects(t *testing.T) {
	var mu sync.Mutex
	var elsewhere int
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		elsewhere++
		mu.Unlock()
	}))
	defer target.Close()
	for _, code := range []int{301, 302, 303, 307, 308} {
		for _, perm := range []bool{false, true} {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				http.Redirect(w, r, target.URL+"/other", code)
			}))
			var logged strings.Builder
			log := slog.New(slog.NewTextHandler(&logged, nil))
			wh := NewWebhook(WebhookOptions{URL: srv.URL, Headers: http.Header{"Authorization": {"Bearer t"}},
				Timeout: 10 * time.Second, RedirectPermanent: perm, Log: log})
			j := testJob("s@x.example", "x\n", "a@y.example")
			wh.Deliver(context.Background(), []*Job{j})
			st := j.Results[0].Status
			if st.IsAccept() || st.IsPermanent() != perm {
				t.Errorf("%d (permanent %v): got %v", code, perm, st)
			}
			if !strings.Contains(logged.String(), target.URL+"/other") {
				t.Errorf("%d: the log does not say where the redirect pointed: %s", code, logged.String())
			}
			wh.Close()
			srv.Close()
		}
	}
	if elsewhere != 0 {
		t.Fatalf("the redirect target got %d requests", elsewhere)
	}
}
