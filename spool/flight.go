package spool

import (
	"sync"

	"go.uber.org/zap"
)

// flight holds the items being delivered. A lease is this entry in memory,
// not a write: the item's q/ key stays as it was while its attempt runs, and
// the dispatcher passes over it. An attempt that a crash cuts short is
// therefore not counted, and its item is due again as soon as the spool
// reopens (see docs/spool.md, "Dispatch and delivery").
//
// The dispatcher scans a snapshot of the database, which may be older than
// the commit of an item's outcome. So an item whose outcome commits while a
// pass runs stays here, marked done, until that pass ends; the next pass's
// snapshot has the outcome. The entries are bounded by the deliveries in
// flight (Options.Workers), the dead letters being made (the ops queue) and
// those that end during one pass.
type flight struct {
	mu      sync.Mutex
	items   map[uint64]flightItem
	passing bool
	routes  map[uint32]*[numClasses]int64 // per route: the items in flight (not done) by their class on disk
}

type flightItem struct {
	rid     uint32
	class   class // classQueued or classScheduled: what Stats counts it out of
	attempt int   // the attempt's number (the state's Attempt, plus 1)
	held    bool  // not an attempt: the dispatcher is making it a dead letter
	done    bool
}

func newFlight() *flight {
	return &flight{items: map[uint64]flightItem{}, routes: map[uint32]*[numClasses]int64{}}
}

// add leases item id, whose state is st.
func (f *flight) add(id uint64, st *state) {
	it := flightItem{rid: st.Route, class: st.class(), attempt: st.Attempt + 1}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.items[id] = it
	n := f.routes[it.rid]
	if n == nil {
		n = new([numClasses]int64)
		f.routes[it.rid] = n
	}
	n[it.class]++
}

// hold keeps item id from being leased while the dispatcher makes it a dead
// letter: a later pass, whose snapshot may predate that commit and whose
// route may have been enabled meanwhile, must not also deliver it. It is not
// an attempt, so neither logged nor counted in flight.
func (f *flight) hold(id uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.items[id] = flightItem{held: true}
}

// has reports whether item id is leased, or was until the pass running.
func (f *flight) has(id uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.items[id]
	return ok
}

// done ends item id's lease once its outcome is committed (or failed to
// commit, leaving the item as it was).
func (f *flight) done(id uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	it, ok := f.items[id]
	if !ok || it.done {
		return
	}
	if !it.held {
		f.routes[it.rid][it.class]--
	}
	if f.passing {
		it.done = true
		f.items[id] = it
	} else {
		delete(f.items, id)
	}
}

// beginPass is called before the dispatcher opens its snapshot, endPass
// once it has started what it found.
func (f *flight) beginPass() {
	f.mu.Lock()
	f.passing = true
	f.mu.Unlock()
}

func (f *flight) endPass() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.passing = false
	for id, it := range f.items {
		if it.done {
			delete(f.items, id)
		}
	}
}

// counts returns route rid's items in flight, by their class on disk.
func (f *flight) counts(rid uint32) [numClasses]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.routes[rid]; n != nil {
		return *n
	}
	return [numClasses]int64{}
}

// live returns the attempts in flight, for a rewrite of the flight log.
func (f *flight) live() []flightRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]flightRecord, 0, len(f.items))
	for id, it := range f.items {
		if !it.done && !it.held {
			out = append(out, flightRecord{id, it.attempt})
		}
	}
	return out
}

// startLeased logs the attempts of items put in flight and starts them.
// A failure to log is reported, not fatal: it costs only the count of an
// attempt that a crash would cut short.
func (s *Spool) startLeased(leases []work) {
	if len(leases) == 0 {
		return
	}
	recs := make([]flightRecord, len(leases))
	for i, w := range leases {
		recs[i] = flightRecord{keyID(w.key), w.st.Attempt + 1}
	}
	err := s.flightLog.started(recs, s.flight.live)
	if err == nil {
		s.syncDue.Store(true) // the checkpoint syncs the flight log too
	}
	switch {
	case err != nil && !s.flightLogFailing.Swap(true):
		s.log.Error("cannot write the flight log; attempts that a crash cuts short may not be counted", zap.Error(err))
	case err == nil && s.flightLogFailing.Swap(false):
		s.log.Info("the flight log is written again")
	}
	for _, w := range leases {
		s.startDelivery(w)
	}
}
