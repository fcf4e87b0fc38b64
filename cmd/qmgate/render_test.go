package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/queue"
)

func TestFormatAge(t *testing.T) {
	for sec, want := range map[int64]string{-5: "0s", 0: "0s", 59: "59s", 60: "1m", 3599: "59m", 3600: "1h", 3660: "1h1m", 86400: "1d", 90000: "1d1h"} {
		if got := formatAge(sec); got != want {
			t.Errorf("formatAge(%d) = %q, want %q", sec, got, want)
		}
	}
}

func testRows() []queue.Row {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.Local)
	return []queue.Row{
		{ID: "01m8tdtzca000", Received: t0, AgeSeconds: 1800, Size: 2000, Sender: "alice@example.org", State: queue.RowDeferred,
			Recipients: 3, Pending: []string{"bob@example.com", "carol@example.com"}, Attempts: 2,
			NextAttempt: t0.Add(time.Hour), NextInSeconds: 600, LastError: "mx.example.com said: 451 4.4.1 connection refused"},
		{ID: "01m8tdtzcb000", Received: t0.Add(time.Minute), AgeSeconds: 60, Size: 100, Sender: "", State: queue.RowHeld,
			Recipients: 1, Pending: []string{"eve@example.com"}},
	}
}

func TestWriteList(t *testing.T) {
	var buf bytes.Buffer
	if err := writeList(&buf, testRows(), false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") {
		t.Fatalf("list:\n%s", buf.String())
	}
	f := strings.Fields(lines[1])
	want := []string{"01m8tdtzca000", "30m", "2000", "deferred", "10m", "<alice@example.org>", "2", "<bob@example.com>,<carol@example.com>", "mx.example.com"}
	for i, w := range want {
		if f[i] != w {
			t.Errorf("field %d = %q, want %q (%q)", i, f[i], w, lines[1])
		}
	}
	if f2 := strings.Fields(lines[2]); f2[4] != "-" || f2[5] != "<>" || f2[8] != "-" {
		t.Errorf("held bounce row %q", f2)
	}
}

func TestWriteMailq(t *testing.T) {
	var buf bytes.Buffer
	if err := writeMailq(&buf, testRows()); err != nil {
		t.Fatal(err)
	}
	want := `-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
01m8tdtzca000      2000 Tue Dec  1 10:00:00  alice@example.org
(mx.example.com said: 451 4.4.1 connection refused)
                                         bob@example.com
                                         carol@example.com

01m8tdtzcb000!      100 Tue Dec  1 10:01:00  MAILER-DAEMON
                                         eve@example.com

-- 2 Kbytes in 2 Requests.
`
	if buf.String() != want {
		t.Fatalf("mailq:\n%s\nwant:\n%s", buf.String(), want)
	}
	buf.Reset()
	writeMailq(&buf, nil)
	if buf.String() != "Mail queue is empty\n" {
		t.Fatalf("empty: %q", buf.String())
	}
}

func TestWriteMailqJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := writeMailqJSON(&buf, testRows()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one line per message:\n%s", buf.String())
	}
	var m struct {
		QueueName   string `json:"queue_name"`
		QueueID     string `json:"queue_id"`
		ArrivalTime int64  `json:"arrival_time"`
		MessageSize int64  `json:"message_size"`
		Sender      string `json:"sender"`
		Recipients  []struct {
			Address     string `json:"address"`
			DelayReason string `json:"delay_reason"`
		} `json:"recipients"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if m.QueueName != "deferred" || m.QueueID != "01m8tdtzca000" || m.MessageSize != 2000 || m.Sender != "alice@example.org" ||
		len(m.Recipients) != 2 || m.Recipients[1].Address != "carol@example.com" ||
		!strings.Contains(m.Recipients[0].DelayReason, "connection refused") || m.State != "deferred" || m.ArrivalTime == 0 {
		t.Fatalf("json: %+v", m)
	}
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil || m.QueueName != "hold" {
		t.Fatalf("held: %v %+v", err, m)
	}
}

func TestWriteStatAndDetail(t *testing.T) {
	st := &queue.Stats{Messages: 2, BucketMinutes: queue.ShapeBucketMinutes,
		Total: queue.DomainShape{Domain: "TOTAL", Total: 1, Buckets: make([]int, len(queue.ShapeBucketMinutes)+1)}}
	var buf bytes.Buffer
	writeStat(&buf, st, nil, false)
	if !strings.Contains(buf.String(), "TOTAL") || !strings.Contains(buf.String(), "1280+") || !strings.HasPrefix(buf.String(), "messages 2 ") {
		t.Errorf("stat text:\n%s", buf.String())
	}
	rows := testRows()
	d := &queue.Detail{Row: rows[0], Recipient: []queue.RecipientDetail{{Address: "bob@example.com", State: queue.Pending, Attempts: 1,
		History: []queue.Attempt{{Time: rows[0].Received, Route: "smtp://mx", Host: "mx.example.com", Result: "temporary", Reply: "451 4.4.1 connection refused"}}}},
		Header: "Subject: hi\n"}
	buf.Reset()
	writeDetail(&buf, d, false)
	for _, want := range []string{"id          01m8tdtzca000", "<bob@example.com>  pending", "route=smtp://mx host=mx.example.com", "  Subject: hi"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("show lacks %q:\n%s", want, buf.String())
		}
	}
}
