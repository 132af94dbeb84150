package spool

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// preparedEntry is an Entry encoded outside the committer.
type preparedEntry struct {
	dedupeOnly bool
	route      string
	dedupe     []byte
	hash       uint64 // xxhash of source: the fingerprint
	source     []byte // what the fingerprint is taken of
	msg        []byte
	received   int64
	window     time.Duration
}

// enqueueOp stores entries with their dedupe records. If any entry
// conflicts, it stores none of them.
//
// A new item whose route has a free slot and nothing else waiting for its
// first attempt is stored already leased (attempt 1) and handed, message
// and all, to a worker once the commit is durable: one commit and no read
// fewer than a lease through the dispatcher, and the attempt count is as
// durable as with one.
type enqueueOp struct {
	entries []preparedEntry
	results []Result
	leases  []directLease
	waiting []waitingMessage // the items not leased, for s.recent once committed
	s       *Spool           // set by stage
	err     error
	done    chan struct{}
}

// waitingMessage is the encoded message of an item an enqueue stored
// without a lease.
type waitingMessage struct {
	id  uint64
	msg []byte
}

// directLease is an item an enqueue leased to a worker itself.
type directLease struct {
	key   []byte
	st    state
	route Route
	msg   []byte // the encoded message
}

func (o *enqueueOp) size() int {
	n := 0
	for range o.entries {
		n += 160 + pointerLen // its message goes to a segment, not the transaction
	}
	return n
}
func (o *enqueueOp) durable() bool { return true }

func (o *enqueueOp) finish(err error) {
	if err != nil {
		o.err, o.results = err, nil
		o.dropLeases()
	} else {
		o.started()
	}
	close(o.done)
}

// started hands the items leased at enqueue to workers, once committed. The
// dispatcher, which sees a lease that ends unreported as a due item, is
// woken if it planned to sleep past a lease's end.
func (o *enqueueOp) started() {
	for _, l := range o.leases {
		if _, end, _, _ := parseQueueKey(l.key); end < o.s.wakeAtMs.Load() {
			o.s.nudge()
		}
		m, err := decodeMessage(l.msg)
		if err != nil { // cannot be: encoded by prepare; deliver reads it again
			m = nil
		}
		o.s.startDelivery(work{l.key, l.st, l.route, m})
	}
	o.leases = nil
	now := time.Now()
	for _, w := range o.waiting {
		o.s.recent.put(w.id, w.msg, now)
	}
	o.waiting = nil
}

// dropLeases gives back the slots of leases that were not committed.
func (o *enqueueOp) dropLeases() {
	for _, l := range o.leases {
		o.s.slots.release(l.st.Route, 1)
	}
	o.leases = nil
}

func (o *enqueueOp) stage(b *batch) error {
	o.err = nil // a batch split after a failed commit stages its ops again
	o.dropLeases()
	o.waiting = o.waiting[:0]
	o.s = b.s
	// Dedupe first: a duplicate is answered even when the spool is full.
	o.results = make([]Result, len(o.entries))
	repeats := map[int]int{} // entry index -> index of its first occurrence in the op
	var n, size, records int64
	for i, e := range o.entries {
		res, first, err := o.lookup(b.txn, i)
		if err != nil {
			return err
		}
		if first >= 0 {
			repeats[i] = first
		}
		o.results[i] = res
		if res.Status == Accepted {
			records += recordSize(len(e.dedupe), dedupeValueLen)
		}
		if res.Status == Accepted && !e.dedupeOnly {
			n, size = n+1, size+int64(len(e.msg))
		}
	}
	if o.conflicted() {
		return nil
	}
	// Only new event ids are held to the bounds: a duplicate is answered
	// even when full. A dedupe-only record is held to the record budget
	// alone.
	if n > 0 {
		if err := b.admit(n, size); err != nil {
			o.err, o.results = err, nil
			return nil
		}
	}
	if err := b.admitRecords(records); err != nil {
		o.err, o.results = err, nil
		return nil
	}
	for i, e := range o.entries {
		if o.results[i].Status != Accepted {
			continue
		}
		if e.dedupeOnly {
			rec := appendUint64(appendUint64(nil, 0), e.hash)
			if err := b.setRecord(kindDedupe, badger.NewEntry(e.dedupe, rec).WithTTL(e.window)); err != nil {
				return err
			}
			continue
		}
		rid, err := b.routeID(e.route)
		if err != nil {
			return err
		}
		id := b.newID()
		st := &state{Route: rid, ReceivedMs: e.received, Size: int64(len(e.msg)), PausedMs: b.pausedMs(rid)}
		rec := appendUint64(appendUint64(nil, id), e.hash)
		due := b.nowMs
		route, direct := b.lease(rid, e.route)
		if direct {
			st.Attempt, st.Flags = 1, flagLeased
			due += (route.Timeout + b.s.opts.LeaseMargin).Milliseconds()
		}
		qk := queueKey(rid, due, id)
		if err := b.setRecord(kindDedupe, badger.NewEntry(e.dedupe, rec).WithTTL(e.window)); err != nil {
			return err
		}
		if err := b.storeMessage(id, st, e.msg); err != nil {
			return err
		}
		if err := b.txn.Set(qk, st.encode()); err != nil {
			return err
		}
		b.change(nil, st)
		if direct {
			o.leases = append(o.leases, directLease{key: qk, st: *st, route: route, msg: e.msg})
		} else {
			b.queued(qk)
			o.waiting = append(o.waiting, waitingMessage{id, e.msg})
		}
		o.results[i].ID = id
	}
	for i, first := range repeats {
		o.results[i].ID = o.results[first].ID
	}
	return nil
}

