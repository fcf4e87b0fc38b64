package transport

import (
	"context"
	"errors"

	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
)

// QMQP delivers over QMQP to an ordered list of servers, failing over only
// when a connect fails (qmail-qmqpc's rule). QMQP carries one message per
// connection and one reply for all its recipients.
type QMQP struct {
	Client *qmqp.Client
}

// Deliver implements Transport.
func (t *QMQP) Deliver(ctx context.Context, jobs []*Job) {
	for _, j := range jobs {
		b := &lazyBody{open: j.Open}
		res, err := t.Client.Send(ctx, j.Envelope, b, j.Size)
		b.Close()
		st := res.Status
		host := res.Server
		if err != nil {
			var ce *qmqp.ConnectError
			if errors.As(err, &ce) {
				st = ce.Status()
			} else if st.IsAccept() {
				st = mail.StatusTempFailure // an error never delivers
			}
		}
		if host == "" && len(t.Client.Servers) > 0 {
			host = t.Client.Servers[0]
		}
		j.SetAll(st, host)
		j.Done()
	}
}

// Close implements Transport.
func (t *QMQP) Close() error { return nil }
