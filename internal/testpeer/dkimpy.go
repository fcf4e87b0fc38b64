package testpeer

import (
	"os/exec"
	"testing"
)

// Dkimpy returns a python3 that can import dkimpy (Debian's python3-dkim,
// with python3-nacl for Ed25519), the DKIM verifier qmgate did not write.
// Under CI a missing one fails the test; elsewhere it is skipped.
func Dkimpy(t testing.TB) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if p, err := exec.LookPath(py); err == nil && exec.Command(p, "-c", "import dkim, nacl").Run() == nil {
			return p
		}
	}
	if CI() {
		t.Fatal("python3-dkim (dkimpy, with python3-nacl) is not installed; .ci/deps installs it")
	}
	t.Skip("python3-dkim not installed")
	return ""
}
