//go:build linux

package reliability

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/mail"
)

// Every test message is a pure function of its marker, so a delivered copy
// can be checked byte for byte without keeping what was sent.
//
//	Message-ID: <MARKER@reliability.test>
//	Subject: reliability MARKER
//	X-Size: N
//
//	lines of printable text, some starting with "." (SMTP dot-stuffing),
//	"From " (mbox), a lone "." and an empty line, ending with LF.

const markerDomain = "@reliability.test>"

// bodySizes says how big messages get: mostly small, some over the queue's
// 256 KiB inline limit so bodies go to files of their own too.
type bodySizes struct {
	Small, Medium, Large int // percentages of each class; the rest tiny
}

var defaultSizes = bodySizes{Small: 70, Medium: 25, Large: 2}

func seedOf(marker string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(marker))
	return h.Sum64()
}

// makeBody returns the message for marker.
func makeBody(marker string) []byte { return makeBodySized(marker, defaultSizes) }

func makeBodySized(marker string, sz bodySizes) []byte {
	r := rand.New(rand.NewPCG(seedOf(marker), 7))
	var size int
	switch p := r.IntN(100); {
	case p < sz.Large:
		size = 256<<10 + r.IntN(512<<10)
	case p < sz.Large+sz.Medium:
		size = 4<<10 + r.IntN(60<<10)
	case p < sz.Large+sz.Medium+sz.Small:
		size = 200 + r.IntN(4<<10)
	default:
		size = r.IntN(200)
	}
	return fillBody(marker, size, r)
}

// makeBodyOf returns a message for marker of about size bytes.
func makeBodyOf(marker string, size int) []byte {
	return fillBody(marker, size, rand.New(rand.NewPCG(seedOf(marker), 7)))
}

func fillBody(marker string, size int, r *rand.Rand) []byte {
	var b bytes.Buffer
	b.Grow(size + 200)
	fmt.Fprintf(&b, "Message-ID: <%s@reliability.test>\nSubject: reliability %s\nX-Size: %d\n\n", marker, marker, size)
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:-_=+!?<>()"
	for b.Len() < size {
		switch r.IntN(20) {
		case 0:
			b.WriteString(".")
		case 1:
			b.WriteString("..")
		case 2:
			b.WriteString("From ")
		case 3:
			b.WriteString(".\n")
			continue
		case 4:
			b.WriteString("\n")
			continue
		}
		n := r.IntN(120)
		for i := 0; i < n; i++ {
			b.WriteByte(alphabet[r.IntN(len(alphabet))])
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "end of %s\n", marker)
	return b.Bytes()
}

// parseDelivered finds the test message inside a delivered copy (below the
// trace lines hubs add) and reports its marker and whether it is intact.
func parseDelivered(content []byte) (marker string, intact bool) {
	i := bytes.Index(content, []byte("Message-ID: <"))
	if i < 0 {
		return "", false
	}
	rest := content[i+len("Message-ID: <"):]
	j := bytes.Index(rest, []byte(markerDomain))
	if j < 0 || j > 200 {
		return "", false
	}
	marker = string(rest[:j])
	want := makeBody(marker)
	if sizedMarker(marker) {
		want = makeBodyOf(marker, sizeOfMarker(marker))
	}
	return marker, bytes.Equal(content[i:], want)
}

// Markers of fixed-size messages end in "~SIZE".
func sizedMarker(m string) bool { return strings.Contains(m, "~") }

func sizeOfMarker(m string) int {
	var n int
	fmt.Sscanf(m[strings.LastIndexByte(m, '~')+1:], "%d", &n)
	return n
}

// bodyFor returns the message for a marker, sized or not.
func bodyFor(marker string) []byte {
	if sizedMarker(marker) {
		return makeBodyOf(marker, sizeOfMarker(marker))
	}
	return makeBody(marker)
}

// rcptKey is one recipient of one message.
type rcptKey struct{ Marker, Rcpt string }

// ledger records what senders were told. A recipient is acknowledged when
// its sender got K or 250 for it.
type ledger struct {
	mu        sync.Mutex
	acked     map[rcptKey]bool
	attempted map[string]bool // markers sent (acknowledged or not)
	tempFails int
	tempProto map[string]int
	permFails []string // unexpected permanent refusals
	perProto  map[string]int
	lastTemp  string
	idMarker  map[string]string // the daemon's queue ID (from "ok ... qp ID") → marker
}

func newLedger() *ledger {
	return &ledger{acked: map[rcptKey]bool{}, attempted: map[string]bool{}, perProto: map[string]int{}, tempProto: map[string]int{}, idMarker: map[string]string{}}
}

func (l *ledger) attempt(marker string) {
	l.mu.Lock()
	l.attempted[marker] = true
	l.mu.Unlock()
}

// result records the status a sender got for one recipient.
func (l *ledger) result(proto, marker, rcpt string, st mail.Status) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case st.IsAccept():
		l.acked[rcptKey{marker, rcpt}] = true
		l.perProto[proto]++
		if m := qpRE.FindStringSubmatch(st.Text); m != nil {
			l.idMarker[m[1]] = marker
		}
	case st.IsPermanent():
		if len(l.permFails) < 20 {
			l.permFails = append(l.permFails, fmt.Sprintf("%s %s %s: %s", proto, marker, rcpt, st.Reply()))
		}
	default:
		l.tempFails++
		l.tempProto[proto]++
		l.lastTemp = proto + " " + string(st.Reply())
	}
}

