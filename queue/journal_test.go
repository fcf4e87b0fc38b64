package queue

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
)

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(dir, "journal", e.Name()))
	}
	slices.Sort(out)
	return out
}

func TestTornTailIgnored(t *testing.T) {
	for _, damage := range []string{"truncate", "garbage", "flip", "zeros"} {
		t.Run(damage, func(t *testing.T) {
			dir := t.TempDir()
			opt := testOptions(newFakeClock())
			q := openT(t, dir, opt)
			var ids []string
			var bodies [][]byte
			for i := 0; i < 5; i++ {
				b := bodyOf(1000, i)
				ids = append(ids, putT(t, q, "s@x", b, "r@y"))
				bodies = append(bodies, b)
			}
			q.Close()
			segs := segFiles(t, dir)
			last := segs[len(segs)-1]
			data, _ := os.ReadFile(last)
			if int64(len(data)) != DefaultSegmentSize {
				t.Fatalf("segment is %d bytes, want %d (preallocated)", len(data), DefaultSegmentSize)
			}
			// The records end where the preallocated zeros begin (the
			// test bodies never end in NUL).
			data = bytes.TrimRight(data, "\x00")
			switch damage {
			case "truncate": // a crash in the middle of the last record
				data = data[:len(data)-300]
			case "garbage":
				data = append(data, bytes.Repeat([]byte{0xA5, 0x17, 0x00, 0x42}, 100)...)
			case "flip": // media damage inside the last record's body
				data[len(data)-500] ^= 0x40
			case "zeros": // the size grew but the data never arrived
				data = append(data, make([]byte, 4096)...)
			}
			os.WriteFile(last, data, 0o600)
			q = openT(t, dir, opt)
			ds := claimAll(q)
			want := 5
			if damage == "truncate" || damage == "flip" {
				want = 4
			}
			if len(ds) != want {
				t.Fatalf("%d messages after %s, want %d", len(ds), damage, want)
			}
			for _, d := range ds {
				i := slices.Index(ids, d.ID)
				if i < 0 || !bytes.Equal(readAll(t, d), bodies[i]) {
					t.Fatalf("message %s unexpected or damaged", d.ID)
				}
			}
			// New mail goes to a new segment, never after the torn tail.
			putT(t, q, "s@x", []byte("after\n"), "r@y")
			q.Close()
			if got := segFiles(t, dir); len(got) != len(segs)+1 {
				t.Fatalf("segments %v", got)
			}
			q = openT(t, dir, opt)
			defer q.Close()
			if n := q.Metrics().Messages; n != want+1 {
				t.Fatalf("%d messages, want %d", n, want+1)
			}
		})
	}
}

func TestForeignSegmentIgnored(t *testing.T) {
	dir := t.TempDir()
	opt := testOptions(newFakeClock())
	q := openT(t, dir, opt)
	putT(t, q, "s@x", []byte("a\n"), "r@y")
	q.Close()
	// A segment whose header names another sequence number: its records
	// cannot have been written there, so none may count.
	segs := segFiles(t, dir)
	data, _ := os.ReadFile(segs[0])
	os.WriteFile(filepath.Join(dir, "journal", segName(7)), data, 0o600)
	os.WriteFile(filepath.Join(dir, "journal", segName(8)), nil, 0o600)
	q = openT(t, dir, opt)
	defer q.Close()
	if n := q.Metrics().Messages; n != 1 {
		t.Fatalf("%d messages, want 1", n)
	}
}

func TestCorruptExternalBodyNotHandedOut(t *testing.T) {
	dir := t.TempDir()
	opt := testOptions(newFakeClock())
	opt.InlineMax = 1024
	q := openT(t, dir, opt)
	defer q.Close()
	id := putT(t, q, "s@x", bodyOf(10000, 1), "r@y")
	p := filepath.Join(dir, "body", id)
	data, _ := os.ReadFile(p)
	data[5000] ^= 1
	os.WriteFile(p, data, 0o600)
	d := claimAll(q)[0]
	rc, err := d.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err == nil {
		t.Fatal("corrupt body read to EOF without an error")
	}
	os.WriteFile(p, data[:100], 0o600)
	if _, err := d.Open(); err == nil {
		t.Fatal("truncated body opened")
	}
}

