package spool

import (
	"bytes"
	"context"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// DeadLetter is an item that will not be delivered unless replayed.
type DeadLetter struct {
	ID         uint64
	Route      string
	EventID    string
	Reason     string // ReasonMaxAttempts, ReasonMaxAge, ReasonRejected, ReasonRouteRemoved, or a deliverer's
	LastStatus int    // the last attempt's response status, 0 if none
	LastError  string
	Attempts   int // attempts of its last run (since it was received or replayed)
	Size       int64
	ReceivedAt time.Time
	DeadAt     time.Time
}

// DeadFilter selects dead letters; empty fields match everything.
type DeadFilter struct {
	Route  string
	Reason string
}

func (f DeadFilter) match(route string, st *state) bool {
	return (f.Route == "" || f.Route == route) && (f.Reason == "" || f.Reason == st.Reason)
}

// ListDead returns up to limit dead letters matching f with ids above after,
// oldest first, and the cursor for the next page (0 at the end). ctx is not
// used: the spool reads its local database.
func (s *Spool) ListDead(_ context.Context, f DeadFilter, after uint64, limit int) ([]DeadLetter, uint64, error) {
	limit = min(max(limit, 1), 1000)
	var out []DeadLetter
	var next uint64
	err := s.scanDead(f, after, func(txn *badger.Txn, id uint64, st *state) (bool, error) {
		if len(out) == limit {
			next = out[len(out)-1].ID
			return false, nil
		}
		dl := DeadLetter{
			ID: id, Route: s.routeName(st.Route), Reason: st.Reason, LastStatus: st.LastStatus, LastError: st.LastError,
			Attempts: st.Attempt, Size: st.Size, ReceivedAt: time.UnixMilli(st.ReceivedMs), DeadAt: time.UnixMilli(st.DeadMs),
		}
		var err error
		if dl.EventID, err = s.eventID(txn, id, st); err != nil {
			return false, err
		}
		out = append(out, dl)
		return true, nil
	})
	return out, next, err
}

// scanDead calls fn for each dead letter matching f with an id above after,
// in id order, until fn returns false.
func (s *Spool) scanDead(f DeadFilter, after uint64, fn func(*badger.Txn, uint64, *state) (bool, error)) error {
	return s.db.View(func(txn *badger.Txn) error {
		prefix := []byte{prefixDead, '/'}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		for it.Seek(deadKey(after + 1)); it.ValidForPrefix(prefix); it.Next() {
			id, ok := parseIDKey(it.Item().Key())
			if !ok {
				continue
			}
			var st state
			if err := it.Item().Value(func(v []byte) (err error) { st, err = decodeState(v); return err }); err != nil {
				continue // corrupt: leave it for an operator's delete
			}
			if !f.match(s.routeName(st.Route), &st) {
				continue
			}
			more, err := fn(txn, id, &st)
			if err != nil || !more {
				return err
			}
		}
		return nil
	})
}

// Replay puts dead letters back in their route's queue with a fresh attempt
// budget and returns how many it found.
func (s *Spool) Replay(ctx context.Context, ids ...uint64) (int, error) {
	return s.deadOp(ctx, ids, false)
}

// DeleteDead deletes dead letters and returns how many it found.
func (s *Spool) DeleteDead(ctx context.Context, ids ...uint64) (int, error) {
	return s.deadOp(ctx, ids, true)
}

// ReplayMatching replays every dead letter matching f (all of them for an
// empty filter) and returns how many it replayed.
func (s *Spool) ReplayMatching(ctx context.Context, f DeadFilter) (int, error) {
	total := 0
	var after uint64
	for {
		var ids []uint64
		err := s.scanDead(f, after, func(_ *badger.Txn, id uint64, _ *state) (bool, error) {
			after = id
			ids = append(ids, id)
			return len(ids) < deadChunk, nil
		})
		if err != nil || len(ids) == 0 {
			return total, err
		}
		n, err := s.deadOp(ctx, ids, false)
		total += n
		if err != nil {
			return total, err
		}
	}
}

// PurgeDead deletes dead letters that died before t and returns how many.
func (s *Spool) PurgeDead(ctx context.Context, t time.Time) (int, error) {
	n, _, _, err := s.purge(ctx, t.UnixMilli(), nil)
	return n, err
}

// purge deletes the dead letters that died before beforeMs, walking the y/
// index from from (nil: its start), so that its cost follows what expires,
// not what is stored. It returns how many it deleted, how many index keys it
// read, and where the next purge can start.
func (s *Spool) purge(ctx context.Context, beforeMs int64, from []byte) (n, read int, next []byte, err error) {
	prefix := []byte{prefixDiedAt, '/'}
	end := diedAtKey(beforeMs, 0)
	next = from
	if next == nil {
		next = prefix
	}
	for {
		var batch []diedAt
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			defer it.Close()
			for it.Seek(next); it.ValidForPrefix(prefix) && len(batch) < deadChunk; it.Next() {
				k := it.Item().Key()
				if bytes.Compare(k, end) >= 0 {
					break
				}
				read++
				if ms, id, ok := parseDiedAtKey(k); ok {
					batch = append(batch, diedAt{id, ms})
				}
				next = append(it.Item().KeyCopy(nil), 0) // the next key after it
			}
			return nil
		})
		if err != nil || len(batch) == 0 {
			return n, read, next, err
		}
		o := &deadOp{delete: true, purge: batch, done: make(chan struct{})}
		if err := s.submit(ctx, o, o.done); err != nil {
			return n, read, next, err
		}
		if o.err != nil {
			return n, read, next, o.err
		}
		n += o.n
	}
}

// deadChunk is how many dead letters one commit replays or deletes.
const deadChunk = 256

// deadOp replays or deletes the dead letters ids, deadChunk per commit, and
// returns how many it found; on an error, the chunks before it stand.
func (s *Spool) deadOp(ctx context.Context, ids []uint64, del bool) (int, error) {
	total := 0
	for chunk := range slices.Chunk(ids, deadChunk) {
		o := &deadOp{ids: chunk, delete: del, done: make(chan struct{})}
		if err := s.submit(ctx, o, o.done); err != nil {
			return total, err
		}
		if o.err != nil {
			return total, o.err
		}
		total += o.n
	}
	return total, nil
}

func (s *Spool) routeName(rid uint32) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cat.names[rid]
}
