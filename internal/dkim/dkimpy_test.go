package dkim

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qmgate/qmgate/internal/testpeer"
)

// TestDkimpyVerifies has dkimpy verify our signatures, with the public keys
// handed to it instead of DNS: RSA-2048, Ed25519 and both at once, for a
// message stored with CR LF and one stored with LF line ends (sent as CR LF,
// as every SMTP client does; dkimpy is also given the LF form as stored).
func TestDkimpyVerifies(t *testing.T) {
	py := testpeer.Dkimpy(t)
	r1, _, ed := testKeys(t)
	rsaK, edK := Key{Selector: "r2026", Signer: r1}, Key{Selector: "e2026", Signer: ed}
	dir := t.TempDir()
	want := map[string]string{}
	var files []string
	add := func(name, msg, verdict string) {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		want[f] = verdict
	}
	for _, set := range []struct {
		name string
		keys []Key
	}{{"rsa", []Key{rsaK}}, {"ed25519", []Key{edK}}, {"dual", []Key{rsaK, edK}}} {
		s := mustSigner(t, Options{Domains: []Domain{{Name: "example.net", Keys: set.keys, Subdomains: true}}})
		for _, ends := range []string{"lf", "crlf", "rich-lf", "rich-crlf"} {
			msg := testMsg
			if strings.HasPrefix(ends, "rich") {
				msg = richMsg
			}
			if strings.HasSuffix(ends, "crlf") {
				msg = crlf(msg)
			}
			out, res := signMsg(t, s, []byte(msg))
			if len(res.Selectors) != len(set.keys) {
				t.Fatalf("%s/%s: %+v", set.name, ends, res)
			}
			pass := strings.TrimSpace(strings.Repeat(" pass", len(set.keys)))
			fail := strings.TrimSpace(strings.Repeat(" fail", len(set.keys)))
			name := set.name + "-" + ends
			add(name+"-as-stored", string(out), pass)
			if ends == "lf" {
				add(name+"-as-sent", crlf(string(out)), pass)
			}
			// A changed body fails in dkimpy too: the check is real.
			add(name+"-changed", strings.Replace(string(out), "Backup finished.", "Backup failed.", 1), fail)
			if ends == "rich-lf" {
				// Whitespace changed where relaxed canonicalization
				// ignores it still verifies.
				add(name+"-respaced", strings.Replace(strings.Replace(string(out), "Backup finished.", "Backup \t finished.", 1),
					"Subject: nightly", "Subject:   nightly", 1), pass)
			}
		}
	}
	got := runDkimpy(t, py, dir, files, records(t, "example.net", rsaK, edK))
	for _, f := range files {
		if got[f] != want[f] {
			t.Errorf("%s: dkimpy says %q, want %q", filepath.Base(f), got[f], want[f])
		}
	}
}

// richMsg has a header whose h= list folds over several lines, fields that
// occur twice (signed bottom up), a field name in capitals, and a body with runs of spaces and tabs, whitespace at
// line ends and empty lines at its end.
const richMsg = "Received: from app17 by hub\n" +
	"FROM: App Seventeen <root@example.net>\n" +
	"To: ops@example.org\n" +
	"Cc: a@example.org,\n\tb@example.org\n" +
	"To: second@example.org\n" +
	"Reply-To: ops@example.net\n" +
	"Subject: nightly   report\t \n" +
	"Date: Wed, 02 Dec 2026 03:00:00 +0000\n" +
	"Message-ID: <2@app17.example.net>\n" +
	"In-Reply-To: <1@app17.example.net>\n" +
	"References: <0@app17.example.net> <1@app17.example.net>\n" +
	"List-Id: <reports.example.net>\n" +
	"MIME-Version: 1.0\n" +
	"Content-Type: text/plain; charset=utf-8\n" +
	"Content-Transfer-Encoding: 8bit\n" +
	"\n" +
	"Backup finished.\n" +
	"  two  spaces\t\ttabs \t \n" +
	" \t\n" +
	"last line\n" +
	"\n\n \n\n"

// runDkimpy verifies files with dkimpy and returns its verdicts by file.
func runDkimpy(t *testing.T, py, dir string, files []string, recs map[string]string) map[string]string {
	t.Helper()
	job, err := json.Marshal(map[string]any{"records": recs, "messages": files})
	if err != nil {
		t.Fatal(err)
	}
	jf := filepath.Join(dir, "job.json")
	if err := os.WriteFile(jf, job, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "testdata/dkimpy_verify.py", jf)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, stderr.String())
	}
	t.Logf("dkimpy notes:\n%s", stderr.String())
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f, verdict, _ := strings.Cut(l, " ")
		got[f] = verdict
	}
	return got
}
