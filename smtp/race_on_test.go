//go:build race

package smtp

// raceEnabled: bcrypt at full cost takes seconds under the race detector.
const raceEnabled = true
