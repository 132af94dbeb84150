package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// op is one unit of work for the committer. Every write to the database after
// Open goes through an op, so one goroutine owns the write path and concurrent
// callers share each fsync.
type op interface {
	// stage adds the op's writes to the batch's transaction. An error it
	// returns fails the op: the batch is staged again without it (or split,
	// for badger.ErrTxnTooBig). A refusal of the op alone (full, lease
	// lost) is recorded in the op, which then must not have staged anything.
	stage(b *batch) error
	// size estimates the bytes the op adds to the transaction.
	size() int
	// durable reports whether the op must be on disk when it finishes.
	// Delivery outcomes need not be: see Spool.write.
	durable() bool
	// finish reports the batch's commit error, or nil once it is committed
	// (and durable, for a durable op).
	finish(err error)
}

// Batch bounds: Badger refuses a transaction over 15% of the memtable size.
const maxBatchOps = 512

func (s *Spool) batchBudget() int { return int(s.opts.MemTableSize * 15 / 100 / 2) }

// batch is one transaction of the committer.
type batch struct {
	s       *Spool
	txn     *badger.Txn
	nowMs   int64
	effects []effect
	routes  map[string]uint32 // routes created in this batch
	rewind  map[uint32][]byte // earliest q/ key written per route
	items   int64             // messages added in this batch
	bytes   int64
	free    int64 // free disk bytes when the batch began
	pauses  map[uint32]*pauseView
	lastID  uint64               // the last item id taken, in this batch or before
	newIDs  bool                 // whether this batch took ids
	recs    recordDelta          // dedupe and attempt records staged
	segs    map[uint32]*segCount // changes of the segments' live messages
	started bool                 // whether a record started a segment
	// Items leased at enqueue that this batch leaves unwritten, and the
	// unwritten items it writes or finishes (unwritten.go).
	unwritten map[uint64]unwrittenItem
	settled   map[uint64]bool
}

// unwrittenPerBudget is how many unwritten items a commit's budget takes:
// writing one takes two entries of at most about 256 bytes, so that a
// synced commit writes them all within half its budget.
const unwrittenPerBudget = 512

// mayLeaveUnwritten reports whether one more item may stay unwritten.
func (b *batch) mayLeaveUnwritten() bool {
	return b.s.unwritten.len()+len(b.unwritten) < b.s.batchBudget()/unwrittenPerBudget
}

// leaveUnwritten keeps item id, leased at enqueue, out of Badger.
func (b *batch) leaveUnwritten(id uint64, key []byte, st *state) {
	if b.unwritten == nil {
		b.unwritten = map[uint64]unwrittenItem{}
	}
	b.unwritten[id] = unwrittenItem{key: key, st: *st}
}

// settle notes that item id, unwritten until this batch, is written or
// finished by it.
func (b *batch) settle(id uint64) {
	if b.settled == nil {
		b.settled = map[uint64]bool{}
	}
	b.settled[id] = true
}

// writeUnwritten writes the q/ key of every item left unwritten, by earlier
// batches or this one, before a synced commit moves c/redo past their redo
// records.
func (b *batch) writeUnwritten() error {
	for id, it := range b.s.unwritten.all() {
		if b.settled[id] {
			continue
		}
		if err := b.writeItem(id, it); err != nil {
			return err
		}
		b.settle(id)
	}
	for id, it := range b.unwritten {
		if err := b.writeItem(id, it); err != nil {
			return err
		}
	}
	b.unwritten = nil
	return nil
}

// writeItem writes an unwritten item as the enqueue would have. Its lease
// goes on; if it ended without an outcome, the dispatcher finds the item.
func (b *batch) writeItem(id uint64, it unwrittenItem) error {
	if err := b.txn.Set(it.key, it.st.encode()); err != nil {
		return err
	}
	b.queued(it.key)
	return nil
}

// appendBody appends a message, the concatenation of parts, to the active
// segment. The commit writes and syncs it before anything that points to it.
func (b *batch) appendBody(parts ...[]byte) (bodyPtr, error) {
	return b.appendRecord(segFormat, parts...)
}

func (b *batch) appendRecord(format byte, parts ...[]byte) (bodyPtr, error) {
	p, err := b.s.bodies.appendRecord(format, parts...)
	if err == nil && p.off == 0 {
		b.started = true
	}
	return p, err
}

