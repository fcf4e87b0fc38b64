//go:build linux

package cluster

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestKubernetesExample parses docs/examples/kubernetes/qmgate-hubs.yaml
// with python3's YAML parser (Debian's python3-yaml, installed by
// .ci/deps; no Go YAML library is a dependency) and checks what
// docs/several-hubs.md promises of it: a StatefulSet with a volume for the
// queue, a preStop hook running `qmgate drain`, /readyz and /healthz
// probes, Services, and a configuration that `qmgate config check` takes.
func TestKubernetesExample(t *testing.T) {
	path := filepath.Join(repoRoot, "docs/examples/kubernetes/qmgate-hubs.yaml")
	out, err := exec.Command("python3", "-c", `import json, sys, yaml
print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))`, path).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("YAML does not parse (needs python3-yaml): %s", ee.Stderr)
		}
		t.Fatal(err)
	}
	var docs []map[string]any
	if err := json.Unmarshal(out, &docs); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]map[string]any{}
	services := 0
	for _, d := range docs {
		k, _ := d["kind"].(string)
		kinds[k] = d
		if k == "Service" {
			services++
		}
	}
	if services != 2 || kinds["StatefulSet"] == nil || kinds["ConfigMap"] == nil {
		t.Fatalf("want a ConfigMap, two Services and a StatefulSet, got %v", docs)
	}
	ss, _ := json.Marshal(kinds["StatefulSet"])
	for _, want := range []string{`"volumeClaimTemplates"`, `"preStop"`, `"drain"`, `127.0.0.1:9628/readyz"`, `127.0.0.1:9628/healthz"`, `"mountPath":"/var/spool/qmgate"`} {
		if !strings.Contains(string(ss), want) {
			t.Errorf("StatefulSet lacks %s", want)
		}
	}
	conf := kinds["ConfigMap"]["data"].(map[string]any)["qmgate.toml"].(string)
	checkConfig(t, conf)
}

// TestSystemdExamples checks the systemd examples: the instance
// template's lines are key=value lines in known sections that start
// `qmgate serve` on the instance's file, and the example hub
// configuration passes `qmgate config check`.
func TestSystemdExamples(t *testing.T) {
	dir := filepath.Join(repoRoot, "docs/examples/systemd")
	for _, name := range []string{"qmgate@.service", "drain.conf"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		section, keys := "", map[string]string{}
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			switch {
			case line == "" || strings.HasPrefix(line, "#"):
			case line == "[Unit]" || line == "[Service]" || line == "[Install]":
				section = line
			case section != "" && strings.Contains(line, "="):
				k, v, _ := strings.Cut(line, "=")
				keys[section+k] = v
			default:
				t.Errorf("%s:%d: not a unit file line: %q", name, n, line)
			}
		}
		f.Close()
		if keys["[Service]TimeoutStopSec"] == "" {
			t.Errorf("%s: no TimeoutStopSec for the drain", name)
		}
		if name == "qmgate@.service" && keys["[Service]ExecStart"] != "/usr/bin/qmgate serve -config /etc/qmgate/%i.toml" {
			t.Errorf("%s: ExecStart %q", name, keys["[Service]ExecStart"])
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "hub2.toml"))
	if err != nil {
		t.Fatal(err)
	}
	checkConfig(t, string(b))
}

// checkConfig runs `qmgate config check` on conf.
func checkConfig(t *testing.T, conf string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "qmgate.toml")
	if err := os.WriteFile(f, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(qmgateBin, "config", "check", "-config", f).CombinedOutput(); err != nil {
		t.Errorf("qmgate config check: %v\n%s", err, out)
	}
}
