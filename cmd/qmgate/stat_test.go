package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/config"
	"github.com/qmgate/qmgate/queue"
)

// queue stat names each destination by its routes and next hop, and shows
// the next hops' health from the daemon, or says plainly that it is not
// known without one.
func TestWriteStatRoutesAndHosts(t *testing.T) {
	nb := len(queue.ShapeBucketMinutes) + 1
	b := func(n int) []int { x := make([]int, nb); x[0] = n; return x }
	st := &queue.Stats{BucketMinutes: queue.ShapeBucketMinutes, Total: queue.DomainShape{Domain: "TOTAL", Buckets: make([]int, nb)},
		Destinations: []queue.DestinationShape{
			{Destination: "smtp://a.example:587", Total: 3, Buckets: b(3)},
			{Destination: "mx:example.org", Total: 2, Buckets: b(2)},
			{Destination: "noroute", Total: 1, Buckets: b(1)},
		}}
	routes := []config.Route{
		{Name: "m365", Domains: []string{"corp.example"}, Via: "smtp://a.example:587", Hosts: []string{"smtp://a.example:587", "smtp://b.example:587"}},
		{Name: "internet", Domains: []string{"*"}, Via: "mx"},
	}
	var buf bytes.Buffer
	if err := writeStat(&buf, st, routes, false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"ROUTE     NEXT-HOP",
		"\nm365      smtp://a.example:587,smtp://b.example:587  3",
		"\ninternet  MX:example.org",
		"\n-         none",
		"next hops: not known, the daemon is not running",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stat lacks %q:\n%s", want, out)
		}
	}

	now := time.Now()
	st.Daemon = true
	st.NextHops = []queue.NextHop{
		{Host: "smtp://a.example:587", Up: false, Since: now.Add(-time.Minute), DownUntil: now.Add(2 * time.Minute), Failures: 2,
			LastError: "connection refused", LastErrorAt: now.Add(-30 * time.Second)},
		{Host: "smtp://b.example:587", Up: true},
	}
	buf.Reset()
	writeStat(&buf, st, routes, false)
	out = buf.String()
	for _, want := range []string{"HOST                  STATE", "smtp://a.example:587  down   ", "  2         connection refused (", "smtp://b.example:587  up "} {
		if !strings.Contains(out, want) {
			t.Errorf("stat lacks %q:\n%s", want, out)
		}
	}
	buf.Reset()
	writeStat(&buf, st, routes, true)
	var j struct {
		Daemon   bool
		Routes   []routeShape    `json:"routes"`
		NextHops []queue.NextHop `json:"next_hops"`
	}
	if err := json.Unmarshal(buf.Bytes(), &j); err != nil || !j.Daemon || len(j.Routes) != 3 || j.Routes[1].Route != "internet" || len(j.NextHops) != 2 {
		t.Errorf("json %v %+v\n%s", err, j, buf.String())
	}
}

// mailq shows each pending recipient under its own last error, as
// Postfix groups them.
func TestMailqPerRecipientErrors(t *testing.T) {
	rows := testRows()
	rows[0].Pending = []string{"bob@example.com", "carol@example.com", "dan@example.com"}
	rows[0].PendingErrors = []string{"mx.example.com said: 451 4.4.1 connection refused", "", "mx.example.com said: 452 4.2.2 mailbox full"}
	var buf bytes.Buffer
	if err := writeMailq(&buf, rows[:1]); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat(" ", 41)
	want := pad + "carol@example.com\n(mx.example.com said: 451 4.4.1 connection refused)\n" + pad + "bob@example.com\n" +
		"(mx.example.com said: 452 4.2.2 mailbox full)\n" + pad + "dan@example.com\n"
	if !strings.Contains(buf.String(), want) {
		t.Errorf("mailq:\n%s\nwant\n%s", buf.String(), want)
	}
	buf.Reset()
	writeMailqJSON(&buf, rows[:1])
	var m mailqMessage
	json.Unmarshal(buf.Bytes(), &m)
	if m.Recipients[0].DelayReason == m.Recipients[2].DelayReason || m.Recipients[1].DelayReason != "" {
		t.Errorf("json reasons %+v", m.Recipients)
	}
}