func TestMissingBodyDirectory(t *testing.T) {
	dir := t.TempDir()
	opt := testOptions(newFakeClock())
	opt.InlineMax = 1024
	q := openT(t, dir, opt)
	defer q.Close()
	os.Remove(filepath.Join(dir, "body"))
	if _, err := q.Put(context.Background(), envelope("s@x", "r@y"), bytes.NewReader(bodyOf(5000, 1))); err == nil {
		t.Fatal("Put without body directory succeeded")
	}
	os.Mkdir(filepath.Join(dir, "body"), 0o700)
	putT(t, q, "s@x", bodyOf(5000, 1), "r@y")
}

func TestCompactionAndSegmentDeletion(t *testing.T) {
	testpeer.CheckGoroutines(t, 10*time.Second)
	dir := t.TempDir()
	clk := newFakeClock()
	opt := testOptions(clk)
	opt.SegmentSize = 8 << 10
	opt.InlineMax = 2000
	q := openT(t, dir, opt)
	ctx := context.Background()
	keep := map[string][]byte{}
	for i := 0; i < 200; i++ {
		size := 700
		if i%50 == 7 {
			size = 3000 // external
		}
		b := bodyOf(size, i)
		id := putT(t, q, "s@x", b, "a@one.example", "b@two.example")
		if i%40 == 3 || i%50 == 7 {
			keep[id] = b
		}
	}
	before := len(segFiles(t, dir))
	// Deliver everything except the kept ones, which get one temporary
	// failure (state spread over later segments) and a hold or two.
	for _, d := range claimAll(q) {
		st := accepted
		if _, ok := keep[d.ID]; ok && d.Destination == "two.example" {
			st = tempFail
		}
		if err := q.Record(ctx, d, results(d, st, "mx")); err != nil {
			t.Fatal(err)
		}
	}
	var held string
	for id := range keep {
		held = id
		break
	}
	q.Hold(ctx, held)
	snapshot := func(q *Queue) map[string]string {
		out := map[string]string{}
		for id := range keep {
			det, err := q.Show(ctx, id)
			if err != nil {
				t.Fatalf("%s: %v", id, err)
			}
			var s []byte
			for _, r := range det.Recipient {
				s = append(s, r.Address+" "+r.State.String()+" "+r.NextAttempt.String()+" "+r.Final+"|"...)
			}
			s = append(s, det.State...)
			out[id] = string(s)
		}
		return out
	}
	want := snapshot(q)
	for i := 0; i < 5; i++ {
		q.maintain(ctx, false)
	}
	after := len(segFiles(t, dir))
	m := q.Metrics()
	t.Logf("segments: %d before, %d after compaction; journal %d bytes", before, after, m.JournalBytes)
	if after >= before/4 {
		t.Errorf("compaction left %d of %d segments", after, before)
	}
	if got := snapshot(q); !mapsEqual(got, want) {
		t.Errorf("state changed by compaction:\n%v\n%v", got, want)
	}
	check := func(q *Queue) {
		clk.Advance(2 * time.Hour)
		q.Release(ctx, held)
		n := 0
		for _, d := range claimAll(q) {
			if !bytes.Equal(readAll(t, d), keep[d.ID]) {
				t.Fatalf("%s damaged by compaction", d.ID)
			}
			n++
			q.Record(ctx, d, nil)
		}
		if n != len(keep) {
			t.Fatalf("%d deliveries, want %d", n, len(keep))
		}
		clk.Advance(-2 * time.Hour)
		q.Hold(ctx, held)
	}
	check(q)
	q.Close()
	q = openT(t, dir, opt)
	defer q.Close()
	if got := snapshot(q); !mapsEqual(got, want) {
		t.Errorf("state after compaction and reopen:\n%v\n%v", got, want)
	}
	check(q)
	// Removed or delivered messages never come back, however the
	// segments were cut.
	if n := q.Metrics().Messages; n != len(keep) {
		t.Fatalf("%d messages after reopen, want %d", n, len(keep))
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "body"))
	if len(ents) != 4 {
		t.Errorf("%d body files, want the 4 kept external bodies", len(ents))
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestJanitor(t *testing.T) {
	dir := t.TempDir()
	opt := testOptions(newFakeClock())
	opt.InlineMax = 100
	q := openT(t, dir, opt)
	defer q.Close()
	live := putT(t, q, "s@x", bodyOf(1000, 1), "r@y")
	var g idGen
	stale := g.next(time.Now().Add(-48 * time.Hour))
	fresh := g.next(time.Now())
	old := time.Now().Add(-40 * time.Hour)
	for _, id := range []string{stale, fresh} {
		os.WriteFile(filepath.Join(dir, "body", id), []byte("partial"), 0o600)
	}
	os.WriteFile(filepath.Join(dir, "body", "README"), nil, 0o600)
	for _, id := range []string{stale, live, "README"} {
		os.Chtimes(filepath.Join(dir, "body", id), old, old)
	}
	// A writer in progress is never touched, however old its file.
	w, _ := q.NewMessage(context.Background())
	w.Write(bodyOf(1000, 2))
	os.Chtimes(filepath.Join(dir, "body", w.ID()), old, old)
	q.janitor()
	for id, want := range map[string]bool{stale: false, fresh: true, live: true, "README": true, w.ID(): true} {
		_, err := os.Stat(filepath.Join(dir, "body", id))
		if (err == nil) != want {
			t.Errorf("%s: exists=%v, want %v", id, err == nil, want)
		}
	}
	if _, err := w.Commit(context.Background(), envelope("s@x", "r@y")); err != nil {
		t.Fatal(err)
	}
}

// TestPreallocatedSegment: a new segment takes its whole size at once, and
// the zeros after the last record read as the clean end of the journal, not
// as a torn tail.
func TestPreallocatedSegment(t *testing.T) {
	dir := t.TempDir()
	opt := testOptions(newFakeClock())
	opt.SegmentSize = 1 << 20
	q := openT(t, dir, opt)
	for i := 0; i < 3; i++ {
		putT(t, q, "s@x", bodyOf(500, i), "r@y")
	}
	q.Close()
	segs := segFiles(t, dir)
	st, err := os.Stat(segs[len(segs)-1])
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != opt.SegmentSize {
		t.Fatalf("segment is %d bytes, want %d", st.Size(), opt.SegmentSize)
	}
	var logs bytes.Buffer
	opt.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	q = openT(t, dir, opt)
	defer q.Close()
	if n := len(claimAll(q)); n != 3 {
		t.Fatalf("%d messages after reopening, want 3", n)
	}
	if strings.Contains(logs.String(), "torn") {
		t.Fatalf("preallocated zeros taken for a torn tail:\n%s", logs.String())
	}
}

// failingAllocator is a segment file whose fallocate reserves part of the
// range and then fails, as a full disk can.
type failingAllocator struct{ osFile }

func (f failingAllocator) Allocate(size int64) error {
	f.File.Truncate(size / 2)
	return errors.New("fallocate: no space left on device")
}

func TestPreallocateFailureLeavesEmptySegment(t *testing.T) {
	dir := t.TempDir()
	q := openT(t, dir, testOptions(newFakeClock()))
	defer q.Close()
	f, err := os.Create(filepath.Join(dir, "scratch"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := &segment{seq: 99, f: failingAllocator{osFile{f}}}
	q.preallocate(s)
	st, _ := f.Stat()
	if st.Size() != 0 {
		t.Fatalf("after a failed preallocation the segment is %d bytes, want 0", st.Size())
	}
}

// TestSpareSegment checks the segment made ahead of need: used at the
// rotation when ready, thrown away when a rotation comes first, removed by
// Close, and in every case every message survives a reopen.
func TestSpareSegment(t *testing.T) {
	dir := t.TempDir()
	release := make(chan struct{})
	ffs := &faultFS{inner: osFS{}}
	ffs.set(func(op, path string) error {
		if op == "create" && filepath.Base(path) == segName(2) {
			<-release // hold the first spare's making until the test says so
		}
		return nil
	})
	opt := Options{Logger: quietLogger(), Passive: true, SegmentSize: minSpareSegment, InlineMax: 16 << 10}
	opt.fs = ffs
	q := openT(t, dir, opt)
	body := bodyOf(10<<10, 1)
	var ids []string
	put := func() {
		ids = append(ids, putT(t, q, "a@example.org", body, "b@example.com"))
	}
	state := func() (cur uint64, spare uint64, busy bool) {
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.cur != nil {
			cur = q.cur.seq
		}
		if q.spare != nil {
			spare = q.spare.seq
		}
		return cur, spare, q.spareBusy
	}
	// putUntil queues messages until done says so of the segments' state.
	putUntil := func(done func(cur, spare uint64, busy bool) bool) {
		for {
			put()
			if done(state()) {
				return
			}
		}
	}
	waitIdle := func() {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if _, _, busy := state(); !busy {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("spare segment never finished")
			}
		}
	}
	// Fill segment 1 past the rotation while the spare (2) is held: the
	// rotation must make segment 3 itself, and the late spare be dropped.
	putUntil(func(cur, _ uint64, _ bool) bool { return cur != 1 })
	if cur, _, busy := state(); cur != 3 || !busy {
		t.Fatalf("after the first rotation: current segment %d (busy %v), want 3 with the spare still being made", cur, busy)
	}
	close(release)
	waitIdle()
	if _, spare, _ := state(); spare != 0 {
		t.Fatalf("stale spare %d kept", spare)
	}
	if _, err := os.Stat(filepath.Join(dir, "journal", segName(2))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale spare's file: %v", err)
	}
	// Fill segment 3 past half: spare 4 is made and used at the rotation.
	putUntil(func(_, spare uint64, busy bool) bool { return spare != 0 || busy })
	waitIdle()
	if _, spare, _ := state(); spare != 4 {
		t.Fatalf("spare %d, want 4", spare)
	}
	putUntil(func(cur, _ uint64, _ bool) bool { return cur != 3 })
	if cur, _, _ := state(); cur != 4 {
		t.Fatalf("rotated to %d, want the spare 4", cur)
	}
	// Past half of segment 4, spare 5 is made; Close removes it.
	putUntil(func(_, spare uint64, busy bool) bool { return spare != 0 || busy })
	waitIdle()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "journal", segName(5))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unused spare's file after Close: %v", err)
	}
	q = openT(t, dir, Options{Logger: quietLogger(), Passive: true})
	for _, id := range ids {
		if _, err := q.Show(context.Background(), id); err != nil {
			t.Fatalf("message %s lost: %v", id, err)
		}
	}
	t.Logf("%d messages across segments 1, 3 and 4", len(ids))
}

