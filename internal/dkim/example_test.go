package dkim_test

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"io"
	"strings"

	"github.com/qmgate/qmgate/internal/dkim"
	"github.com/qmgate/qmgate/internal/rewrite"
)

// A hub at acceptance: masquerade the app server's sender, then store the
// message and sign it in the same pass, and prepend the signature on the way
// out.
func Example() {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)) // a real key comes from dkim.LoadKey
	signer, err := dkim.New(dkim.Options{Domains: []dkim.Domain{{
		Name: "example.net", Keys: []dkim.Key{{Selector: "2026e", Signer: key}}, Subdomains: true,
	}}})
	if err != nil {
		panic(err)
	}
	masq, err := rewrite.Compile(rewrite.Rules{
		Users:   []rewrite.UserRule{{Match: "root@*", Address: "ops@example.net"}},
		Hosts:   []rewrite.HostRule{{Match: "*.internal", Domain: "example.net"}},
		Headers: true,
	})
	if err != nil {
		panic(err)
	}

	in := strings.NewReader("From: Cron <root@app17.internal>\nSubject: backup\n\ndone\n")
	body := masq.NewReader(in)
	var stored bytes.Buffer // the queue
	sw := signer.NewWriter()
	if _, err := io.Copy(io.MultiWriter(&stored, sw), body); err != nil {
		panic(err)
	}
	if err := sw.Close(); err != nil {
		panic(err)
	}
	res := sw.Result()
	fmt.Println(body.Changes().Comment())
	fmt.Println("signed as", res.Domain, "with", res.Selectors)
	fmt.Print(stored.String()[:strings.IndexByte(stored.String(), '\n')+1])
	// Output:
	// rewritten: From: root@app17.internal to ops@example.net
	// signed as example.net with [2026e]
	// From: Cron <ops@example.net>
}