// storeMessage stores item id's message: whole under its m/ key if it is
// smaller than segmentMin (tests only), else in a segment after its redo
// record; or, for a replay, the record where it already is. A message in a
// segment is counted in it and pointed to by st alone, which it marks
// (flagOwnPointer). logged reports whether the message and its redo record
// are in a segment.
func (b *batch) storeMessage(id uint64, st *state, e *preparedEntry, redo []byte) (logged bool, err error) {
	var p bodyPtr
	switch {
	case e.at != nil:
		p = *e.at
	case int64(e.size) < b.s.opts.segmentMin:
		return false, b.txn.Set(msgKey(id), slices.Concat(e.head, e.msg.Body))
	default:
		if _, err := b.appendRecord(segRedo, redo); err != nil {
			return false, err
		}
		if p, err = b.appendBody(e.head, e.msg.Body); err != nil {
			return false, err
		}
	}
	st.Flags |= flagSegment | flagPointer | flagOwnPointer
	st.Ptr = p
	b.segChange(p, id, 1)
	return true, nil
}

// setPointer stores p under item id's m/ key and counts the message in its
// segment.
func (b *batch) setPointer(id uint64, p bodyPtr) error {
	if err := b.txn.Set(msgKey(id), p.encode()); err != nil {
		return err
	}
	b.segChange(p, id, 1)
	return nil
}

// deleteMessage deletes item id's message, and if it is in a segment,
// counts it out of the segment's live messages. st is the item's state, if
// known: where it knows the pointer, m/ need not be read. An own pointer
// (flagOwnPointer) is taken as it is: the caller made it current
// (refreshPointer), and there is no m/ to delete.
func (b *batch) deleteMessage(id uint64, st *state) error {
	if st != nil && st.Flags&flagOwnPointer != 0 {
		b.segChange(st.Ptr, id, -1)
		return nil
	}
	k := msgKey(id)
	p, found := b.s.knownPointer(id, st)
	if !found {
		var err error
		if p, found, err = getPointer(b.txn, k); err != nil {
			return err
		}
	}
	if found {
		b.segChange(p, id, -1)
	}
	return b.txn.Delete(k)
}

// refreshPointer brings the own pointer of st, item id's state as read from
// key in an older snapshot, up to date from the batch's transaction where a
// compaction may have moved the message since (see knownPointer).
func (b *batch) refreshPointer(id uint64, key []byte, st *state) error {
	if st.Flags&flagOwnPointer == 0 {
		return nil
	}
	if _, sure := b.s.knownPointer(id, st); sure {
		return nil
	}
	cur, found, err := getState(b.txn, key)
	if err == nil && found {
		st.Ptr = cur.Ptr
	}
	return err
}

// segChange counts a message pointed to (sign 1) or no longer (-1).
func (b *batch) segChange(p bodyPtr, id uint64, sign int64) {
	if b.segs == nil {
		b.segs = map[uint32]*segCount{}
	}
	d := &segCount{items: sign, bytes: sign * p.recordLen()}
	if sign > 0 {
		d.minID, d.maxID = id, id
	}
	if cur := b.segs[p.seg]; cur != nil {
		cur.add(d)
	} else {
		b.segs[p.seg] = d
	}
}

// newID takes the next item id.
func (b *batch) newID() uint64 {
	b.lastID++
	b.newIDs = true
	return b.lastID
}

// takeID returns id, the id a replayed item had, or a new one if it is 0.
func (b *batch) takeID(id uint64) uint64 {
	if id == 0 {
		return b.newID()
	}
	b.lastID = max(b.lastID, id)
	b.newIDs = true
	return id
}

// pauseView is a route's pause state as the batch has staged it so far.
type pauseView struct {
	paused       bool
	since, total int64 // as in catalog.paused and catalog.pauses
}

// pause returns route rid's pause state: the catalog's, with the changes
// staged in this batch.
func (b *batch) pause(rid uint32) *pauseView {
	if p, ok := b.pauses[rid]; ok {
		return p
	}
	b.s.mu.Lock()
	since, paused := b.s.cat.paused[rid]
	p := &pauseView{paused: paused, since: since, total: b.s.cat.pauses[rid]}
	b.s.mu.Unlock()
	if b.pauses == nil {
		b.pauses = map[uint32]*pauseView{}
	}
	b.pauses[rid] = p
	return p
}

