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
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(dedupeKey(route, eventID))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		rec, err := item.ValueCopy(nil)
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
		switch _, err := txn.Get(msgKey(out.ID)); {
		case err == nil:
			out.State = StatePending
			return nil
		case !errors.Is(err, badger.ErrKeyNotFound):
			return err
		}
		switch _, err := txn.Get(erasedKey(out.ID)); {
		case err == nil:
			out.State = StateDeleted
		case errors.Is(err, badger.ErrKeyNotFound):
			out.State = StateDelivered
		default:
			return err
		}
		return nil
	})
	return out, err
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
