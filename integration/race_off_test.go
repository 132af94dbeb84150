//go:build !race

package integration

// raceEnabled: these tests run under the race detector, and so does the
// binary they build.
const raceEnabled = false
