package spool

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// The spool's side of the message segments (bodies.go): reading a message
// through its m/ pointer, and counting each segment's live messages at
// open. The catalog keeps the counts (catalog.segs) as batches change them;
// reclaim.go keeps the segments' disk bounded.

// getPointer reads the m/ value under k if it is a pointer; found is false
// if k is gone or holds a message stored whole (before segments).
func getPointer(txn *badger.Txn, k []byte) (p bodyPtr, found bool, err error) {
	item, err := getItem(txn, k)
	if item == nil {
		return bodyPtr{}, false, err
	}
	return itemPointer(item)
}

// itemPointer decodes item's value if it is a pointer. A value larger than
// a pointer is a message stored whole, maybe in the value log, and is not
// read. (A value written in the same transaction reports a size of 0.)
func itemPointer(item *badger.Item) (p bodyPtr, ok bool, err error) {
	if item.ValueSize() > pointerLen {
		return bodyPtr{}, false, nil
	}
	err = item.Value(func(v []byte) error { p, ok = decodePointer(v); return nil })
	return p, ok, err
}

// knownPointer returns the pointer item id's state carries, if it is sure
// to be where the message is: if it is in a segment no compaction has moved
// messages out of since this process started. A state read before a
// compaction (a lease from an older snapshot) may be stale: with an own
// pointer (flagOwnPointer, schema 6) the compaction rewrote the state, so
// the state is read again (refreshPointer, leasedMessage); otherwise m/ is
// the authority, which a compaction rewrites without the state, and the
// state's pointer is sure only for an item this process stored too (a
// state from before may predate an older process's compaction).
func (s *Spool) knownPointer(id uint64, st *state) (bodyPtr, bool) {
	if st == nil || st.Flags&flagPointer == 0 || st.Flags&flagOwnPointer == 0 && id <= s.storedFrom {
		return bodyPtr{}, false
	}
	s.movedMu.Lock()
	moved := s.movedFrom[st.Ptr.seg]
	s.movedMu.Unlock()
	return st.Ptr, !moved
}

// movingFrom notes that a compaction moves messages out of segment n,
// before it does: from then on states pointing there are not trusted.
func (s *Spool) movingFrom(n uint32) {
	s.movedMu.Lock()
	s.movedFrom[n] = true
	s.movedMu.Unlock()
}

// leasedMessage reads the message of item id, leased under key with state
// st: through the pointer st carries when it is sure, else through the
// state at key as it is now (an own pointer) or m/. A compaction may move
// the message and reclaim its segment between the check and the read: the
// segment is then gone, and the state or m/ says where it went.
func (s *Spool) leasedMessage(id uint64, key []byte, st *state) (*message, error) {
	if p, ok := s.knownPointer(id, st); ok {
		b, err := s.bodies.read(p)
		if err == nil {
			return decodeMessage(b)
		}
		if !errors.Is(err, errSegmentGone) {
			return nil, err
		}
	}
	if st.Flags&flagOwnPointer != 0 {
		return s.readVia(func(txn *badger.Txn) (bodyPtr, error) {
			cur, found, err := getState(txn, key)
			if err == nil && !found {
				if it, ok := s.unwritten.get(id); ok { // never moved: no compaction finds it
					return it.st.Ptr, nil
				}
				err = fmt.Errorf("%w: item %d is not under its key", ErrNotFound, id)
			}
			return cur.Ptr, err
		})
	}
	return s.message(id)
}

// readVia reads the message at the pointer find returns, found again if a
// compaction moved the message and reclaimed its segment meanwhile.
func (s *Spool) readVia(find func(txn *badger.Txn) (bodyPtr, error)) (*message, error) {
	for try := 0; ; try++ {
		var p bodyPtr
		err := s.db.View(func(txn *badger.Txn) (err error) { p, err = find(txn); return err })
		if err != nil {
			return nil, err
		}
		b, err := s.bodies.read(p)
		if errors.Is(err, errSegmentGone) && try < 2 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return decodeMessage(b)
	}
}

