package main

import (
	"context"
	"io"
	"net/url"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/smtp"
)

// sendSMTP delivers over smtp:// (STARTTLS when offered, since this is a
// one-shot test and diagnosis tool) or smtps://.
func sendSMTP(ctx context.Context, u *url.URL, env mail.Envelope, body io.Reader, size int64, insecure bool) []mail.Status {
	c := &smtp.Client{TLS: smtp.TLSOpportunistic, TLSConfig: tlsClientConfig(u.Hostname(), insecure)}
	conn, err := c.Dial(ctx, u.Scheme+"://"+u.Host)
	if err != nil {
		st := mail.StatusOf(err)
		out := make([]mail.Status, len(env.Recipients))
		for i := range out {
			out[i] = st
		}
		return out
	}
	defer conn.Close()
	sts, _ := conn.Send(ctx, env, body)
	return sts
}
