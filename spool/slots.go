package spool

import "sync"

// slots counts deliveries in flight, per route and in all, against the
// routes' Concurrency and the spool's Workers. Both the dispatcher (for due
// items it found) and the committer (for a new item handed straight to a
// worker, see enqueueOp) reserve slots before they lease, so the bounds hold
// whoever leases. A slot is released when its delivery ends, or at once if
// the lease it was reserved for is not granted. Close waits for every slot.
type slots struct {
	held    sync.WaitGroup // one per slot; added to under mu, before stop
	mu      sync.Mutex
	route   map[uint32]int
	total   int
	stopped bool // no more reservations: deliveries are stopping
	// wanted is set when the dispatcher left due items for want of a slot;
	// the next release then wakes it.
	wanted bool
}

// reserve takes up to n slots for route rid, within its concurrency and
// the spool's workers, and returns how many it took.
func (l *slots) reserve(rid uint32, n, concurrency, workers int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.take(rid, n, concurrency, workers)
}

// reserveOrWant is reserve for the dispatcher: if it takes no slot, it
// records in the same step that due items wait, so that the next release
// wakes the dispatcher. Done apart, every delivery could end in between,
// finding no one waiting, and the dispatcher would sleep until maxIdle.
func (l *slots) reserveOrWant(rid uint32, n, concurrency, workers int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n = l.take(rid, n, concurrency, workers)
	if n == 0 && !l.stopped {
		l.wanted = true
	}
	return n
}

func (l *slots) take(rid uint32, n, concurrency, workers int) int {
	if l.stopped {
		return 0
	}
	n = max(min(n, concurrency-l.route[rid], workers-l.total), 0)
	if n > 0 {
		if l.route == nil {
			l.route = map[uint32]int{}
		}
		l.route[rid] += n
		l.total += n
		l.held.Add(n)
	}
	return n
}

// release gives back n slots of route rid that were not used.
func (l *slots) release(rid uint32, n int) {
	if n <= 0 {
		return
	}
	l.mu.Lock()
	l.free(rid, n)
	l.mu.Unlock()
}

// end gives back the slot of a delivery that ended and reports whether the
// dispatcher waits for one.
func (l *slots) end(rid uint32) (wake bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.free(rid, 1)
	wake, l.wanted = l.wanted, false
	return wake
}

func (l *slots) free(rid uint32, n int) {
	if l.route[rid] -= n; l.route[rid] <= 0 {
		delete(l.route, rid)
	}
	l.total -= n
	l.held.Add(-n)
}

// wait waits until every slot is released; call it after stop.
func (l *slots) wait() { l.held.Wait() }

// stop refuses every later reservation.
func (l *slots) stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
}
