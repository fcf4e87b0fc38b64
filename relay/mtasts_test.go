package relay

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/mtasts"
	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/relay/transport"
)

// policySite is what the policy server answers for one mta-sts host.
type policySite struct {
	body     string
	location string // a redirect
}

// startPolicyServer runs one HTTPS server on addr standing in for every
// mta-sts.DOMAIN, with a certificate from ca for the given names.
func startPolicyServer(t *testing.T, ca *testpeer.CA, addr string, sites map[string]policySite, mu *sync.Mutex, names ...string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			s, ok := sites[strings.ToLower(r.Host)]
			mu.Unlock()
			switch {
			case !ok || r.URL.Path != "/.well-known/mta-sts.txt":
				http.NotFound(w, r)
			case s.location != "":
				http.Redirect(w, r, s.location, http.StatusFound)
			default:
				w.Header().Set("Content-Type", "text/plain")
				io.WriteString(w, s.body)
			}
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{ca.Issue(names[0], x509.ExtKeyUsageServerAuth, names...)}},
		ReadHeaderTimeout: time.Minute,
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { srv.Close(); <-done })
}

// startTLSSink starts an SMTP sink on addr that offers STARTTLS with cert
// and records whether each message came over TLS, and for which name.
func startTLSSink(t *testing.T, addr string, cert tls.Certificate) *testpeer.SMTPSink {
	t.Helper()
	return testpeer.StartSMTPSink(t, testpeer.SMTPSinkConfig{Addr: addr, Cert: &cert})
}

// hasDeliveryLine reports whether log has a delivery line for rcpt under
// the TLS policy.
func hasDeliveryLine(log, rcpt, policy string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `msg="queue: delivery"`) && strings.Contains(l, "rcpt="+rcpt+" ") && strings.Contains(l, "tls_policy="+policy) {
			return true
		}
	}
	return false
}

