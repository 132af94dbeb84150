package spool

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// RouteStats describe one route's items.
type RouteStats struct {
	Route     string
	Queued    int64 // waiting for their first attempt
	InFlight  int64 // leased to a worker
	Scheduled int64 // waiting for a retry
	Dead      int64
	Bytes     int64     // message bytes, dead letters included
	Oldest    time.Time // receive time (to the second) of the oldest item not yet delivered or dead; zero if none
	Paused    bool
	Disabled  string // why the route is disabled; "" while it is enabled
}

// OldestAge is how long the oldest pending item has waited, 0 if none.
func (r RouteStats) OldestAge(now time.Time) time.Duration {
	if r.Oldest.IsZero() {
		return 0
	}
	return max(now.Sub(r.Oldest), 0)
}

// Stats returns every route that has items, is paused or is registered,
// sorted by name.
func (s *Spool) Stats() []RouteStats {
	byName := map[string]*RouteStats{}
	s.mu.Lock()
	for rid, name := range s.cat.names {
		_, paused := s.cat.paused[rid]
		rs := &RouteStats{Route: name, Paused: paused, Disabled: s.cat.disabled[rid]}
		if rc := s.cat.counts[rid]; rc != nil {
			rs.Queued, rs.Scheduled = rc.n[classQueued], rc.n[classScheduled]
			rs.InFlight, rs.Dead = rc.n[classInFlight], rc.n[classDead]
			rs.Bytes = rc.bytes
			if ms := rc.pending.oldestMs(); ms != 0 {
				rs.Oldest = time.UnixMilli(ms)
			}
		}
		byName[name] = rs
	}
	s.mu.Unlock()
	s.routesMu.RLock()
	for name := range s.routes {
		if byName[name] == nil {
			byName[name] = &RouteStats{Route: name}
		}
	}
	s.routesMu.RUnlock()
	out := make([]RouteStats, 0, len(byName))
	for _, rs := range byName {
		out = append(out, *rs)
	}
	slices.SortFunc(out, func(a, b RouteStats) int {
		switch {
		case a.Route < b.Route:
			return -1
		case a.Route > b.Route:
			return 1
		}
		return 0
	})
	return out
}

// Usage returns the stored items and message bytes, dead letters included.
func (s *Spool) Usage() (items, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cat.items, s.cat.bytes
}

// Pause holds a route's deliveries: nothing of it is leased until Resume.
// Items keep their order and keep arriving. The state survives restarts.
func (s *Spool) Pause(ctx context.Context, route string) error { return s.setPaused(ctx, route, true) }

// Resume releases a paused route.
func (s *Spool) Resume(ctx context.Context, route string) error {
	return s.setPaused(ctx, route, false)
}

func (s *Spool) setPaused(ctx context.Context, route string, paused bool) error {
	o := &pauseOp{route: route, paused: paused, done: make(chan struct{})}
	if err := s.submit(ctx, o, o.done); err != nil {
		return err
	}
	return o.err
}

// Disable stops a route's deliveries for good: its items that come due
// become dead letters with reason, until Enable. (A delivery whose outcome
// has DisableRoute set does this by itself.) The state survives restarts.
func (s *Spool) Disable(ctx context.Context, route, reason string) error {
	if reason == "" {
		return errors.New("spool: Disable needs a reason")
	}
	o := &disableOp{route: route, reason: reason, done: make(chan struct{})}
	if err := s.submit(ctx, o, o.done); err != nil {
		return err
	}
	return o.err
}

// Enable lets a disabled route deliver again. Its dead letters stay where
// they are; replay them with ReplayMatching (route and the disable reason).
func (s *Spool) Enable(ctx context.Context, route string) error {
	o := &disableOp{route: route, done: make(chan struct{})}
	if err := s.submit(ctx, o, o.done); err != nil {
		return err
	}
	return o.err
}

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
func (s *Spool) Lookup(route, eventID string) (ItemStatus, error) {
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
		if out.Attempts, err = attempts(txn, out.ID); err != nil {
			return err
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
