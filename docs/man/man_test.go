package man

import (
	"strings"
	"testing"
)

// TestConfigReference: the embedded page is qmgate.toml(5) as a whole, not
// an empty or partial file.
func TestConfigReference(t *testing.T) {
	if !strings.HasPrefix(ConfigReference, "% QMGATE.TOML 5 ") {
		t.Fatalf("embedded page starts %q, want the qmgate.toml(5) title block", ConfigReference[:min(40, len(ConfigReference))])
	}
	for _, section := range []string{"# NAME", "# SEE ALSO"} {
		if !strings.Contains(ConfigReference, "\n"+section+"\n") {
			t.Errorf("embedded page lacks its %q section", section)
		}
	}
}
