package queue

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/qmgate/qmgate/mail"
)

// patternReader yields n deterministic bytes without holding them: a
// 64 KiB block of text, repeated.
type patternReader struct {
	n, off int64
}

var patternBlock = func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		if i%73 == 72 {
			b[i] = '\n'
		} else {
			b[i] = byte('a' + (i*7+i/4096)%26)
		}
	}
	return b
}()

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n-p.off {
		b = b[:p.n-p.off]
	}
	n := 0
	for n < len(b) {
		n += copy(b[n:], patternBlock[(p.off+int64(n))%int64(len(patternBlock)):])
	}
	p.off += int64(n)
	return n, nil
}

// vmHWM returns the process's peak resident set size in bytes.
func vmHWM() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return -1
}

// bigPut is the helper process of TestHugeBodyMemory: it queues a body
// of QMGATE_QUEUE_SIZE bytes, reads it back through a Delivery, and
// prints the checksums and its peak RSS.
func bigPut() {
	dir := os.Getenv("QMGATE_QUEUE_DIR")
	size, _ := strconv.ParseInt(os.Getenv("QMGATE_QUEUE_SIZE"), 10, 64)
	q, err := Open(dir, Options{Logger: quietLogger(), Passive: true})
	if err != nil {
		fmt.Println("BAD", err)
		return
	}
	defer q.Close()
	in := sha256.New()
	ctx := context.Background()
	id, err := q.Put(ctx, mail.Envelope{Sender: "big@example.org", Recipients: []string{"r@example.com"}},
		io.TeeReader(&patternReader{n: size}, in))
	if err != nil {
		fmt.Println("BAD put", err)
		return
	}
	ds := q.Claim(1)
	if len(ds) != 1 || ds[0].ID != id || ds[0].Size != size {
		fmt.Println("BAD claim")
		return
	}
	rc, err := ds[0].Open()
	if err != nil {
		fmt.Println("BAD open", err)
		return
	}
	out := sha256.New()
	n, err := io.Copy(out, rc)
	rc.Close()
	if err != nil || n != size {
		fmt.Println("BAD read", n, err)
		return
	}
	fmt.Printf("OK %x %x %d\n", in.Sum(nil), out.Sum(nil), vmHWM())
}

// TestHugeBodyMemory queues a 1 GiB body in a separate process and checks
// that its peak RSS stays under 64 MiB: bodies stream, in and out.
func TestHugeBodyMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 1 GiB")
	}
	const size = 1 << 30
	const limit = 64 << 20
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "QMGATE_QUEUE_HELPER=bigput", "QMGATE_QUEUE_DIR="+dir,
		"QMGATE_QUEUE_SIZE="+strconv.Itoa(size))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v %s", err, out)
	}
	f := strings.Fields(string(out))
	if len(f) != 4 || f[0] != "OK" {
		t.Fatalf("helper: %s", out)
	}
	if f[1] != f[2] {
		t.Fatalf("body read back differs from what was queued")
	}
	hwm, _ := strconv.ParseInt(f[3], 10, 64)
	t.Logf("1 GiB body queued and read back; peak RSS %.1f MiB (race detector: %v)", float64(hwm)/(1<<20), raceEnabled)
	if hwm <= 0 || hwm >= limit {
		t.Fatalf("peak RSS %d bytes, want under %d", hwm, limit)
	}
}