// readLeased gives the leases that carry no message theirs, ahead of their
// workers: from the recent messages, else, where the state's pointer is
// sure, by runs of records close together in one segment, one pread for
// each run. A drain leases items in the order their messages were written,
// so most of a pass's messages are one run. A lease left without a message
// is read by its worker, which reports what fails.
func (s *Spool) readLeased(leases []work) {
	type placed struct {
		w *work
		p bodyPtr
	}
	var todo []placed
	for i := range leases {
		w := &leases[i]
		if w.msg != nil {
			continue
		}
		id := keyID(w.key)
		if w.msg = s.recent.take(id); w.msg != nil {
			continue
		}
		if p, ok := s.knownPointer(id, &w.st); ok {
			todo = append(todo, placed{w, p})
		}
	}
	slices.SortFunc(todo, func(a, b placed) int {
		return cmp.Or(cmp.Compare(a.p.seg, b.p.seg), cmp.Compare(a.p.off, b.p.off))
	})
	for len(todo) > 0 {
		n := 1
		for n < len(todo) && inRun(todo[0].p, todo[n-1].p, todo[n].p) {
			n++
		}
		if n > 1 {
			ps := make([]bodyPtr, n)
			for i, t := range todo[:n] {
				ps[i] = t.p
			}
			for i, b := range s.bodies.readRun(ps) {
				if b != nil {
					todo[i].w.msg, _ = decodeMessage(b)
				}
			}
		}
		todo = todo[n:]
	}
}

// message reads item id's message by its id alone: through m/ (a pointer,
// or the message stored whole), else through the own pointer of its dead
// letter's state. A pending item with an own pointer is read through its
// key (leasedMessage).
func (s *Spool) message(id uint64) (*message, error) {
	var whole []byte
	m, err := s.readVia(func(txn *badger.Txn) (bodyPtr, error) {
		item, err := getItem(txn, msgKey(id))
		if err != nil {
			return bodyPtr{}, err
		}
		if item != nil {
			v, err := item.ValueCopy(nil)
			if err != nil {
				return bodyPtr{}, err
			}
			p, ok := decodePointer(v)
			if !ok {
				whole = v
				return bodyPtr{}, errStoredWhole
			}
			return p, nil
		}
		st, found, err := getState(txn, deadKey(id))
		if err == nil && (!found || st.Flags&flagOwnPointer == 0) {
			err = fmt.Errorf("%w: no message for item %d", ErrNotFound, id)
		}
		return st.Ptr, err
	})
	if errors.Is(err, errStoredWhole) {
		return decodeMessage(whole)
	}
	return m, err
}

// errStoredWhole stops readVia at a message stored whole in m/.
var errStoredWhole = errors.New("spool: message stored whole")

// eventIDHead is how much of a message in a segment is read for its event
// id, which comes after the route.
const eventIDHead = 512

// eventID returns the event id of the message of item id, whose state
// txn read as st, "" if it cannot be read.
func (s *Spool) eventID(txn *badger.Txn, id uint64, st *state) (string, error) {
	var item *badger.Item
	p, ok := st.Ptr, st.Flags&flagOwnPointer != 0
	if !ok {
		var err error
		if item, err = getItem(txn, msgKey(id)); item == nil {
			return "", err
		}
		if p, ok, err = itemPointer(item); err != nil {
			return "", err
		}
	}
	var head []byte
	var err error
	switch {
	case !ok:
		err = item.Value(func(v []byte) error { head = bytes.Clone(v); return nil })
	case p.n <= eventIDHead:
		head, err = s.bodies.read(p)
	default:
		head, err = s.bodies.readHead(p, eventIDHead)
		if _, ok := decodeEventID(head); !ok && err == nil {
			head, err = s.bodies.read(p) // a long route name or event id
		}
	}
	if errors.Is(err, errSegmentGone) { // moved by a compaction since txn began
		if m, err := s.message(id); err == nil {
			return m.EventID, nil
		}
	}
	if err != nil {
		return "", nil // listed without it
	}
	eid, _ := decodeEventID(head)
	return eid, nil
}