// lastTempReply returns the latest temporary refusal.
func (l *ledger) lastTempReply() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastTemp
}

// temps returns the temporary refusals seen per protocol.
func (l *ledger) temps(proto string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tempProto[proto]
}

func (l *ledger) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *ledger) ackedKeys() map[rcptKey]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[rcptKey]bool, len(l.acked))
	for k := range l.acked {
		out[k] = true
	}
	return out
}

func (l *ledger) wasAttempted(marker string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.attempted[marker]
}

func (l *ledger) protoCounts() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ks []string
	for k, v := range l.perProto {
		ks = append(ks, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

// tally compares deliveries with the ledger.
type tally struct {
	Acked, Delivered, Lost, Dups int
	UnackedDelivered             int // delivered without the sender hearing K (a crash between commit and reply)
	Corrupt, Unknown             []string
	LostKeys                     []rcptKey
}

// delivered counts intact deliveries per recipient; corrupt and unknown
// copies are listed separately.
type deliveredSet struct {
	count   map[rcptKey]int
	copies  map[rcptKey][]copyInfo
	corrupt []string
	unknown []string
}

// copyInfo says who delivered one copy, and when.
type copyInfo struct {
	PID int       // the delivering daemon's process (Maildir file names carry it)
	At  time.Time // when it was written or received
}

func (l *ledger) tally(ds *deliveredSet) tally {
	acked := l.ackedKeys()
	var t tally
	t.Acked = len(acked)
	t.Corrupt, t.Unknown = ds.corrupt, ds.unknown
	for k := range acked {
		n := ds.count[k]
		if n == 0 {
			t.Lost++
			if len(t.LostKeys) < 20 {
				t.LostKeys = append(t.LostKeys, k)
			}
			continue
		}
		t.Delivered++
		t.Dups += n - 1
	}
	for k, n := range ds.count {
		if !acked[k] {
			t.UnackedDelivered++
			t.Dups += n - 1
			if !l.wasAttempted(k.Marker) {
				t.Unknown = append(t.Unknown, k.Marker)
			}
		}
	}
	return t
}

// check fails the test for lost, corrupt or invented mail.
func (tl tally) check(t *testing.T) {
	t.Helper()
	if tl.Acked == 0 {
		t.Error("no message was acknowledged at all")
	}
	if tl.Lost > 0 {
		t.Errorf("LOST %d acknowledged recipients, e.g. %v", tl.Lost, tl.LostKeys)
	}
	if len(tl.Corrupt) > 0 {
		t.Errorf("%d corrupt deliveries, e.g. %v", len(tl.Corrupt), tl.Corrupt[:min(5, len(tl.Corrupt))])
	}
	if len(tl.Unknown) > 0 {
		t.Errorf("%d deliveries of messages never sent, e.g. %v", len(tl.Unknown), tl.Unknown[:min(5, len(tl.Unknown))])
	}
}

// scanMaildirs reads every delivered message under root (root/DOMAIN/USER/
// {new,cur}/*), keyed by the Delivered-To line the Maildir transport adds.
// Mailboxes named in skip hold hand-made messages and are left out.
// holdsAll reports whether every recipient in keys was delivered at least
// once.
func (ds *deliveredSet) holdsAll(keys map[rcptKey]bool) bool {
	for k := range keys {
		if ds.count[k] == 0 {
			return false
		}
	}
	return true
}

func scanMaildirs(root string, skip ...string) *deliveredSet {
	ds := &deliveredSet{count: map[rcptKey]int{}, copies: map[rcptKey][]copyInfo{}}
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(root, "*", "*", sub, "*"))
	files:
		for _, f := range files {
			for _, box := range skip {
				if filepath.Base(filepath.Dir(filepath.Dir(f))) == box {
					continue files
				}
			}
			b, err := os.ReadFile(f)
			if err != nil {
				ds.corrupt = append(ds.corrupt, f+": "+err.Error())
				continue
			}
			rcpt := headerValue(b, "Delivered-To")
			marker, ok := parseDelivered(b)
			if !ok {
				ds.corrupt = append(ds.corrupt, f)
				continue
			}
			k := rcptKey{marker, rcpt}
			ds.count[k]++
			ci := copyInfo{PID: maildirPID(filepath.Base(f))}
			if st, err := os.Stat(f); err == nil {
				ci.At = st.ModTime()
			}
			ds.copies[k] = append(ds.copies[k], ci)
		}
	}
	return ds
}