type effect struct {
	from, to *state
	apply    func(*catalog) // for changes other than an item's state
}

// change records an item's change of state for the catalog.
func (b *batch) change(from, to *state) {
	if from == nil && to != nil {
		b.items++
		b.bytes += to.Size
	} else if from != nil && to == nil {
		b.items--
		b.bytes -= from.Size
	}
	b.effects = append(b.effects, effect{from: from, to: to})
}

// pausedMs is route rid's total paused time now (see catalog.pausedMs).
func (b *batch) pausedMs(rid uint32) int64 {
	p := b.pause(rid)
	if p.paused {
		return p.total + max(b.nowMs-p.since, 0)
	}
	return p.total
}

// lease reserves a slot for a new item of route rid (named name) if it can
// skip the queue: the route is registered, neither paused nor disabled, and
// has no item waiting for its first attempt, nor any written due in this
// batch.
func (b *batch) lease(rid uint32, name string) (Route, bool) {
	if b.rewind[rid] != nil || b.pause(rid).paused {
		return Route{}, false
	}
	b.s.mu.Lock()
	_, disabled := b.s.cat.disabled[rid]
	var queued int64
	if rc := b.s.cat.counts[rid]; rc != nil {
		queued = rc.n[classQueued]
	}
	b.s.mu.Unlock()
	waiting := queued > b.s.flight.counts(rid)[classQueued]
	if disabled || waiting {
		return Route{}, false
	}
	route, ok := b.s.route(name)
	if !ok || b.s.slots.reserve(rid, 1, route.Concurrency, b.s.live.Load().workers) == 0 {
		return Route{}, false
	}
	return route, true
}

// queued notes a q/ key written, so the dispatcher can rewind to it.
func (b *batch) queued(k []byte) { keepEarliest(b.rewind, k) }

// keepEarliest records q/ key k in m, per route, unless an earlier key of
// its route is there.
func keepEarliest(m map[uint32][]byte, k []byte) {
	rid, _, _, _ := parseQueueKey(k)
	if cur, ok := m[rid]; !ok || bytes.Compare(k, cur) < 0 {
		m[rid] = k
	}
}

// routeID returns the id of a route, creating it in this batch if new.
func (b *batch) routeID(name string) (uint32, error) {
	b.s.mu.Lock()
	rid, ok := b.s.cat.ridByName[name]
	next := b.s.cat.nextRid
	b.s.mu.Unlock()
	if ok {
		return rid, nil
	}
	if rid, ok := b.routes[name]; ok {
		return rid, nil
	}
	rid = next + uint32(len(b.routes))
	if err := b.txn.Set(routeKey(name), binary.BigEndian.AppendUint32(nil, rid)); err != nil {
		return 0, err
	}
	b.routes[name] = rid
	b.effects = append(b.effects, effect{apply: func(c *catalog) { c.addRoute(name, rid) }})
	return rid, nil
}

// admit checks the bounds for adding n messages of size bytes.
func (b *batch) admit(n, size int64) error {
	o := b.s.live.Load()
	b.s.mu.Lock()
	items, stored := b.s.cat.items+b.items, b.s.cat.bytes+b.bytes
	b.s.mu.Unlock()
	switch {
	case items+n > o.maxItems:
		return &FullError{Limit: "max_items"}
	case stored+size > o.maxBytes:
		return &FullError{Limit: "max_bytes"}
	}
	// Keep the floor and the reserve even if every byte of this batch lands
	// on disk twice (write-ahead log and table).
	if b.free-2*(max(b.bytes, 0)+size)-b.s.reserve < o.minFreeDisk {
		return &FullError{Limit: "min_free_disk"}
	}
	return nil
}

func (s *Spool) commitLoop() {
	defer s.closers.commit.exit()
	budget := s.batchBudget()
	var pending op
	for {
		first := pending
		pending = nil
		if first == nil {
			select {
			case first = <-s.ops:
			case <-s.closers.commit.stopping():
				s.drain()
				return
			}
		}
		ops, size := []op{first}, first.size()
	fill:
		for len(ops) < maxBatchOps && size < budget {
			select {
			case o := <-s.ops:
				if size+o.size() > budget {
					pending = o
					break fill
				}
				ops, size = append(ops, o), size+o.size()
			default:
				break fill
			}
		}
		s.commit(ops)
	}
}

