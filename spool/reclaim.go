package spool

import (
	"context"
	"errors"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// What keeps the message segments' disk bounded, run by the maintenance
// loop when a batch starts a segment or leaves one without a live message,
// and every minute:
//   - reclaim: a segment other than the active one that no pointer points
//     into is deleted, once the deletions that emptied it are durable;
//   - compaction: while the segments take more than twice the live message
//     bytes plus one segment, the live messages of the sparsest sealed
//     segments (under half live) are moved to the active one, leaving those
//     to reclaim. A sealed segment over half live takes at most twice its
//     live bytes, so once compaction has caught up, the segments take at
//     most twice the live message bytes plus the active segment.

// nudgeSegments wakes the maintenance loop to reclaim and compact
// segments.
func (s *Spool) nudgeSegments() {
	select {
	case s.segWake <- struct{}{}:
	default:
	}
}

// emptySegments returns the segments other than the active one that hold
// no live message.
func (s *Spool) emptySegments() []uint32 {
	var out []uint32
	infos := s.bodies.segments()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range infos {
		if !g.active && s.cat.segs[g.n] == nil {
			out = append(out, g.n)
		}
	}
	return out
}

// tendSegments reclaims empty segments, then compacts sparse ones if the
// segments are over their bound. It logs what fails. While the disk is
// full it waits: the committer writes nothing then, not even the synced
// commit a reclaim needs (diskFull logs when that starts and ends).
func (s *Spool) tendSegments() {
	s.tendMu.Lock()
	defer s.tendMu.Unlock()
	if s.diskFull(s.freeNow()) {
		return
	}
	if _, err := s.reclaimSegments(); err != nil {
		if !errors.Is(err, ErrClosed) {
			s.log.Error("reclaiming message segments failed", zap.Error(err))
		}
		return
	}
	moved, err := s.compactSegments()
	if err != nil && !errors.Is(err, ErrClosed) {
		s.log.Error("compacting message segments failed", zap.Int("moved", moved), zap.Error(err))
	}
	if moved > 0 {
		s.log.Debug("compacted message segments", zap.Int("moved", moved))
		if _, err := s.reclaimSegments(); err != nil && !errors.Is(err, ErrClosed) {
			s.log.Error("reclaiming message segments failed", zap.Error(err))
		}
	}
}

// reclaimSegments deletes the segments other than the active one that hold
// no live message, and returns how many. First it has the committer make a
// durable commit, so that the deletions that emptied them are on disk: a
// power cut must not bring back a pointer into a deleted segment. Only the
// segments still empty after that commit go: a batch under way when they
// were listed may have written into one before it was sealed.
func (s *Spool) reclaimSegments() (int, error) {
	empty := s.emptySegments()
	if len(empty) == 0 {
		return 0, nil
	}
	o := &syncOp{done: make(chan struct{})}
	if err := s.submit(context.Background(), o, o.done); err != nil {
		return 0, err
	}
	if o.err != nil {
		return 0, o.err
	}
	n := 0
	for _, seg := range s.emptySegments() {
		if !slices.Contains(empty, seg) {
			continue
		}
		if err := s.bodies.remove(seg); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// syncOp writes nothing, durably: when it finishes, every commit before it
// is on disk.
type syncOp struct {
	err  error
	done chan struct{}
}

func (o *syncOp) stage(*batch) error { return nil }
func (o *syncOp) size() int          { return 0 }
func (o *syncOp) durable() bool      { return true }
func (o *syncOp) finish(err error)   { o.err = err; close(o.done) }

// Compaction bounds: the bytes of live messages one pass moves at most
// (more than a candidate segment can hold), and one move op's.
const (
	compactPassBytes = 2 * segmentSize
	compactOpBytes   = 4 << 20
)

// compactSegments moves the live messages of the sparsest sealed segments
// (under half live) to the active segment, while the segments take more
// than twice the live message bytes plus one segment, and returns how many
// it moved. The emptied segments are left to reclaim.
func (s *Spool) compactSegments() (int, error) {
	targets, lo, hi := s.sparseSegments()
	if len(targets) == 0 {
		return 0, nil
	}
	moved := 0
	// The messages m/ points to (stored by versions before 6), then those
	// whose state holds the only pointer: queued, then dead letters.
	for _, r := range []struct {
		from, end []byte
		states    bool
	}{
		{msgKey(lo), msgKey(hi + 1), false},
		{[]byte{prefixQueue, '/'}, []byte{prefixQueue, '/' + 1}, true},
		{[]byte{prefixDead, '/'}, []byte{prefixDead, '/' + 1}, true},
	} {
		for from := r.from; from != nil; {
			select {
			case <-s.closers.maintenance.stopping():
				return moved, nil
			default:
			}
			var found []move
			var err error
			found, from, err = s.findMoves(from, r.end, r.states, targets, lo, hi)
			if err != nil {
				return moved, err
			}
			if len(found) == 0 {
				continue
			}
			o := &moveOp{moves: found, done: make(chan struct{})}
			if err := s.submit(context.Background(), o, o.done); err != nil {
				return moved, err
			}
			if o.err != nil {
				return moved, o.err
			}
			moved += o.moved
		}
	}
	return moved, nil
}

// sparseSegments picks the segments a compaction pass empties, sparsest
// first, and returns them with the range of item ids they hold.
func (s *Spool) sparseSegments() (targets map[uint32]bool, lo, hi uint64) {
	type candidate struct {
		n          uint32
		size, live int64
		sc         segCount
	}
	var cands []candidate
	var total, live int64
	infos := s.bodies.segments()
	s.mu.Lock()
	for _, g := range infos {
		sc := s.cat.segs[g.n]
		if sc == nil {
			continue // empty: reclaimed, not compacted
		}
		total += g.size
		live += sc.bytes
		if !g.active && 2*sc.bytes < g.size {
			cands = append(cands, candidate{g.n, g.size, sc.bytes, *sc})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(cands, func(a, b candidate) int { // by live share, lowest first
		switch l, r := a.live*b.size, b.live*a.size; {
		case l < r:
			return -1
		case l > r:
			return 1
		}
		return 0
	})
	bound := 2*live + s.bodies.target
	// A pass writes what it moves before it frees anything: out of the
	// free space above the reserve and the floor, as new items do.
	budget := min(compactPassBytes, s.freeNow()-s.reserve-s.live.Load().minFreeDisk)
	var moving int64
	for _, c := range cands {
		if total <= bound {
			break
		}
		if moving+c.live > budget {
			continue
		}
		if targets == nil {
			targets, lo = map[uint32]bool{}, c.sc.minID
		}
		targets[c.n] = true
		lo, hi = min(lo, c.sc.minID), max(hi, c.sc.maxID)
		total += c.live - c.size
		moving += c.live
	}
	return targets, lo, hi
}

// move is one message a compaction moves.
type move struct {
	id   uint64
	key  []byte // the q/ or z/ key of a state with an own pointer; nil for m/
	from bodyPtr
	msg  []byte
}

// findMoves reads, from the key from up to end, the messages in the target
// segments, up to compactOpBytes of them, and returns them with the key to
// go on from (nil at the end): m/ pointers, or with states, the own
// pointers of q/ or z/ states.
func (s *Spool) findMoves(from, end []byte, states bool, targets map[uint32]bool, lo, hi uint64) ([]move, []byte, error) {
	var found []move
	var size int64
	// A move writes a pointer or a state (with its last error) into the
	// op's transaction: at most about 512 bytes, within its budget.
	most := max(s.batchBudget()/512, 1)
	var next []byte
	err := s.db.View(func(txn *badger.Txn) (err error) {
		add := func(key []byte, id uint64, p bodyPtr) bool {
			if targets[p.seg] {
				found = append(found, move{id: id, key: key, from: p})
				size += p.recordLen()
			}
			return size < compactOpBytes && len(found) < most
		}
		if states {
			next, err = scanOwnPointers(txn, from, end, lo, hi, add)
		} else {
			next, err = scanPointers(txn, from, end, func(id uint64, p bodyPtr) bool { return add(nil, id, p) })
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	out := found[:0]
	for _, m := range found {
		msg, err := s.bodies.read(m.from)
		switch {
		case errors.Is(err, errSegmentGone):
			continue // deleted since, with its segment
		case err != nil:
			s.log.Warn("cannot move a message that cannot be read; its segment stays until it is delivered or deleted",
				zap.Uint64("id", m.id), zap.Error(err))
			continue
		}
		m.msg = msg
		out = append(out, m)
	}
	return out, next, nil
}

// moveOp moves messages found by a compaction to the active segment: each
// m/ pointer, or state with an own pointer, is replaced only if it still
// points where it was found.
type moveOp struct {
	moves []move
	moved int
	err   error
	done  chan struct{}
}

func (o *moveOp) size() int        { return len(o.moves) * (msgKeyLen + pointerLen + 32) }
func (o *moveOp) durable() bool    { return false } // the reclaim after it is
func (o *moveOp) finish(err error) { o.err = err; close(o.done) }

func (o *moveOp) stage(b *batch) error {
	o.moved = 0 // a batch split after a failed commit stages its ops again
	for _, m := range o.moves {
		if m.key != nil {
			moved, err := o.moveState(b, m)
			if err != nil {
				return err
			}
			if moved {
				o.moved++
			}
			continue
		}
		p, found, err := getPointer(b.txn, msgKey(m.id))
		if err != nil {
			return err
		}
		if !found || p != m.from {
			continue // delivered, deleted or moved meanwhile
		}
		b.s.movingFrom(m.from.seg)
		to, err := b.appendBody(m.msg)
		if err != nil {
			return err
		}
		if err := b.setPointer(m.id, to); err != nil {
			return err
		}
		b.segChange(m.from, m.id, -1)
		o.moved++
	}
	return nil
}

// moveState moves the message of a state with an own pointer and rewrites
// the state, under the same key. A lease of the item read the state before:
// marked first (movingFrom), the old segment makes its outcome and its
// read take the state again (knownPointer).
func (o *moveOp) moveState(b *batch, m move) (bool, error) {
	st, found, err := getState(b.txn, m.key)
	if err != nil || !found || st.Flags&flagOwnPointer == 0 || st.Ptr != m.from {
		return false, err // delivered, retried or moved meanwhile
	}
	b.s.movingFrom(m.from.seg)
	to, err := b.appendBody(m.msg)
	if err != nil {
		return false, err
	}
	st.Ptr = to
	if err := b.txn.Set(m.key, st.encode()); err != nil {
		return false, err
	}
	b.segChange(to, m.id, 1)
	b.segChange(m.from, m.id, -1)
	return true, nil
}
