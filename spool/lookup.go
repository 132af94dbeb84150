package spool

import (
	"context"
	"errors"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Lookup: where one event stands, by route and event id, with its attempts.

// ItemState is where an event stands.
type ItemState string

// Item states reported by Lookup.
const (
	StatePending   ItemState = "pending"   // queued, in flight or scheduled for a retry
	StateDead      ItemState = "dead"      // a dead letter
	StateDelivered ItemState = "delivered" // delivered; remembered until its dedupe window ends
	StateDeleted   ItemState = "deleted"   // a dead letter that was deleted or purged
)

// ItemStatus is Lookup's answer.
type ItemStatus struct {
	ID       uint64
	State    ItemState
	Dead     *DeadLetter // set for StateDead
	Attempts []Attempt   // the recorded attempts, oldest first, within the attempt retention
}

// Lookup finds where a route's event stands, while its dedupe record lasts.
// ctx is not used: the spool reads its local database.
func (s *Spool) Lookup(_ context.Context, route, eventID string) (ItemStatus, error) {
	var out ItemStatus
	var rec []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(dedupeKey(route, eventID))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		rec, err = item.ValueCopy(nil)
		if err != nil || len(rec) < 8 {
			return errors.Join(errCorrupt, err)
		}
		out.ID = beUint64(rec)
		return nil
	})
	if err != nil {
		return out, err
	}
	// An item leased at enqueue may not be in Badger yet (unwritten.go).
	// It leaves the unwritten items only after the commit that writes or
	// finishes it, so a transaction begun after this check sees that.
	_, unwritten := s.unwritten.get(out.ID)
	s.mu.Lock()
	rid, known := s.cat.ridByName[route]
	s.mu.Unlock()
	err = s.db.View(func(txn *badger.Txn) (err error) {
		if out.Attempts, err = attempts(txn, out.ID); err != nil {
			return err
		}
		if unwritten {
			out.State = StatePending
			return nil
		}
		if st, found, err := getState(txn, deadKey(out.ID)); err != nil {
			return err
		} else if found {
			out.State = StateDead
			out.Dead = &DeadLetter{ID: out.ID, Route: route, EventID: eventID, Reason: st.Reason,
				LastStatus: st.LastStatus, LastError: st.LastError, Attempts: st.Attempt, Size: st.Size,
				ReceivedAt: time.UnixMilli(st.ReceivedMs), DeadAt: time.UnixMilli(st.DeadMs)}
			return nil
		}
		if !known { // a route the commit just created, before the catalog learnt of it
			if item, err := getItem(txn, routeKey(route)); err != nil {
				return err
			} else if item != nil {
				if err := item.Value(func(v []byte) error {
					if known = len(v) == 4; known {
						rid = beUint32(v)
					}
					return nil
				}); err != nil {
					return err
				}
			}
		}
		// Pending: under m/ (stored before schema 6) or the q/ key its
		// dedupe record names.
		keys := [][]byte{msgKey(out.ID)}
		if known && len(rec) == dedupeValueLen {
			keys = append(keys, queueKey(rid, int64(beUint64(rec[16:])), out.ID))
		}
		for _, k := range keys {
			if item, err := getItem(txn, k); err != nil {
				return err
			} else if item != nil {
				out.State = StatePending
				return nil
			}
		}
		if item, err := getItem(txn, erasedKey(out.ID)); err != nil {
			return err
		} else if item != nil {
			out.State = StateDeleted
			return nil
		}
		// Delivered, unless a replay of its dead letter (or a retry by a
		// version that did not rewrite the dedupe record) moved it: then
		// it is found in its route's queue.
		out.State = StateDelivered
		if n := len(out.Attempts); n > 0 && out.Attempts[n-1].StatusCode/100 == 2 && out.Attempts[n-1].Error == "" {
			return nil
		}
		if known && inQueue(txn, rid, out.ID) {
			out.State = StatePending
		}
		return nil
	})
	return out, err
}

// inQueue reports whether item id is in route rid's queue, by a scan of
// its keys.
func inQueue(txn *badger.Txn, rid uint32, id uint64) bool {
	prefix := queuePrefix(rid)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
		if keyID(it.Item().Key()) == id {
			return true
		}
	}
	return false
}

// attempts reads an item's attempt records.
func attempts(txn *badger.Txn, id uint64) ([]Attempt, error) {
	prefix := attemptPrefix(id)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
	defer it.Close()
	var out []Attempt
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		k := it.Item().Key()
		if len(k) != len(prefix)+4 {
			continue
		}
		n := int(beUint32(k[len(prefix):]))
		err := it.Item().Value(func(v []byte) error {
			a, err := decodeAttempt(n, v)
			if err == nil {
				out = append(out, a)
			}
			return nil // a corrupt record is skipped, not fatal
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
