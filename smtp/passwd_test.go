package smtp

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// lowCostHash makes a hash quickly for tests.
func lowCostHash(t *testing.T, pw string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestPasswordFile(t *testing.T) {
	file := "# users\n\nalice@example.org:" + lowCostHash(t, "s3cret") + "\n" +
		"odd:name:" + lowCostHash(t, "pw") + "\n"
	p, err := ReadPasswordFile(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 2 {
		t.Errorf("Len %d", p.Len())
	}
	ctx := context.Background()
	for _, tc := range []struct {
		user, pw string
		ok       bool
	}{
		{"alice@example.org", "s3cret", true},
		{"alice@example.org", "s3cre", false},
		{"alice@example.org", "", false},
		{"odd:name", "pw", true},
		{"nobody", "s3cret", false},
		{"", "", false},
	} {
		ok, err := p.Authenticate(ctx, tc.user, tc.pw)
		if err != nil || ok != tc.ok {
			t.Errorf("Authenticate(%q, %q) = %v, %v; want %v", tc.user, tc.pw, ok, err, tc.ok)
		}
	}
}

func TestPasswordFileErrors(t *testing.T) {
	for _, bad := range []string{
		"alice\n",
		"alice:plaintext\n",
		":" + lowCostHash(t, "x") + "\n",
		"a:" + lowCostHash(t, "x") + "\na:" + lowCostHash(t, "y") + "\n",
		strings.Repeat("x", 5000) + "\n",
	} {
		if _, err := ReadPasswordFile(strings.NewReader(bad)); err == nil {
			t.Errorf("%.40q: no error", bad)
		} else if strings.Contains(err.Error(), "plaintext") {
			t.Errorf("error quotes the file: %v", err)
		}
	}
}

func TestHashPassword(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("bcrypt at full cost is slow under -short and -race")
	}
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := bcrypt.Cost([]byte(h)); c != PasswordCost {
		t.Errorf("cost %d", c)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	if err := os.WriteFile(path, []byte("u:"+h+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPasswordFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := p.Authenticate(context.Background(), "u", "correct horse"); !ok {
		t.Error("hash does not verify")
	}
	if _, err := HashPassword(strings.Repeat("x", 73)); err == nil {
		t.Error("73-byte password hashed")
	}
	if _, err := HashPassword(""); err == nil {
		t.Error("empty password hashed")
	}
	// A longer password sharing the first 72 bytes never matches.
	long := strings.Repeat("y", 72)
	h2, _ := bcrypt.GenerateFromPassword([]byte(long), bcrypt.MinCost)
	p2, _ := ReadPasswordFile(strings.NewReader("v:" + string(h2) + "\n"))
	if ok, _ := p2.Authenticate(context.Background(), "v", long+"extra"); ok {
		t.Error("password beyond 72 bytes matched")
	}
	if ok, _ := p2.Authenticate(context.Background(), "v", long); !ok {
		t.Error("72-byte password did not match")
	}
}

// BenchmarkPasswordUnknownUser and BenchmarkPasswordKnownUser should take
// the same time per operation: an unknown user costs a full bcrypt check.
func BenchmarkPasswordUnknownUser(b *testing.B) { benchPassword(b, "nobody") }
func BenchmarkPasswordKnownUser(b *testing.B)   { benchPassword(b, "u") }

func benchPassword(b *testing.B, user string) {
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.DefaultCost)
	p, err := ReadPasswordFile(strings.NewReader("u:" + string(h) + "\n"))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		p.Authenticate(context.Background(), user, "wrong")
	}
}
