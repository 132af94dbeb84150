//go:build race

package spool

// raceEnabled: the race detector changes timing enough to hide some crashes.
const raceEnabled = true