// tlsPolicyCount reads qmgate_deliveries_by_tls_policy_total{policy, result}.
func tlsPolicyCount(t *testing.T, h *testHub, policy, result string) float64 {
	t.Helper()
	mfs, err := h.hub.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "qmgate_deliveries_by_tls_policy_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["policy"] == policy && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

const stsEnforce = "version: STSv1\nmode: enforce\nmx: %s\nmax_age: 86400\n"

// TestHubMTASTS runs MTA-STS end to end through a hub's mx route, with a
// local DNS server, a local HTTPS policy server and SMTP servers with
// certificates from a test CA (the route's ca_file):
//
//   - enforce, the MX named by the policy, valid certificate: delivered
//     over TLS;
//   - enforce, an MX the policy does not name: deferred, nothing delivered,
//     and `queue show` names the policy; a new policy id that names it
//     is fetched again and the mail goes;
//   - enforce, a certificate not valid for the MX's name: deferred;
//   - testing, an MX the policy does not name: delivered, the log says what
//     enforcement would have refused;
//   - a policy larger than the limit and a redirect: refused, so no
//     policy, and delivery goes on as without one (opportunistic);
//   - no policy at all: opportunistic.
//
// The metric of deliveries by TLS policy counts each.
func TestHubMTASTS(t *testing.T) {
	const good, other = "127.0.0.3", "127.0.0.4"
	sport := commonPort(t, good, other)
	qport := commonPort(t, good, other) // nobody listens: MXPS is not in play
	hport := commonPort(t, good)
	ca := testpeer.NewCA(t, "qmgate MTA-STS test CA", "")
	// One sink has a certificate for every name but mx.badcert.test;
	// the other stands for exchangers no policy names.
	sinkGood := startTLSSink(t, fmt.Sprintf("%s:%d", good, sport),
		ca.Issue("mx.good.test", x509.ExtKeyUsageServerAuth, "mx.good.test", "mx.moved.test", "mx.testing.test", "mx.big.test", "mx.plain.test", "mx.idchange.test", "other.badcert.test"))
	sinkOther := startTLSSink(t, fmt.Sprintf("%s:%d", other, sport), ca.Issue("mx.badmx.test", x509.ExtKeyUsageServerAuth, "mx.badmx.test"))

	var mu sync.Mutex
	sites := map[string]policySite{
		"mta-sts.good.test":     {body: fmt.Sprintf(stsEnforce, "mx.good.test")},
		"mta-sts.badmx.test":    {body: fmt.Sprintf(stsEnforce, "mx.elsewhere.test")},
		"mta-sts.idchange.test": {body: fmt.Sprintf(stsEnforce, "mx.elsewhere.test")},
		"mta-sts.badcert.test":  {body: fmt.Sprintf(stsEnforce, "*.badcert.test")},
		"mta-sts.testing.test":  {body: "version: STSv1\nmode: testing\nmx: mx.elsewhere.test\nmax_age: 86400\n"},
		"mta-sts.big.test":      {body: fmt.Sprintf(stsEnforce, "mx.elsewhere.test") + strings.Repeat("# padding\n", 7000)},
		"mta-sts.moved.test":    {location: "https://mta-sts.good.test/.well-known/mta-sts.txt"},
	}
	var hostNames []string
	for h := range sites {
		hostNames = append(hostNames, h)
	}
	startPolicyServer(t, ca, fmt.Sprintf("%s:%d", good, hport), sites, &mu, hostNames...)

	dns := testpeer.StartDNS(t, "127.0.0.1")
	for _, d := range []string{"good", "badmx", "idchange", "badcert", "testing", "big", "moved", "plain"} {
		mxHost := "mx." + d + ".test"
		dns.SetMX(d+".test", &net.MX{Host: mxHost, Pref: 10})
		dns.SetA(mxHost, good)
		dns.SetA("mta-sts."+d+".test", good)
		if d != "plain" {
			dns.SetTXT("_mta-sts."+d+".test", "v=STSv1; id=1")
		}
	}
	dns.SetA("mx.badmx.test", other)

	h := startMXHub(t, mxHubConfig{Resolver: dns.Addr, QMTPPort: qport, SMTPPort: sport, MTASTSPort: hport, CAFile: ca.File})

	ids := map[string]string{}
	sendEach(t, h, "sts", "u@good.test", "u@badmx.test", "u@idchange.test", "u@badcert.test", "u@testing.test", "u@big.test",
		"u@moved.test", "u@plain.test")
	for _, d := range []string{"good", "testing", "big", "moved", "plain"} {
		rcpt := "u@" + d + ".test"
		testpeer.WaitFor(t, "delivery to "+rcpt, 30*time.Second, func() bool { return len(sinkGood.To(rcpt)) == 1 })
		if m := sinkGood.To(rcpt)[0]; !m.TLS || m.ServerName != "mx."+d+".test" {
			t.Errorf("%s: delivered without TLS or to another name: %+v", rcpt, m)
		}
	}
	// The three enforce failures wait in the queue, each attempt recorded.
	testpeer.WaitFor(t, "the refused deliveries recorded", 30*time.Second, func() bool {
		rows, err := h.hub.Queue().List(t.Context())
		if err != nil || len(rows) != 3 {
			return false
		}
		for _, r := range rows {
			if r.Attempts == 0 {
				return false
			}
			ids[r.Pending[0]] = r.ID
		}
		return true
	})
	if n := len(sinkOther.Messages()); n != 0 {
		t.Errorf("an exchanger the policy does not name got %d messages", n)
	}
	for rcpt, want := range map[string]string{
		"u@badmx.test":    "allowed by its MTA-STS policy",
		"u@idchange.test": "allowed by its MTA-STS policy",
		"u@badcert.test":  "verified TLS its MTA-STS policy demands",
	} {
		det, err := h.hub.Queue().Show(t.Context(), ids[rcpt])
		if err != nil {
			t.Fatal(err)
		}
		hist := det.Recipient[0].History
		if len(hist) != 1 || hist[0].TLSPolicy != transport.TLSPolicyMTASTSEnforce || hist[0].Route == "" || strings.Contains(hist[0].Route, "tls") ||
			!strings.Contains(hist[0].Reply, want) || hist[0].Result != "temporary" {
			t.Errorf("%s: history %+v, want a temporary failure saying %q", rcpt, hist, want)
		}
	}

	// The policies are kept on disk in the queue directory.
	if _, err := os.Stat(filepath.Join(h.dir, "queue", "mtasts", "good.test.json")); err != nil {
		t.Errorf("cached policy: %v", err)
	}

	// The engine logs a delivery just after the next hop's reply, which
	// the sink may have recorded a moment before.
	deliveryLines := map[string]string{"u@good.test": "mta-sts-enforce", "u@testing.test": "mta-sts-testing",
		"u@plain.test": "opportunistic", "u@badmx.test": "mta-sts-enforce"}
	testpeer.Poll(30*time.Second, 20*time.Millisecond, func() bool {
		log := h.logText()
		for rcpt, policy := range deliveryLines {
			if !hasDeliveryLine(log, rcpt, policy) {
				return false
			}
		}
		return true
	})
	log := h.logText()
	for _, want := range []string{
		`msg="MTA-STS testing: enforcement would have refused this delivery" domain=testing.test host=mx.testing.test`,
		"policy larger than the limit",
		"redirect",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	for rcpt, policy := range deliveryLines {
		if !hasDeliveryLine(log, rcpt, policy) {
			t.Errorf("no delivery log line for %s with tls_policy=%s", rcpt, policy)
		}
	}
	for policy, want := range map[string][2]float64{
		transport.TLSPolicyMTASTSEnforce: {1, 3},
		transport.TLSPolicyMTASTSTesting: {1, 0},
		transport.TLSPolicyOpportunistic: {3, 0},
	} {
		if a, tf := tlsPolicyCount(t, h, policy, "accept"), tlsPolicyCount(t, h, policy, "temporary"); a != want[0] || tf != want[1] {
			t.Errorf("%s: %v delivered, %v deferred; want %v", policy, a, tf, want)
		}
	}

	// A new policy id that names the exchanger: fetched again at the next
	// attempt, and the mail goes (over verified TLS to mx.idchange.test).
	mu.Lock()
	sites["mta-sts.idchange.test"] = policySite{body: fmt.Sprintf(stsEnforce, "mx.idchange.test")}
	mu.Unlock()
	dns.SetTXT("_mta-sts.idchange.test", "v=STSv1; id=2")
	if err := h.hub.Queue().Flush(t.Context(), ids["u@idchange.test"]); err != nil {
		t.Fatal(err)
	}
	testpeer.WaitFor(t, "delivery to u@idchange.test under its new policy", 30*time.Second, func() bool {
		return len(sinkGood.To("u@idchange.test")) == 1
	})
	if m := sinkGood.To("u@idchange.test")[0]; !m.TLS || m.ServerName != "mx.idchange.test" {
		t.Errorf("u@idchange.test: %+v", m)
	}
	if n := len(sinkOther.Messages()); n != 0 {
		t.Errorf("an exchanger no policy names got %d messages", n)
	}
}

// TestHubMTASTSCache: policies cached on disk by an earlier run count. A
// domain whose TXT record is gone keeps its unexpired enforce policy (mail
// to an exchanger it does not name waits); an expired policy is no policy
// (delivered as without one).
func TestHubMTASTSCache(t *testing.T) {
	const ip = "127.0.0.3"
	sport := commonPort(t, ip)
	qport := commonPort(t, ip)
	ca := testpeer.NewCA(t, "qmgate MTA-STS test CA", "")
	sink := startTLSSink(t, fmt.Sprintf("%s:%d", ip, sport), ca.Issue("mx.cached.test", x509.ExtKeyUsageServerAuth, "mx.cached.test", "mx.expired.test"))
	dns := testpeer.StartDNS(t, "127.0.0.1")
	for _, d := range []string{"cached.test", "expired.test"} {
		dns.SetMX(d, &net.MX{Host: "mx." + d, Pref: 10})
		dns.SetA("mx."+d, ip)
	}

	qdir := filepath.Join(t.TempDir(), "queue")
	now := time.Now()
	for d, fetched := range map[string]time.Time{"cached.test": now.Add(-time.Hour), "expired.test": now.Add(-25 * time.Hour)} {
		p := mtasts.Policy{Mode: mtasts.ModeEnforce, MX: []string{"mx.elsewhere.test"}, MaxAge: 24 * time.Hour,
			Domain: d, ID: "1", Fetched: fetched, Expires: fetched.Add(24 * time.Hour)}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(qdir, "mtasts"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(qdir, "mtasts", d+".json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h := startMXHub(t, mxHubConfig{Resolver: dns.Addr, QMTPPort: qport, SMTPPort: sport, QueueDir: qdir, CAFile: ca.File})
	sendEach(t, h, "sts", "u@cached.test", "u@expired.test")
	testpeer.WaitFor(t, "delivery under the expired policy", 30*time.Second, func() bool { return len(sink.To("u@expired.test")) == 1 })
	testpeer.WaitFor(t, "the cached policy's refusal recorded", 30*time.Second, func() bool {
		rows, err := h.hub.Queue().List(t.Context())
		return err == nil && len(rows) == 1 && rows[0].Attempts > 0
	})
	rows, _ := h.hub.Queue().List(t.Context())
	if rows[0].Pending[0] != "u@cached.test" || !strings.Contains(rows[0].LastError, "MTA-STS") {
		t.Fatalf("queue: %+v", rows)
	}
	if n := len(sink.To("u@cached.test")); n != 0 {
		t.Errorf("delivered against the cached enforce policy: %d", n)
	}
	if a, d := tlsPolicyCount(t, h, transport.TLSPolicyOpportunistic, "accept"), tlsPolicyCount(t, h, transport.TLSPolicyMTASTSEnforce, "temporary"); a != 1 || d != 1 {
		t.Errorf("metric: %v opportunistic deliveries, %v enforce deferrals", a, d)
	}
}
