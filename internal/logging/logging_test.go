package logging

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
	n  int // writes
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestBatchesAndFlushes(t *testing.T) {
	var out syncBuf
	w := NewWriter(&out, time.Hour) // only Flush and Close write out
	for i := 0; i < 100; i++ {
		w.Write([]byte("line\n"))
	}
	if out.String() != "" {
		t.Fatal("written before a flush")
	}
	w.Flush()
	if got := strings.Count(out.String(), "line\n"); got != 100 || out.n != 1 {
		t.Fatalf("%d lines in %d writes", got, out.n)
	}
	w.Write([]byte("last\n"))
	w.Close()
	if !strings.HasSuffix(out.String(), "last\n") {
		t.Fatal("Close did not flush")
	}
	w.Write([]byte("after\n"))
	if !strings.HasSuffix(out.String(), "after\n") {
		t.Fatal("a write after Close is not written through")
	}
	if w.Close() != nil {
		t.Fatal("second Close")
	}
}

func TestPeriodicFlush(t *testing.T) {
	var out syncBuf
	w := NewWriter(&out, 10*time.Millisecond)
	defer w.Close()
	w.Write([]byte("x\n"))
	deadline := time.Now().Add(10 * time.Second)
	for out.String() == "" {
		if time.Now().After(deadline) {
			t.Fatal("never flushed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConcurrentWritesStayWhole(t *testing.T) {
	var out syncBuf
	w := NewWriter(&out, time.Millisecond)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				w.Write([]byte("0123456789abcdef\n"))
			}
		}()
	}
	wg.Wait()
	w.Close()
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		if l != "0123456789abcdef" {
			t.Fatalf("torn line %q", l)
		}
	}
}
