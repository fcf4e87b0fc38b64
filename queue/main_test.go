package queue

import (
	"os"
	"testing"
)

// TestMain lets the test binary run as a helper process: the crash test's
// writer and the 1 GiB memory probe re-execute it with QMGATE_QUEUE_HELPER
// set.
func TestMain(m *testing.M) {
	switch os.Getenv("QMGATE_QUEUE_HELPER") {
	case "crashwriter":
		crashWriter()
		os.Exit(0)
	case "bigput":
		bigPut()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