// decodeEventID decodes the event id from the start of an encoded message.
func decodeEventID(head []byte) (string, bool) {
	r := reader{b: head}
	if r.byte() != recordVersion {
		return "", false
	}
	r.string() // the route
	eid := r.string()
	return eid, r.err == nil
}

// loadSegments counts the live messages of each segment from the m/
// pointers and the own pointers of states, at open, and reports segments
// that pointers point into but that are missing.
func (s *Spool) loadSegments() error {
	segs := map[uint32]*segCount{}
	count := func(id uint64, p bodyPtr) bool {
		sc := segs[p.seg]
		if sc == nil {
			sc = &segCount{}
			segs[p.seg] = sc
		}
		sc.add(&segCount{items: 1, bytes: p.recordLen(), minID: id, maxID: id})
		return true
	}
	err := s.db.View(func(txn *badger.Txn) error {
		if _, err := scanPointers(txn, nil, nil, count); err != nil {
			return err
		}
		for _, p := range []byte{prefixQueue, prefixDead} {
			if _, err := scanOwnPointers(txn, []byte{p, '/'}, []byte{p, '/' + 1}, 0, math.MaxUint64, func(_ []byte, id uint64, ptr bodyPtr) bool {
				return count(id, ptr)
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool: counting messages: %w", err)
	}
	for n, sc := range segs {
		if s.bodies.segment(n) == nil {
			s.log.Error("messages point into a segment that is missing; they will be dead letters when they come due",
				zap.String("segment", segmentName(n)), zap.Int64("messages", sc.items))
		}
	}
	s.mu.Lock()
	s.cat.segs = segs
	s.mu.Unlock()
	return nil
}

// scanOwnPointers calls fn with each q/ or z/ key, from from up to end, of
// an item id from lo to hi whose state has an own pointer, in key order, until fn returns false, and
// returns the key after the one it stopped at (nil if it did not). fn may
// keep the key.
func scanOwnPointers(txn *badger.Txn, from, end []byte, lo, hi uint64, fn func(key []byte, id uint64, p bodyPtr) bool) (next []byte, err error) {
	it := txn.NewIterator(badger.IteratorOptions{})
	defer it.Close()
	for it.Seek(from); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		if bytes.Compare(k, end) >= 0 {
			break
		}
		id, ok := idOfKey(k)
		if !ok || id < lo || id > hi { // not read: no message of the segments wanted
			continue
		}
		var st state
		var bad error
		if err := item.Value(func(v []byte) error { st, bad = decodeState(v); return nil }); err != nil {
			return nil, err
		}
		if bad != nil {
			continue // a corrupt state is no pointer; it is reported when it comes due
		}
		if st.Flags&flagOwnPointer != 0 && !fn(item.KeyCopy(nil), id, st.Ptr) {
			return append(item.KeyCopy(nil), 0), nil
		}
	}
	return nil, nil
}

// scanPointers calls fn with each m/ pointer from key from (nil: the
// first) up to end (nil: the last), in id order, until fn returns false,
// and returns the key after the one it stopped at (nil if it did not).
// Messages stored whole are skipped unread.
func scanPointers(txn *badger.Txn, from, end []byte, fn func(id uint64, p bodyPtr) bool) (next []byte, err error) {
	prefix := []byte{prefixMessage, '/'}
	if from == nil {
		from = prefix
	}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(from); it.ValidForPrefix(prefix); it.Next() {
		k := it.Item().Key()
		if end != nil && bytes.Compare(k, end) >= 0 {
			break
		}
		id, ok := parseIDKey(k)
		if !ok {
			continue
		}
		p, ok, err := itemPointer(it.Item())
		if err != nil {
			return nil, err
		}
		if ok && !fn(id, p) {
			return append(it.Item().KeyCopy(nil), 0), nil
		}
	}
	return nil, nil
}
