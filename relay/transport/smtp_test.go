package transport

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/smtp"
)

// TestSMTPTLSPolicy: a smarthost's results name the route's TLS policy,
// whether delivered (recorded at Done, before the engine reads them) or not
// connected at all.
func TestSMTPTLSPolicy(t *testing.T) {
	sink := testpeer.NewSMTPSink(t)
	for _, c := range []struct {
		tls  smtp.TLSPolicy
		want string
	}{{smtp.TLSNone, TLSPolicyNone}, {smtp.TLSOpportunistic, TLSPolicyOpportunistic}} {
		tr := NewSMTP("smtp://"+sink.Addr, &smtp.Client{TLS: c.tls, LocalName: "hub.test"}, Reuse{})
		j := failoverJob()
		var atDone string
		j.OnDone = func() { atDone = j.Results[0].TLSPolicy }
		tr.Deliver(context.Background(), []*Job{j})
		tr.Close()
		if !j.Results[0].Status.IsAccept() || atDone != c.want {
			t.Errorf("%v: %v, policy at Done %q, want %q", c.tls, j.Results[0].Status, atDone, c.want)
		}
	}

	// Nobody listens: the dial failure names the policy too.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	tr := NewSMTP("smtp://"+addr, &smtp.Client{ConnectTimeout: 10 * time.Second}, Reuse{})
	defer tr.Close()
	j := failoverJob()
	tr.Deliver(context.Background(), []*Job{j})
	if j.Results[0].Status.IsAccept() || j.Results[0].TLSPolicy != TLSPolicySmarthostRequired {
		t.Errorf("dial failure: %+v", j.Results[0])
	}
}
