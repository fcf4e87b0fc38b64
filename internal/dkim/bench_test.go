package dkim

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The signing benchmarks beside the raw signature rate of the same key, in
// the same run: BenchmarkSign/X against BenchmarkRawSignature/X shows what
// the canonicalization, hashing and plumbing around the signature cost.
//
//	go test -run - -bench 'Sign|RawSignature' ./internal/dkim/

var benchMsg = []byte(crlf("From: App <root@app17.example.net>\nTo: ops@example.org\nSubject: report\n" +
	"Date: Wed, 02 Dec 2026 03:00:00 +0000\nMessage-ID: <1@app17.example.net>\nMIME-Version: 1.0\n" +
	"Content-Type: text/plain; charset=utf-8\n\n" + strings.Repeat("A line of a nightly report, 70 characters or so, like most mail.\n", 64)))

func benchKeys(b *testing.B) map[string]crypto.Signer {
	r, _, ed := testKeys(b)
	return map[string]crypto.Signer{"rsa2048": r, "ed25519": ed}
}

func BenchmarkSign(b *testing.B) {
	for _, name := range []string{"rsa2048", "ed25519"} {
		k := benchKeys(b)[name]
		s := mustSigner(b, Options{Domains: []Domain{{Name: "example.net", Keys: []Key{{Selector: "s", Signer: k}}, Subdomains: true}}})
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(benchMsg)))
			b.ReportAllocs()
			for b.Loop() {
				res, err := s.Sign(bytes.NewReader(benchMsg))
				if err != nil || res.Header == nil {
					b.Fatal(err, res.Skipped)
				}
			}
		})
	}
}

// BenchmarkRawSignature is the signature alone: one SHA-256 of a short input
// and the key's Sign, what every DKIM signature costs at the least.
func BenchmarkRawSignature(b *testing.B) {
	for _, name := range []string{"rsa2048", "ed25519"} {
		k := benchKeys(b)[name]
		b.Run(name, func(b *testing.B) {
			sum := sha256.Sum256([]byte("header fields"))
			opts := crypto.SignerOpts(crypto.SHA256)
			if name == "ed25519" {
				opts = crypto.Hash(0)
			}
			for b.Loop() {
				if _, err := k.Sign(rand.Reader, sum[:], opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSignBesideRaw signs b.N messages and then makes b.N bare
// signatures with the same key, and reports both per operation, in wall time
// and in the process's CPU time (which a busy machine does not inflate), and
// the signing rate as a share of the raw rate ("pct-of-raw", "cpu-pct-of-raw";
// 100 means the signature is all that signing a message costs).
func BenchmarkSignBesideRaw(b *testing.B) {
	for _, name := range []string{"rsa2048", "ed25519"} {
		k := benchKeys(b)[name]
		s := mustSigner(b, Options{Domains: []Domain{{Name: "example.net", Keys: []Key{{Selector: "s", Signer: k}}, Subdomains: true}}})
		opts := crypto.SignerOpts(crypto.SHA256)
		if name == "ed25519" {
			opts = crypto.Hash(0)
		}
		sum := sha256.Sum256([]byte("header fields"))
		b.Run(name, func(b *testing.B) {
			t0, c0 := time.Now(), cpuTime()
			for i := 0; i < b.N; i++ {
				if _, err := s.Sign(bytes.NewReader(benchMsg)); err != nil {
					b.Fatal(err)
				}
			}
			t1, c1 := time.Now(), cpuTime()
			for i := 0; i < b.N; i++ {
				if _, err := k.Sign(rand.Reader, sum[:], opts); err != nil {
					b.Fatal(err)
				}
			}
			t2, c2 := time.Now(), cpuTime()
			n := float64(b.N)
			b.ReportMetric(float64(t1.Sub(t0).Nanoseconds())/n, "sign-ns/msg")
			b.ReportMetric(float64(t2.Sub(t1).Nanoseconds())/n, "raw-ns/sig")
			b.ReportMetric(100*float64(t2.Sub(t1))/float64(t1.Sub(t0)), "pct-of-raw")
			b.ReportMetric(float64((c1-c0).Nanoseconds())/n, "sign-cpu-ns/msg")
			b.ReportMetric(float64((c2-c1).Nanoseconds())/n, "raw-cpu-ns/sig")
			if c1 > c0 {
				b.ReportMetric(100*float64(c2-c1)/float64(c1-c0), "cpu-pct-of-raw")
			}
		})
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// freeSigner is an Ed25519 key whose signature costs nothing (it is all
// zeros), so that a benchmark with it measures everything around the
// signature: canonicalization, hashing, the field and the allocations.
type freeSigner struct{ crypto.Signer }

func (freeSigner) Sign(_ io.Reader, _ []byte, _ crypto.SignerOpts) ([]byte, error) {
	return make([]byte, 64), nil
}

// BenchmarkSignOverhead is signing a message with a signature that costs
// nothing: what signing adds beyond the bare signature.
func BenchmarkSignOverhead(b *testing.B) {
	_, _, ed := testKeys(b)
	s := mustSigner(b, Options{Domains: []Domain{{Name: "example.net", Keys: []Key{{Selector: "s", Signer: freeSigner{ed}}}, Subdomains: true}}})
	b.SetBytes(int64(len(benchMsg)))
	b.ReportAllocs()
	c0 := cpuTime()
	for b.Loop() {
		res, err := s.Sign(bytes.NewReader(benchMsg))
		if err != nil || res.Header == nil {
			b.Fatal(err, res.Skipped)
		}
	}
	b.ReportMetric(float64((cpuTime()-c0).Nanoseconds())/float64(b.N), "cpu-ns/msg")
}
