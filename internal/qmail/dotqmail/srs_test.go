package dotqmail

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newSRS(now time.Time) *SRS {
	return &SRS{
		Secrets: [][]byte{[]byte("new secret"), []byte("old secret")},
		Domain:  "fwd.example",
		Now:     func() time.Time { return now },
	}
}

func TestSRSForwardReverse(t *testing.T) {
	now := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	s := newSRS(now)
	a, err := s.Forward("alice=x@orig.example")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a, "SRS0=") || !strings.HasSuffix(a, "=orig.example=alice=x@fwd.example") || !IsSRS(a) {
		t.Fatalf("SRS0 address %q", a)
	}
	back, err := s.Reverse(a)
	if err != nil || back != "alice=x@orig.example" {
		t.Fatalf("Reverse(%q) = %q, %v", a, back, err)
	}
	// Relays may change case; the hash is compared without it.
	if back, err := s.Reverse(strings.ToLower(a)); err != nil || !strings.EqualFold(back, "alice=x@orig.example") {
		t.Errorf("lower-cased: %q %v", back, err)
	}
	// Within MaxAge, and signed with an older secret still in the list.
	later := newSRS(now.Add(20 * 24 * time.Hour))
	if _, err := later.Reverse(a); err != nil {
		t.Errorf("20 days later: %v", err)
	}
	rotated := &SRS{Secrets: [][]byte{[]byte("newest"), []byte("new secret")}, Domain: "fwd.example", Now: s.Now}
	if _, err := rotated.Reverse(a); err != nil {
		t.Errorf("after rotation: %v", err)
	}
	// Expired.
	if _, err := newSRS(now.Add(22 * 24 * time.Hour)).Reverse(a); !errors.Is(err, ErrSRSExpired) {
		t.Errorf("22 days later: %v", err)
	}
	// Forged: another hash, another secret, a changed field.
	forged := "SRS0=AAAA" + a[len("SRS0=AAAA"):]
	if forged == a {
		forged = "SRS0=BBBB" + a[len("SRS0=BBBB"):]
	}
	for _, f := range []string{
		forged,
		strings.Replace(a, "alice=x@", "mallory@", 1),
		strings.Replace(a, "orig.example", "evil.example", 1),
	} {
		if _, err := s.Reverse(f); !errors.Is(err, ErrSRSHash) {
			t.Errorf("Reverse(%q): %v, want ErrSRSHash", f, err)
		}
	}
	other := &SRS{Secrets: [][]byte{[]byte("someone else")}, Domain: "fwd.example", Now: s.Now}
	if _, err := other.Reverse(a); !errors.Is(err, ErrSRSHash) {
		t.Errorf("other secret: %v", err)
	}
	for _, bad := range []string{"SRS0=abcd=XX@fwd.example", "SRS0=abcd@fwd.example", "SRS1=abcd=host@fwd.example"} {
		if _, err := s.Reverse(bad); !errors.Is(err, ErrSRSFormat) {
			t.Errorf("Reverse(%q): %v, want ErrSRSFormat", bad, err)
		}
	}
	if _, err := s.Reverse("bob@example.net"); !errors.Is(err, ErrNotSRS) {
		t.Errorf("plain address: %v", err)
	}
}

func TestSRSChain(t *testing.T) {
	now := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	first := &SRS{Secrets: [][]byte{[]byte("first")}, Domain: "one.example", Now: func() time.Time { return now }}
	second := &SRS{Secrets: [][]byte{[]byte("second")}, Domain: "two.example", Now: first.Now}
	a0, _ := first.Forward("alice@orig.example")
	a1, err := second.Forward(a0)
	if err != nil {
		t.Fatal(err)
	}
	// SRS1=HHHH=one.example==HHHH=TT=orig.example=alice@two.example
	if !strings.HasPrefix(a1, "SRS1=") || !strings.Contains(a1, "=one.example==") || !strings.HasSuffix(a1, "=orig.example=alice@two.example") {
		t.Fatalf("SRS1 address %q from %q", a1, a0)
	}
	// A third forwarder keeps the first one's address.
	third := &SRS{Secrets: [][]byte{[]byte("third")}, Domain: "three.example", Now: first.Now}
	a2, err := third.Forward(a1)
	if err != nil || !strings.Contains(a2, "=one.example==") || !strings.HasSuffix(a2, "@three.example") {
		t.Fatalf("re-signed SRS1 %q, %v", a2, err)
	}
	// The bounce walks back: third -> first's SRS0 -> alice.
	b, err := third.Reverse(a2)
	if err != nil || b != a0 {
		t.Fatalf("third.Reverse = %q, %v; want %q", b, err, a0)
	}
	b, err = second.Reverse(a1)
	if err != nil || b != a0 {
		t.Fatalf("second.Reverse = %q, %v; want %q", b, err, a0)
	}
	b, err = first.Reverse(b)
	if err != nil || b != "alice@orig.example" {
		t.Fatalf("first.Reverse = %q, %v", b, err)
	}
	if _, err := first.Reverse(a1); !errors.Is(err, ErrSRSHash) {
		t.Errorf("an SRS1 made elsewhere: %v", err)
	}
}

func TestSRSUnchanged(t *testing.T) {
	s := newSRS(time.Now())
	for _, sender := range []string{"", "#@[]", "local-only", "joe@FWD.example"} {
		if got, err := s.Forward(sender); err != nil || got != sender {
			t.Errorf("Forward(%q) = %q, %v", sender, got, err)
		}
	}
	if _, err := (&SRS{}).Forward("a@b.example"); err == nil {
		t.Error("no secret: no error")
	}
}

func TestReadSecrets(t *testing.T) {
	p := filepath.Join(t.TempDir(), "srs-secrets")
	os.WriteFile(p, []byte("first  \r\n\nsecond\n"), 0o600)
	got, err := ReadSecrets(p)
	if err != nil || len(got) != 2 || string(got[0]) != "first" || string(got[1]) != "second" {
		t.Fatalf("%q %v", got, err)
	}
	os.WriteFile(p, []byte("\n \n"), 0o600)
	if _, err := ReadSecrets(p); err == nil {
		t.Error("empty file accepted")
	}
}