// conflicted marks the entries that would have been accepted as Aborted
// when another entry of the op conflicts, and reports whether one did: the
// entries of one op stand or fall together.
func (o *enqueueOp) conflicted() bool {
	if !slices.ContainsFunc(o.results, func(r Result) bool { return r.Status == Conflict }) {
		return false
	}
	for i := range o.results {
		if o.results[i].Status == Accepted {
			o.results[i] = Result{Status: Aborted}
		}
	}
	return true
}

// lookup dedupes entry i against the database (including writes staged by
// earlier ops of the batch) and against the op's earlier entries; first is
// the index of an earlier entry it repeats, or -1.
func (o *enqueueOp) lookup(txn *badger.Txn, i int) (res Result, first int, err error) {
	e := &o.entries[i]
	for j := range i {
		if bytes.Equal(o.entries[j].dedupe, e.dedupe) && o.results[j].Status == Accepted {
			if o.entries[j].hash != e.hash {
				return Result{Status: Conflict}, j, nil
			}
			return Result{Status: Duplicate}, j, nil
		}
	}
	item, err := getItem(txn, e.dedupe)
	if err != nil {
		return Result{}, -1, err
	}
	if item == nil {
		return Result{Status: Accepted}, -1, nil
	}
	rec, err := item.ValueCopy(nil)
	if err != nil {
		return Result{}, -1, err
	}
	res = Result{Status: Conflict}
	switch len(rec) {
	case 8 + 8:
		res.ID = beUint64(rec)
		if beUint64(rec[8:]) == e.hash {
			res.Status = Duplicate
		}
	case 8 + sha256.Size: // written before fingerprints were xxhash
		res.ID = beUint64(rec)
		if sum := sha256.Sum256(e.source); bytes.Equal(rec[8:], sum[:]) {
			res.Status = Duplicate
		}
	}
	return res, -1, nil
}

// claim is one due item the dispatcher wants to lease, with a slot
// reserved for its delivery.
type claim struct {
	key     []byte // its q/ key when scanned
	leaseMs int64
	route   Route // to deliver it with
	// set when granted:
	granted bool
	leased  []byte
	st      state
}

// claimOp leases items: their attempt count is incremented and committed
// before any attempt starts. Nobody waits for it: once committed, it hands
// each granted item to a worker and gives back the slots of the others, so
// that the dispatcher goes on looking while the committer writes.
type claimOp struct {
	s      *Spool
	claims []*claim
}

func (o *claimOp) size() int     { return len(o.claims) * 128 }
func (o *claimOp) durable() bool { return false }

func (o *claimOp) finish(err error) {
	s := o.s
	for _, c := range o.claims {
		if err != nil || !c.granted {
			rid, _, _, _ := parseQueueKey(c.key)
			s.slots.release(rid, 1)
			continue
		}
		// The dispatcher sees a lease that ends unreported as a due item.
		if _, end, _, _ := parseQueueKey(c.leased); end < s.wakeAtMs.Load() {
			s.nudge()
		}
		s.startDelivery(work{key: c.leased, st: c.st, route: c.route})
	}
	if err != nil {
		// The items are due still, behind the dispatcher's cursor (see
		// rewindFailedClaims): it looks again in a while.
		time.AfterFunc(time.Second, s.nudge)
	}
}