// TestPlacedRecords: bodies large enough for their Writers to place their
// records into the journal themselves, mixed with small ones that are
// copied into the batch, from many writers at once, all come back intact
// after a reopen, across segment rotations.
func TestPlacedRecords(t *testing.T) {
	dir := t.TempDir()
	opt := Options{Logger: quietLogger(), Passive: true, SegmentSize: minSpareSegment, InlineMax: 64 << 10}
	q := openT(t, dir, opt)
	var mu sync.Mutex
	good := map[string][]byte{}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				n := w*20 + i
				b := bodyOf([]int{500, 40 << 10, 64 << 10, 100 << 10}[n%4]+n, n)
				id, err := q.Put(context.Background(), envelope("s@x", "r@y"), bytes.NewReader(b))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				good[id] = b
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if q.Metrics().Segments < 2 {
		t.Errorf("the journal never rotated: %d segments", q.Metrics().Segments)
	}
	q.Close()
	q = openT(t, dir, opt)
	defer q.Close()
	ds := claimAll(q)
	if len(ds) != len(good) {
		t.Fatalf("after reopen %d messages, want %d", len(ds), len(good))
	}
	for _, d := range ds {
		if b, ok := good[d.ID]; !ok || !bytes.Equal(readAll(t, d), b) {
			t.Fatalf("message %s unexpected or damaged", d.ID)
		}
	}
}