// drain commits whatever is still queued when the spool closes, and then
// writes the items left unwritten (unwritten.go) with a synced commit.
func (s *Spool) drain() {
	defer func() {
		if s.unwritten.len() > 0 {
			o := &syncOp{done: make(chan struct{})}
			s.commit([]op{o})
		}
	}()
	for {
		var ops []op
		for len(ops) < maxBatchOps {
			select {
			case o := <-s.ops:
				ops = append(ops, o)
				continue
			default:
			}
			break
		}
		if len(ops) == 0 {
			return
		}
		s.commit(ops)
	}
}

// commit writes ops in one transaction and reports the result to each. An
// op that fails to stage fails alone: the others are committed without it.
// A batch too big for one transaction is split.
func (s *Spool) commit(ops []op) {
	bad, err := s.commitOnce(ops)
	switch {
	case errors.Is(err, badger.ErrTxnTooBig) && len(ops) > 1:
		half := len(ops) / 2
		s.commit(ops[:half])
		s.commit(ops[half:])
		return
	case errors.Is(err, badger.ErrTxnTooBig):
		err = ErrTooLarge
	case bad >= 0 && len(ops) > 1:
		s.log.Error("spool write failed", zap.Error(err))
		ops[bad].finish(err)
		s.commit(slices.Delete(slices.Clone(ops), bad, bad+1))
		return
	}
	if err != nil && err != errDiskFull { // diskFull logged that one
		s.log.Error("spool commit failed", zap.Int("ops", len(ops)), zap.Error(err))
	}
	if err == nil {
		s.startLeased(takeLeases(ops))
	}
	for _, o := range ops {
		o.finish(err)
	}
}

// takeLeases takes the items the enqueues of a committed batch leased, so
// that their attempts are logged with one write to the flight log.
func takeLeases(ops []op) []work {
	var leases []work
	for _, o := range ops {
		if eo, ok := o.(*enqueueOp); ok {
			leases = append(leases, eo.leases...)
			eo.leases = nil
		}
	}
	return leases
}

// rewindTo points the dispatcher back at a q/ key it may have passed.
func (s *Spool) rewindTo(k []byte) {
	s.rewindMu.Lock()
	defer s.rewindMu.Unlock()
	keepEarliest(s.rewind, k)
}

// commitOnce writes ops in one transaction. If an op fails to stage, it
// returns that op's index and error, and nothing is written.
func (s *Spool) commitOnce(ops []op) (bad int, err error) {
	free := s.freeNow()
	if s.diskFull(free) {
		return -1, errDiskFull
	}
	s.bodies.discard() // what an attempt at this batch that failed to stage appended
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	s.mu.Lock()
	lastID := s.cat.nextID
	s.mu.Unlock()
	b := &batch{
		s:      s,
		txn:    txn,
		nowMs:  time.Now().UnixMilli(),
		routes: map[string]uint32{},
		rewind: map[uint32][]byte{},
		free:   free,
		lastID: lastID,
	}
	// Records appended for the batch may be on disk whatever becomes of it
	// (a rotation writes out what the old segment had), and the replay reads
	// their ids: those are never taken again.
	defer s.burnIDs(b)
	// A batch is durable when it holds an op that must be on disk when it
	// is answered. Badger is synced for it, unless every such op is an
	// enqueue that the segments hold for redo (redo.go): the sync of the
	// segments then makes it durable.
	durable := false
	for i, o := range ops {
		if err := o.stage(b); err != nil {
			return i, err
		}
		if eo, ok := o.(*enqueueOp); !(ok && eo.logged) && o.durable() {
			durable = true
		}
	}
	if durable { // the replay of a later open starts past what this commit syncs
		if err := b.writeUnwritten(); err != nil {
			return -1, err
		}
		if err := txn.Set(keyRedo, s.bodies.end().encode()); err != nil {
			return -1, err
		}
	}
	if b.newIDs {
		if err := txn.Set(keySeq, appendUint64(nil, b.lastID)); err != nil {
			return -1, err
		}
		b.effects = append(b.effects, effect{apply: func(c *catalog) { c.nextID = b.lastID }})
	}
	if s.bodies.pending() { // the messages, never a pointer on disk before its message
		if err := s.bodies.sync(); err != nil {
			return -1, err
		}
	}
	// Before the commit, so that no reader finds an item's dedupe record
	// while the item is neither in Badger nor here.
	s.unwritten.add(b.unwritten)
	committed := false
	err = s.write(txn, durable, func() { committed = true; s.applyBatch(b) })
	if !committed {
		s.unwritten.remove(maps.Keys(b.unwritten))
	}
	if s.unsynced { // whether or not the write failed: the checkpoint syncs it
		s.syncDue.Store(true)
	}
	if err != nil {
		return -1, err
	}
	return -1, nil
}