func (o *claimOp) stage(b *batch) error {
	for _, c := range o.claims {
		c.granted = false // a batch split after a failed commit stages its ops again
	}
	for _, c := range o.claims {
		st, found, err := getState(b.txn, c.key)
		if err != nil || !found {
			if err != nil && !errors.Is(err, errCorrupt) {
				return err
			}
			continue
		}
		rid, _, id, _ := parseQueueKey(c.key)
		from := st
		st.Attempt++
		st.Flags |= flagLeased
		nk := queueKey(rid, b.nowMs+c.leaseMs, id)
		if err := b.txn.Delete(c.key); err != nil {
			return err
		}
		if err := b.txn.Set(nk, st.encode()); err != nil {
			return err
		}
		b.change(&from, &st)
		c.granted, c.leased, c.st = true, nk, st
	}
	return nil
}

// transition says what a finishOp does with an item.
type transition int

const (
	toDelivered transition = iota // delete the item
	toRetry                       // schedule the next attempt
	toRelease                     // give back an attempt cut short by shutdown
	toDead                        // make it a dead letter
)

// finishOp moves one item from the exact q/ key it was seen under. If that key
// is gone (its lease expired and it was claimed again, or it was already
// handled), the op does nothing.
type finishOp struct {
	key     []byte
	to      transition
	delay   time.Duration
	status  int
	lastErr string
	reason  string
	attempt *Attempt // the attempt that led here, recorded with the attempt retention
}

func (o *finishOp) size() int     { return 256 + len(o.lastErr) }
func (o *finishOp) durable() bool { return false }

func (o *finishOp) finish(error) {}

func (o *finishOp) stage(b *batch) error {
	st, found, err := getState(b.txn, o.key)
	if err != nil {
		return err
	}
	if !found {
		b.s.log.Debug("ignoring the outcome of an attempt whose lease was lost", zap.Binary("key", o.key))
		return nil
	}
	rid, _, id, _ := parseQueueKey(o.key)
	from := st
	if err := b.txn.Delete(o.key); err != nil {
		return err
	}
	if a := o.attempt; a != nil {
		e := badger.NewEntry(attemptKey(id, st.Earlier+a.Number), a.encode()).WithTTL(b.s.live.Load().attemptRetention)
		if err := b.setRecord(kindAttempts, e); err != nil {
			return err
		}
	}
	if o.to == toDelivered {
		b.change(&from, nil)
		if st.Flags&flagSegment == 0 {
			return b.txn.Delete(msgKey(id)) // stored whole: no segment to count it out of
		}
		return b.deleteMessage(id)
	}
	st.Flags &^= flagLeased
	if o.status != 0 || o.lastErr != "" {
		st.LastStatus, st.LastError = o.status, o.lastErr
	}
	switch o.to {
	case toDead:
		st.DeadMs, st.Reason = b.nowMs, o.reason
		if err := b.txn.Set(deadKey(id), st.encode()); err != nil {
			return err
		}
		if err := b.txn.Set(diedAtKey(st.DeadMs, id), nil); err != nil {
			return err
		}
		b.change(&from, &st)
		return nil
	case toRelease:
		st.Attempt = max(st.Attempt-1, 0)
	}
	nk := queueKey(rid, dueAfter(b.nowMs, o.delay), id)
	if err := b.txn.Set(nk, st.encode()); err != nil {
		return err
	}
	b.change(&from, &st)
	b.queued(nk)
	return nil
}

// dueAfter is the due time (ms) of a retry delay after nowMs, rounded up:
// nowMs is the current time rounded down, and the dispatcher starts an item
// once the current time, rounded down, reaches its due time, so that a retry
// never starts before its delay or Retry-After has passed.
func dueAfter(nowMs int64, delay time.Duration) int64 {
	if delay <= 0 {
		return nowMs
	}
	return nowMs + 1 + (delay + time.Millisecond - 1).Milliseconds()
}

// deadOp replays or deletes dead letters by id, or purges them by their
// place in the y/ index.
type deadOp struct {
	ids    []uint64
	purge  []diedAt // with delete, instead of ids: y/ keys to delete with their dead letters
	delete bool     // delete instead of replay
	n      int      // how many were found
	err    error
	done   chan struct{}
}

func (o *deadOp) size() int        { return (len(o.ids) + len(o.purge)) * 128 }
func (o *deadOp) durable() bool    { return true }
func (o *deadOp) finish(err error) { o.err = err; close(o.done) }

