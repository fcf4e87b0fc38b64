package layers

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/qmgate/qmgate/"

// order is ARCHITECTURE.md's picture, lowest layer first: a package may
// import only packages of lower layers. Programs and test harnesses
// (cmd/, bench/, test/, fuzz/) sit on top and may import anything.
var order = [][]string{
	{"netstring", "internal/workers", "internal/ratelimit", "internal/logging", "internal/peercred", "internal/privdrop", "internal/safedir", "internal/testpeer", "docs/man"},
	{"mail"},
	{"internal/connlimit"},
	{"internal/serve"},
	{"qmtp", "qmqp", "smtp", "queue", "internal/qmail", "internal/qmail/dotqmail", "internal/dkim", "internal/rewrite", "internal/mtasts", "internal/sasl"},
	{"internal/inject", "internal/oauthtoken"},
	{"relay/transport"},
	{"internal/config"},
	{"relay"},
}

var top = []string{"cmd/", "bench/", "test/", "fuzz", "internal/layers"}

func TestImportsGoOneWay(t *testing.T) {
	layer := map[string]int{}
	for i, ps := range order {
		for _, p := range ps {
			layer[p] = i
		}
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		pkg := strings.TrimPrefix(f[0], module)
		if onTop(pkg) {
			continue
		}
		l, ok := layer[pkg]
		if !ok {
			t.Errorf("%s is in no layer: add it to ARCHITECTURE.md's picture and to order", pkg)
			continue
		}
		for _, imp := range f[1:] {
			dep, ours := strings.CutPrefix(imp, module)
			if !ours {
				continue
			}
			if dl, ok := layer[dep]; !ok || dl >= l {
				t.Errorf("%s imports %s, which is not below it", pkg, dep)
			}
		}
	}
}

func onTop(pkg string) bool {
	for _, p := range top {
		if strings.HasPrefix(pkg, p) {
			return true
		}
	}
	return false
}
