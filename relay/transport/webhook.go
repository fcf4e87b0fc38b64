package transport

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	retryablehttp "github.com/hashicorp/go-retryablehttp"

	"github.com/qmgate/qmgate/mail"
)

// Webhook delivers each job as one HTTP POST of the message (Content-Type
// message/rfc822) to URL, with the envelope in headers:
//
//	X-Qmgate-Id:        the queue ID
//	X-Qmgate-Sender:    the envelope sender ("" for bounces)
//	X-Qmgate-Recipient: one header per recipient
//	Idempotency-Key:    the same for every attempt of the same message and
//	                    recipients, so a receiver can drop duplicates
//
// A 2xx answer delivers; a 4xx other than 408 and 429 fails permanently;
// everything else (5xx, 408, 429, connection and TLS errors, timeouts) is
// temporary. Redirects are never followed (a 303 would turn the POST into a
// body-less GET, a 307 would hand the message and its secret headers to
// another host): a 3xx is a temporary failure, or a permanent one with
// WebhookOptions.RedirectPermanent, and the log says where it pointed. go-retryablehttp retries a few times within one attempt; the
// queue's backoff handles longer outages. The body streams from the queue
// file on every try; nothing is buffered.
type Webhook struct {
	URL     string
	Headers http.Header
	// RedirectPermanent makes a 3xx answer a permanent failure.
	RedirectPermanent bool
	client            *retryablehttp.Client
	log               *slog.Logger
}

// WebhookOptions configure a webhook transport.
type WebhookOptions struct {
	// URL receives the POSTs.
	URL string
	// Headers are added to every request (authorization, say).
	Headers http.Header
	// HTTPClient may carry a custom TLS configuration; nil uses a default
	// transport.
	HTTPClient *http.Client
	// Timeout bounds each HTTP request; zero means none beyond ctx.
	Timeout time.Duration
	// RedirectPermanent makes a 3xx answer a permanent failure; by default
	// it is temporary. Redirects are never followed.
	RedirectPermanent bool
	// Log receives the retry client's lines and refused redirects; nil
	// discards them.
	Log *slog.Logger
}

// NewWebhook returns a webhook transport.
func NewWebhook(o WebhookOptions) *Webhook {
	c := retryablehttp.NewClient()
	if o.HTTPClient != nil {
		hc := *o.HTTPClient
		c.HTTPClient = &hc
	}
	c.HTTPClient.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if o.Timeout > 0 {
		c.HTTPClient.Timeout = o.Timeout
	}
	c.RetryMax = 2
	c.RetryWaitMin = 500 * time.Millisecond
	c.RetryWaitMax = 5 * time.Second
	log := cmp.Or(o.Log, slog.New(slog.DiscardHandler)).With("transport", "webhook")
	c.Logger = slogLeveled{log}
	// Give the caller the last response instead of an error after retries,
	// so the status code decides the class.
	c.ErrorHandler = retryablehttp.PassthroughErrorHandler
	return &Webhook{URL: o.URL, Headers: o.Headers, RedirectPermanent: o.RedirectPermanent, client: c, log: log}
}

// Deliver implements Transport.
func (w *Webhook) Deliver(ctx context.Context, jobs []*Job) {
	for _, j := range jobs {
		st := w.post(ctx, j)
		j.SetAll(st, w.URL)
		j.Done()
	}
}

func (w *Webhook) post(ctx context.Context, j *Job) mail.Status {
	body := retryablehttp.ReaderFunc(func() (io.Reader, error) {
		r, err := j.Open()
		if err != nil {
			return nil, err
		}
		return &sizedReader{ReadCloser: r, n: int(j.Size)}, nil
	})
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, w.URL, body)
	if err != nil {
		return mail.Temp("4.3.0", "cannot prepare webhook request")
	}
	for k, vs := range w.Headers {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Content-Type", "message/rfc822")
	req.Header.Set("X-Qmgate-Id", j.ID)
	req.Header.Set("X-Qmgate-Sender", mail.OneLine(j.Envelope.Sender))
	h := sha256.New()
	h.Write([]byte(j.ID))
	for _, r := range j.Envelope.Recipients {
		req.Header.Add("X-Qmgate-Recipient", mail.OneLine(r))
		h.Write([]byte{0})
		h.Write([]byte(r))
	}
	req.Header.Set("Idempotency-Key", j.ID+"-"+hex.EncodeToString(h.Sum(nil)[:8]))
	resp, err := w.client.Do(req)
	if err != nil {
		return mail.Temp("4.4.1", "webhook not reachable")
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	st := webhookStatus(resp.StatusCode, resp.Status)
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		st.Text += " (a redirect; redirects are not followed)"
		if w.RedirectPermanent {
			st.Class, st.Code = mail.Permanent, "5.4.6"
		}
		loc := resp.Header.Get("Location")
		w.log.Warn("webhook redirected; not followed", "id", j.ID, "url", w.URL,
			"status", resp.StatusCode, "location", mail.OneLine(loc[:min(len(loc), 512)]))
	}
	return st
}

// webhookStatus classifies an HTTP answer.
func webhookStatus(code int, status string) mail.Status {
	text := "webhook answered " + strings.TrimSpace(status)
	if status == "" {
		text = fmt.Sprintf("webhook answered %d", code)
	}
	switch {
	case code >= 200 && code < 300:
		return mail.OK(text)
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		return mail.Temp("4.4.2", text)
	case code >= 300 && code < 400:
		// RFC 3463 4.4.6: routing loop or redirect, here temporary unless
		// the route says otherwise.
		return mail.Temp("4.4.6", text)
	case code >= 400 && code < 500:
		return mail.Perm("5.0.0", text)
	}
	return mail.Temp("4.4.2", text)
}

// Close implements Transport.
func (w *Webhook) Close() error {
	w.client.HTTPClient.CloseIdleConnections()
	return nil
}

// sizedReader gives retryablehttp the body length (LenReader) so the request
// carries a Content-Length instead of chunked encoding.
type sizedReader struct {
	io.ReadCloser
	n int
}

func (s *sizedReader) Len() int { return s.n }

// slogLeveled plugs go-retryablehttp's logging into ours.
type slogLeveled struct{ l *slog.Logger }

func (s slogLeveled) Error(msg string, kv ...any) { s.l.Error(msg, kv...) }
func (s slogLeveled) Info(msg string, kv ...any)  { s.l.Debug(msg, kv...) }
func (s slogLeveled) Debug(msg string, kv ...any) { s.l.Debug(msg, kv...) }
func (s slogLeveled) Warn(msg string, kv ...any)  { s.l.Warn(msg, kv...) }
