package spool

import (
	"iter"
	"maps"
	"sync"
)

// An item leased at enqueue is not written to Badger until it needs to be.
//
// Most items of a route that keeps up are leased by the commit that stores
// them (enqueueOp) and delivered a few milliseconds later. Writing their q/
// key only to delete it at the outcome was two of the four Badger entries of
// an event (four of six while m/ was written), each inserted in a memtable,
// logged, flushed and compacted. Such an item is durable without them: its
// message and redo record (which carries its id) are synced in a segment
// before the enqueue is answered, and its dedupe record is in the commit.
// So the enqueue writes only the dedupe record, and the item is kept here,
// in memory, until one of these writes it:
//
//   - its outcome: a delivery writes only its attempt record; a retry or a
//     dead letter writes the q/ or z/ key, as for any item, and a retry
//     rewrites its dedupe record as written, pointing at that key;
//   - a commit that syncs Badger (an operator's change, the checkpoint
//     within checkpointInterval, the last commit at Close) writes the q/ key
//     of every item still here before it moves c/redo past their redo
//     records.
//
// So every item whose redo record lies before c/redo is in Badger, and one
// past it that a crash left unwritten is stored again by the replay at open
// (redo.go), under its own id, with the attempts the flight log counted: an
// item whose dedupe record holds its id and says it was left unwritten,
// with no dead letter, erased mark nor attempt record, was in flight
// (lostInFlight). The dedupe record, not the attempt record (which the
// record budget may drop or trim), tells a retried item from a lost one.
type unwrittenItems struct {
	mu    sync.Mutex // for Lookup; the committer alone adds and removes
	items map[uint64]unwrittenItem
}

// unwrittenItem is what writing an item takes: its q/ key and state as
// the enqueue made them.
type unwrittenItem struct {
	key []byte
	st  state
}

func newUnwrittenItems() *unwrittenItems {
	return &unwrittenItems{items: map[uint64]unwrittenItem{}}
}

// add keeps items a commit leaves unwritten; called before that commit, so
// that no reader sees its dedupe record before the item is here.
func (u *unwrittenItems) add(items map[uint64]unwrittenItem) {
	u.mu.Lock()
	defer u.mu.Unlock()
	maps.Copy(u.items, items)
}

// remove forgets items written or finished by a commit, after it.
func (u *unwrittenItems) remove(ids iter.Seq[uint64]) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for id := range ids {
		delete(u.items, id)
	}
}

// get returns item id, if it is unwritten.
func (u *unwrittenItems) get(id uint64) (unwrittenItem, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	it, ok := u.items[id]
	return it, ok
}

// all returns the unwritten items, for a commit that writes them.
func (u *unwrittenItems) all() map[uint64]unwrittenItem {
	u.mu.Lock()
	defer u.mu.Unlock()
	return maps.Clone(u.items)
}

func (u *unwrittenItems) len() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.items)
}
