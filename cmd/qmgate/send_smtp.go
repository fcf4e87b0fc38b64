package main

import (
	"context"
	"io"
	"net/url"

	"github.com/qmgate/qmgate/mail"
)

// sendSMTP is replaced when the SMTP client lands.
func sendSMTP(ctx context.Context, u *url.URL, env mail.Envelope, body io.Reader, size int64, insecure bool) []mail.Status {
	return nil
}
