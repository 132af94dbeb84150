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
	msg        *message
	head       []byte // msg's encoding up to its body, which follows it in a record
	size       int    // the encoded message's length: head and body
	received   int64
	window     time.Duration
	at         *bodyPtr // a replay's message, where it already is
	id         uint64   // a replay's item id, if its redo record has it
}

// enqueueOp stores entries with their dedupe records. If any entry
// conflicts, it stores none of them.
//
// A new item whose route has a free slot and nothing else waiting for its
// first attempt is leased at once (see flight) and handed, message and all,
// to a worker once the commit is durable: the dispatcher never reads it.
type enqueueOp struct {
	entries []preparedEntry
	results []Result
	leases  []work           // the items leased at enqueue, for workers once committed
	waiting []waitingMessage // the items not leased, for s.recent once committed
	s       *Spool           // set by stage
	err     error
	done    chan struct{}
	replay  bool // a replay at open (redo.go): stored before, not held to the bounds again
	logged  bool // set by stage: what it stored can be redone from the segments
}

// waitingMessage is the message of an item an enqueue stored without a
// lease, and the bytes it holds.
type waitingMessage struct {
	id   uint64
	msg  *message
	size int
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

// started hands the items leased at enqueue to workers, once committed,
// unless the committer did (takeLeases), and keeps the others' messages.
func (o *enqueueOp) started() {
	o.s.startLeased(o.leases)
	o.leases = nil
	now := time.Now()
	for _, w := range o.waiting {
		o.s.recent.put(w.id, w.msg, w.size, now)
	}
	o.waiting = nil
}

// dropLeases gives back the slots of leases that were not committed.
func (o *enqueueOp) dropLeases() {
	for _, l := range o.leases {
		o.s.slots.release(l.st.Route, 1)
		o.s.flight.done(keyID(l.key))
	}
	o.leases = nil
}

func (o *enqueueOp) stage(b *batch) error {
	o.err, o.logged = nil, false // a batch split after a failed commit stages its ops again
	o.dropLeases()
	o.waiting = o.waiting[:0]
	o.s = b.s
	// Dedupe first: a duplicate is answered even when the spool is full.
	o.results = make([]Result, len(o.entries))
	repeats := map[int]int{}   // entry index -> index of its first occurrence in the op
	restored := map[int]bool{} // replayed entries whose dedupe record is there, but not their item
	var n, size, records int64
	for i, e := range o.entries {
		res, first, err := o.lookup(b.txn, i)
		if err != nil {
			return err
		}
		if first >= 0 {
			repeats[i] = first
		}
		if o.replay && e.id != 0 && first < 0 && (res.Status == Accepted || res.Status == Duplicate && res.ID == e.id) {
			// The redo record knows the item's id: store the item unless
			// the database has it, or had it and finished it.
			switch lost, err := lostInFlight(b.txn, e.id, e.dedupe); {
			case err != nil:
				return err
			case !lost:
				res = Result{Status: Duplicate, ID: e.id}
			case res.Status == Duplicate:
				restored[i], res = true, Result{Status: Accepted}
			}
		}
		o.results[i] = res
		if res.Status == Accepted && !restored[i] {
			records += recordSize(len(e.dedupe), dedupeValueLen)
		}
		if res.Status == Accepted && !e.dedupeOnly {
			n, size = n+1, size+int64(e.size)
		}
	}
	if o.conflicted() {
		return nil
	}
	// Only new event ids are held to the bounds: a duplicate is answered
	// even when full. A dedupe-only record is held to the record budget
	// alone.
	if n > 0 && !o.replay {
		if err := b.admit(n, size); err != nil {
			o.err, o.results = err, nil
			return nil
		}
	}
	if err := b.admitRecords(records); err != nil && !o.replay {
		o.err, o.results = err, nil
		return nil
	}
	last := -1 // the last entry to store a message: its redo record ends the op's
	for i, e := range o.entries {
		if o.results[i].Status == Accepted && !e.dedupeOnly {
			last = i
		}
	}
	o.logged = !o.replay
	for i := range o.entries {
		e := &o.entries[i]
		if o.results[i].Status != Accepted {
			continue
		}
		if e.dedupeOnly {
			o.logged = false
			rec := dedupeRecord(0, e.hash, 0, false)
			if err := b.setRecord(kindDedupe, badger.NewEntry(e.dedupe, rec).WithTTL(e.window)); err != nil {
				return err
			}
			continue
		}
		rid, err := b.routeID(e.route)
		if err != nil {
			return err
		}
		id := b.takeID(e.id)
		st := &state{Route: rid, ReceivedMs: e.received, Size: int64(e.size), PausedMs: b.pausedMs(rid),
			Attempt: b.s.started[e.id]}
		route, direct := b.lease(rid, e.route)
		qk := queueKey(rid, b.nowMs, id)
		// A message in a segment makes its item durable with its redo
		// record: leased at once, the item stays out of Badger until it
		// must be written (unwritten.go).
		unwritten := direct && e.at == nil && int64(e.size) >= b.s.opts.segmentMin && b.mayLeaveUnwritten()
		// With the due time of its q/ key, so that Lookup finds the
		// item without an m/ key (schema 6).
		rec := dedupeRecord(id, e.hash, b.nowMs, unwritten)
		if restored[i] {
			// Its record again, as written with it now, expiring as it did:
			// a later replay must not store the item once more.
			if err := b.rewriteRecord(e.dedupe, func([]byte) []byte { return rec }); err != nil {
				return err
			}
		} else if err := b.setRecord(kindDedupe, badger.NewEntry(e.dedupe, rec).WithTTL(e.window)); err != nil {
			return err
		}
		logged, err := b.storeMessage(id, st, e, e.redoRecord(i == last, id))
		if err != nil {
			return err
		}
		o.logged = o.logged && logged
		if unwritten {
			b.leaveUnwritten(id, qk, st)
		} else if err := b.txn.Set(qk, st.encode()); err != nil {
			return err
		}
		b.change(nil, st)
		if direct {
			// Leased before the commit makes it visible to the dispatcher.
			b.s.flight.add(id, st)
			o.leases = append(o.leases, work{key: qk, st: *st, route: route, msg: e.msg})
		} else {
			b.queued(qk)
			// Counted by the memory it holds: a body read into a larger buffer keeps all of it.
			o.waiting = append(o.waiting, waitingMessage{id, e.msg, len(e.head) + cap(e.msg.Body)})
		}
		o.results[i].ID = id
	}
	for i, first := range repeats {
		o.results[i].ID = o.results[first].ID
	}
	return nil
}

// lostInFlight reports whether item id, whose dedupe record (under key
// dedupe) a replay found with its id, or did not find, is missing from the
// database without having been finished. A dedupe record written with its
// item (schema 6, not unwritten) means the item is there or was finished.
// Otherwise the item was leased at enqueue and unwritten (unwritten.go), or
// its enqueue's commit was lost: it is lost unless it has an m/ key (before
// schema 6), a dead letter, an erased mark or an attempt record, which
// a delivery writes (finishOp; a retry rewrites the dedupe record as
// written). An item delivered whose attempt record the record budget
// dropped, or the trim deleted, looks lost too, and is delivered again. A
// restored item's dedupe record is rewritten as written with it.
func lostInFlight(txn *badger.Txn, id uint64, dedupe []byte) (bool, error) {
	item, err := getItem(txn, dedupe)
	if err != nil {
		return false, err
	}
	if item != nil {
		rec, err := item.ValueCopy(nil)
		if err != nil {
			return false, err
		}
		if len(rec) == dedupeValueLen && rec[dedupeValueLen-1]&dedupeUnwritten == 0 {
			return false, nil
		}
	}
	for _, k := range [][]byte{msgKey(id), erasedKey(id), deadKey(id)} {
		if item, err := getItem(txn, k); item != nil || err != nil {
			return false, err
		}
	}
	prefix := attemptPrefix(id)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	it.Seek(prefix)
	return !it.ValidForPrefix(prefix), nil
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
	case 8 + 8, dedupeValueLen: // before or from schema 6
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

// transition says what a finishOp does with an item.
type transition int

const (
	toDelivered transition = iota // delete the item
	toRetry                       // schedule the next attempt
	toDead                        // make it a dead letter
)

// finishOp moves one item from the exact q/ key it was seen under.
//
// The outcome of a delivery carries the item's state (leased): nothing else
// writes an item in flight, so its key is as the lease found it, and the op
// ends the lease once committed. Otherwise (the dispatcher making a dead
// letter of what it saw in a snapshot, holding the item in flight) the op
// reads the key, and does nothing if it is gone.
type finishOp struct {
	s       *Spool
	key     []byte
	leased  *state // the state of an item in flight, nil to read it
	held    bool   // read, but its item is in flight until the op commits
	to      transition
	delay   time.Duration
	status  int
	lastErr string
	reason  string
	attempt *Attempt // the attempt that led here, recorded with the attempt retention
	// The delivery's route and event id: a retry points the event's dedupe
	// record at the item's new q/ key.
	route, eventID string
}

func (o *finishOp) size() int     { return 256 + len(o.lastErr) }
func (o *finishOp) durable() bool { return false }

func (o *finishOp) finish(err error) {
	if o.leased == nil && !o.held {
		return
	}
	o.s.flight.done(keyID(o.key))
	if err != nil {
		// The item is as it was, due still, maybe behind the dispatcher's
		// cursor: point it back there, in a while. If it is unwritten, the
		// checkpoint writes it there (unwritten.go).
		o.s.rewindTo(o.key)
		o.s.syncDue.Store(true)
		time.AfterFunc(time.Second, o.s.nudge)
	}
}

func (o *finishOp) stage(b *batch) error {
	var st state
	if o.leased != nil {
		st = *o.leased
	} else {
		var found bool
		var err error
		if st, found, err = getState(b.txn, o.key); err != nil {
			return err
		} else if !found {
			b.s.log.Debug("ignoring an outcome for an item already handled", zap.Binary("key", o.key))
			return nil
		}
	}
	rid, _, id, _ := parseQueueKey(o.key)
	from := st
	if o.attempt != nil {
		st.Attempt = o.attempt.Number
	}
	// An item leased at enqueue may still be unwritten: no q/ key to
	// delete (unwritten.go). Else a compaction may have moved its message
	// since the lease read its state.
	_, unwritten := b.s.unwritten.get(id)
	if unwritten = unwritten && o.leased != nil; unwritten {
		b.settle(id)
	} else if err := b.refreshPointer(id, o.key, &st); err != nil {
		return err
	} else if err := b.txn.Delete(o.key); err != nil {
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
		return b.deleteMessage(id, &st)
	}
	if o.status != 0 || o.lastErr != "" {
		st.LastStatus, st.LastError = o.status, o.lastErr
	}
	if o.to == toDead {
		st.DeadMs, st.Reason = b.nowMs, o.reason
		if err := b.txn.Set(deadKey(id), st.encode()); err != nil {
			return err
		}
		if err := b.txn.Set(diedAtKey(st.DeadMs, id), nil); err != nil {
			return err
		}
		b.change(&from, &st)
		return nil
	}
	due := dueAfter(b.nowMs, o.delay)
	nk := queueKey(rid, due, id)
	if err := b.txn.Set(nk, st.encode()); err != nil {
		return err
	}
	if o.eventID != "" {
		if err := b.pointDedupe(dedupeKey(o.route, o.eventID), id, due); err != nil {
			return err
		}
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
			if err := b.deleteMessage(id, nil); err != nil {
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
			if err := b.deleteMessage(id, &st); err != nil {
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
		st = state{Flags: st.Flags & (flagSegment | flagPointer | flagOwnPointer), Ptr: st.Ptr, Route: st.Route, ReceivedMs: st.ReceivedMs, Size: st.Size, LastStatus: st.LastStatus, LastError: st.LastError,
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