func (o *deadOp) stage(b *batch) error {
	o.n = 0 // a batch split after a failed commit stages its ops again
	ids := o.ids
	for _, d := range o.purge {
		// The index key goes in any case: a dead letter replayed or
		// deleted meanwhile took its own y/ key with it.
		if err := b.txn.Delete(diedAtKey(d.deadMs, d.id)); err != nil {
			return err
		}
		if st, found, err := getState(b.txn, deadKey(d.id)); err == nil && found && st.DeadMs != d.deadMs {
			continue // a stale index key of a dead letter that died again later
		}
		ids = append(ids, d.id)
	}
	for _, id := range ids {
		dk := deadKey(id)
		st, found, err := getState(b.txn, dk)
		if errors.Is(err, errCorrupt) && o.delete {
			// Unreadable, so never listed nor replayed: deleting it is all
			// that can be done. Its y/ key goes with the purge.
			b.s.log.Warn("deleting a corrupt dead letter", zap.Uint64("id", id))
			if err := b.txn.Delete(dk); err != nil {
				return err
			}
			if err := b.deleteMessage(id); err != nil {
				return err
			}
			o.n++
			continue
		}
		if err != nil {
			return err
		}
		if !found {
			continue
		}
		from := st
		if err := b.txn.Delete(dk); err != nil {
			return err
		}
		if err := b.txn.Delete(diedAtKey(st.DeadMs, id)); err != nil {
			return err
		}
		o.n++
		if o.delete {
			if err := b.deleteMessage(id); err != nil {
				return err
			}
			// So that Lookup tells deleted from delivered.
			if err := b.setRecord(kindAttempts, badger.NewEntry(erasedKey(id), nil).WithTTL(b.s.live.Load().attemptRetention)); err != nil {
				return err
			}
			b.change(&from, nil)
			continue
		}
		// A fresh budget: attempts and age count from the replay. The
		// receive time and the attempt history stay.
		st = state{Flags: st.Flags & flagSegment, Route: st.Route, ReceivedMs: st.ReceivedMs, Size: st.Size, LastStatus: st.LastStatus, LastError: st.LastError,
			ClockMs: b.nowMs, PausedMs: b.pausedMs(st.Route), Earlier: st.Earlier + st.Attempt}
		qk := queueKey(st.Route, b.nowMs, id)
		if err := b.txn.Set(qk, st.encode()); err != nil {
			return err
		}
		b.change(&from, &st)
		b.queued(qk)
	}
	return nil
}

// pauseOp pauses or resumes a route's deliveries.
type pauseOp struct {
	route  string
	paused bool
	err    error
	done   chan struct{}
}

func (o *pauseOp) size() int        { return 64 + len(o.route) }
func (o *pauseOp) durable() bool    { return true }
func (o *pauseOp) finish(err error) { o.err = err; close(o.done) }

func (o *pauseOp) stage(b *batch) error {
	rid, err := b.routeID(o.route)
	if err != nil {
		return err
	}
	p := b.pause(rid)
	if o.paused == p.paused {
		return nil
	}
	if o.paused {
		p.since = b.nowMs
		err = b.txn.Set(pausedKey(rid), appendUint64(nil, uint64(p.since)))
	} else {
		// The pause's length no longer counts toward the age of the
		// route's items (see catalog.ageMs).
		p.total += max(b.nowMs-p.since, 0)
		if err = b.txn.Delete(pausedKey(rid)); err == nil {
			err = b.txn.Set(pausesKey(rid), appendUint64(nil, uint64(p.total)))
		}
		// Everything of the route that came due meanwhile is behind the
		// dispatcher's cursor for it.
		b.rewind[rid] = queuePrefix(rid)
	}
	if err != nil {
		return err
	}
	p.paused = o.paused
	v := *p
	b.effects = append(b.effects, effect{apply: func(c *catalog) {
		if v.paused {
			c.paused[rid] = v.since
		} else {
			delete(c.paused, rid)
			c.pauses[rid] = v.total
		}
	}})
	return nil
}

// disableOp disables a route (its due items become dead letters with the
// reason) or enables it again.
type disableOp struct {
	route  string
	reason string // "" enables
	err    error
	done   chan struct{} // nil when nobody waits
}

func (o *disableOp) size() int     { return 64 + len(o.route) + len(o.reason) }
func (o *disableOp) durable() bool { return true }

func (o *disableOp) finish(err error) {
	o.err = err
	if o.done != nil {
		close(o.done)
	}
}

func (o *disableOp) stage(b *batch) error {
	rid, err := b.routeID(o.route)
	if err != nil {
		return err
	}
	if o.reason != "" {
		err = b.txn.Set(disabledKey(rid), []byte(o.reason))
	} else {
		err = b.txn.Delete(disabledKey(rid))
	}
	if err != nil {
		return err
	}
	b.rewind[rid] = queuePrefix(rid)
	reason := o.reason
	b.effects = append(b.effects, effect{apply: func(c *catalog) {
		if reason != "" {
			c.disabled[rid] = reason
		} else {
			delete(c.disabled, rid)
		}
	}})
	return nil
}
