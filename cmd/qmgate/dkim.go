package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/qmgate/qmgate/internal/dkim"
)

const dkimUsage = "usage: qmgate dkim keygen -domain DOMAIN -selector SELECTOR [-algo ed25519|rsa] [-bits 2048] [-out FILE]"

func init() {
	register(&command{name: "dkim", summary: "keygen: make a DKIM signing key and print its DNS record", run: runDkim})
}

func runDkim(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "keygen" {
		fmt.Fprintln(stderr, dkimUsage)
		return 64
	}
	return runDkimKeygen(args[1:], stdout, stderr)
}

// runDkimKeygen writes a new private key (mode 0600, never over an existing
// file) and prints the TXT record to publish, as a zone-file line, on stdout.
func runDkimKeygen(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("dkim keygen", dkimUsage)
	domain := fs.String("domain", "", "signing `DOMAIN` (the d= tag), e.g. example.net")
	selector := fs.String("selector", "", "`SELECTOR` (the s= tag), e.g. 2026a; the record goes to SELECTOR._domainkey.DOMAIN")
	algo := fs.String("algo", dkim.AlgoRSA, "key `ALGORITHM`: rsa or ed25519 (publish an RSA key beside an Ed25519 one: not every receiver checks Ed25519)")
	bits := fs.Int("bits", dkim.DefaultRSABits, "RSA key size in `BITS` (2048 to 4096)")
	out := fs.String("out", "", "key `FILE` to write (default: DOMAIN.SELECTOR.key in the current directory)")
	pos, code, ok := parseFlags(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 0 || *domain == "" || *selector == "" {
		return usageError(fs, stderr, "want -domain and -selector, and no other argument")
	}
	d := strings.TrimSuffix(strings.ToLower(*domain), ".")
	if !strings.Contains(d, ".") || strings.ContainsAny(d, " \t/\\") {
		return fail(stderr, "dkim", 64, "%q is not a domain name", *domain)
	}
	if strings.ContainsAny(*selector, " \t/\\") {
		return fail(stderr, "dkim", 64, "%q is not a selector (letters, digits, hyphens, dots)", *selector)
	}
	if *algo == dkim.AlgoEd25519 {
		*bits = 0
	}
	priv, txt, err := dkim.Keygen(*algo, *bits)
	if err != nil {
		return fail(stderr, "dkim", 64, "%v", err)
	}
	path := *out
	if path == "" {
		path = d + "." + *selector + ".key"
	}
	if err := dkim.WriteKeyFile(path, priv); err != nil {
		return fail(stderr, "dkim", 73, "writing the key: %v", err)
	}
	if _, err := dkim.LoadKey(*selector, path); err != nil {
		return fail(stderr, "dkim", 70, "%v", err)
	}
	fmt.Fprintf(stderr, "qmgate dkim: wrote the private key to %s (mode 0600; it must stay readable by the mail user only)\n", path)
	fmt.Fprintf(stderr, "qmgate dkim: publish this DNS record (on stdout) before the hub signs with the key\n")
	fmt.Fprintln(stdout, dkim.ZoneLine(*selector, d, txt))
	return 0
}