// burnIDs keeps the ids batch b took from being taken again, whether or
// not it staged and committed.
func (s *Spool) burnIDs(b *batch) {
	if !b.newIDs {
		return
	}
	s.mu.Lock()
	s.cat.nextID = max(s.cat.nextID, b.lastID)
	s.mu.Unlock()
}

// applyBatch brings the catalog and the dispatcher up to date with a batch
// that was committed.
func (s *Spool) applyBatch(b *batch) {
	s.mu.Lock()
	for _, e := range b.effects {
		if e.apply != nil {
			e.apply(&s.cat)
		} else {
			s.cat.apply(e.from, e.to)
		}
	}
	trim := b.recs.apply(&s.cat.records, time.Now(), s.live.Load().maxRecordBytes)
	emptied := s.cat.addSegments(b.segs)
	s.mu.Unlock()
	if len(b.settled) > 0 {
		s.unwritten.remove(maps.Keys(b.settled))
	}
	if trim {
		s.nudgeTrim()
	}
	if emptied || b.started {
		s.nudgeSegments()
	}
	if len(b.rewind) > 0 {
		s.rewindMu.Lock()
		for _, k := range b.rewind {
			keepEarliest(s.rewind, k)
		}
		s.rewindMu.Unlock()
		s.nudge()
	}
}

// write commits txn, calls committed, and if durable, syncs the commit and
// every one before it to disk before it returns. The catalog learns of a
// commit (committed) before its sync, so that it never lags the database;
// those who wait for the op learn of it after.
//
// Badger is opened without SyncWrites, so a commit is in its memory-mapped
// logs, i.e. in the page cache: it survives the process (a crash, kill -9),
// not the machine. Only enqueues and the operator's changes must be on disk
// before they are answered, and enqueues are, in the segments (redo.go);
// delivery outcomes may be lost to a power cut, which costs an attempt that
// is not counted or a delivery made twice, both within at least once. The
// checkpoint syncs them within checkpointInterval (maintenance.go), and the
// flight log with them.
//
// A durable commit syncs before as well as after, when something is
// unsynced: db.Sync syncs the active memtable's log, and a commit that finds
// the memtable full writes to a new one, leaving the old log unsynced. So
// every durable commit has every commit before it on disk. A non-durable
// commit that starts a new log has the old one synced right after it
// (walFiles); a power cut in between could keep it and lose an earlier
// commit of the old log (docs/spool.md). Value log files are synced when
// they are rotated (Badger truncates them, which syncs). Message segments
// are synced by commitOnce before any commit that points into them, durable
// or not.
func (s *Spool) write(txn *badger.Txn, durable bool, committed func()) error {
	if durable && s.unsynced {
		if err := s.db.Sync(); err != nil {
			return err
		}
		s.unsynced = false
	}
	if err := txn.Commit(); err != nil {
		return err
	}
	committed()
	// A commit that started a new log left the old one behind, unsynced
	// if a commit before this one was: sync it now, which DB.Sync would
	// never do.
	if err := s.wal.syncRotated(); err != nil {
		s.unsynced = true
		return err
	}
	if !durable {
		s.unsynced = true
		return nil
	}
	if err := s.db.Sync(); err != nil {
		// Committed but maybe not on disk: the op fails, and the
		// sender's retry finds a duplicate.
		s.unsynced = true
		return err
	}
	return nil
}

// getItem returns key k's item, nil if k is gone.
func getItem(txn *badger.Txn, k []byte) (*badger.Item, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	return item, err
}

// getState reads the state under key k; found is false if k is gone.
func getState(txn *badger.Txn, k []byte) (st state, found bool, err error) {
	item, err := getItem(txn, k)
	if item == nil {
		return state{}, false, err
	}
	err = item.Value(func(v []byte) (err error) { st, err = decodeState(v); return err })
	return st, err == nil, err
}