var pidRE = regexp.MustCompile(`P(\d+)Q`)

// qpRE finds the queue ID in qmgate's acceptance text.
var qpRE = regexp.MustCompile(`\bqp ([0-9a-z]+)`)

// markerOf returns the marker of a message by its queue ID.
func (l *ledger) markerOf(id string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.idMarker[id]
	return m, ok
}

// deliveredLines returns the (queue ID, recipient) pairs the daemon logged
// as delivered.
func deliveredLines(log string) [][2]string {
	var out [][2]string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, `msg="queue: delivery"`) || !strings.Contains(l, "state=delivered") {
			continue
		}
		id, rcpt := fieldOf(l, "id"), fieldOf(l, "rcpt")
		if id != "" && rcpt != "" {
			out = append(out, [2]string{id, rcpt})
		}
	}
	return out
}

// fieldOf returns the value of key=value in a slog text line.
func fieldOf(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return v
}

// maildirPID extracts the delivering process from a Maildir file name
// (seconds.M<usec>P<pid>Q<seq>.host).
func maildirPID(name string) int {
	m := pidRE.FindStringSubmatch(name)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// countMaildir counts the messages in one mailbox.
func countMaildir(root, domain, user string) int {
	n := 0
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(root, domain, user, sub, "*"))
		n += len(files)
	}
	return n
}

// headerValue returns the first value of a trace or header field.
func headerValue(msg []byte, name string) string {
	for _, line := range strings.SplitN(string(msg[:min(len(msg), 8192)]), "\n", 40) {
		if v, ok := strings.CutPrefix(line, name+": "); ok {
			return strings.TrimSpace(v)
		}
		if line == "" {
			break
		}
	}
	return ""
}
