package spool

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFlightKeepsWhatAPassMaySee: an item whose outcome commits while the
// dispatcher scans an older snapshot stays in flight until that pass ends;
// otherwise it leaves at once. Stats count only what is still in flight.
func TestFlightKeepsWhatAPassMaySee(t *testing.T) {
	f := newFlight()
	queued, retry := &state{Route: 1}, &state{Route: 1, Attempt: 2}
	f.add(1, queued)
	f.add(2, retry)
	if n := f.counts(1); n[classQueued] != 1 || n[classScheduled] != 1 {
		t.Fatalf("counts %v, want one queued and one scheduled in flight", n)
	}
	f.done(1)
	if f.has(1) {
		t.Fatal("done outside a pass, still in flight")
	}
	f.beginPass()
	f.done(2)
	if !f.has(2) {
		t.Fatal("done during a pass, gone before the pass ended")
	}
	if n := f.counts(1); n != [numClasses]int64{} {
		t.Fatalf("counts %v after both ended, want none", n)
	}
	if live := f.live(); len(live) != 0 {
		t.Fatalf("live %v, want none", live)
	}
	f.endPass()
	if f.has(2) {
		t.Fatal("still in flight after the pass ended")
	}
}

// TestFlightLogStaysBounded: the log is rewritten with the attempts in
// flight once it would pass its bound, and a restart reads the highest
// attempt of each item.
func TestFlightLogStaysBounded(t *testing.T) {
	dir := t.TempDir()
	l, err := createFlightLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	live := []flightRecord{{id: 7, attempt: 3}}
	for i := range 3 * flightLogMax / flightRecordLen {
		if err := l.started([]flightRecord{{id: uint64(100 + i), attempt: 1}}, func() []flightRecord { return live }); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.started([]flightRecord{{id: 7, attempt: 2}}, func() []flightRecord { return live }); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "flight.log"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > flightLogMax {
		t.Fatalf("flight log of %d bytes, over %d", fi.Size(), flightLogMax)
	}
	started, err := readFlightLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	if started[7] != 3 {
		t.Fatalf("item 7 read with attempt %d, want 3 (the highest logged)", started[7])
	}
	if err := l.remove(); err != nil {
		t.Fatal(err)
	}
	if started, err := readFlightLog(dir); err != nil || started != nil {
		t.Fatalf("after remove: %v, %v; want nothing", started, err)
	}
}
