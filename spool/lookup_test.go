package spool

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// TestLookupFindsItemsWithoutAnM: an item has no m/ key (schema 6), so
// Lookup finds a pending one under the q/ key its dedupe record names
// (which a retry rewrites), or among the unwritten items while its first
// attempt runs; and tells the dead, the deleted and the delivered apart.
func TestLookupFindsItemsWithoutAnM(t *testing.T) {
	s := openTest(t, Options{})
	ctx := context.Background()
	release := make(chan struct{})
	answers := map[string]func() Outcome{
		"evt_retried":   func() Outcome { return Outcome{StatusCode: 503, RetryAfter: time.Hour} },
		"evt_dead":      func() Outcome { return Outcome{StatusCode: 400} },
		"evt_deleted":   func() Outcome { return Outcome{StatusCode: 400} },
		"evt_delivered": func() Outcome { return Outcome{StatusCode: 200} },
		"evt_inflight":  func() Outcome { <-release; return Outcome{StatusCode: 200} },
	}
	defer close(release)
	rec := newRecorder(func(d *Delivery) Outcome { return answers[d.EventID]() })
	pol := Policy{MaxAttempts: 5, BackoffMin: time.Hour, BackoffMax: time.Hour}
	if err := s.Pause(ctx, "waits"); err != nil {
		t.Fatal(err)
	}
	mustEnqueue(t, s, entry("waits", "evt_queued", "x"))
	s.RegisterRoute("r", Route{Deliverer: rec, Policy: pol})
	for _, id := range []string{"evt_retried", "evt_dead", "evt_deleted", "evt_delivered", "evt_inflight"} {
		mustEnqueue(t, s, entry("r", id, "x"))
	}
	rec.byEvent(t, 5, 5*time.Second)
	eventually(t, 5*time.Second, "the outcomes", func() bool {
		rs := routeStats(s, "r")
		return rs.Dead == 2 && rs.Scheduled == 1
	})
	st, err := s.Lookup(ctx, "r", "evt_deleted")
	if err != nil || st.State != StateDead {
		t.Fatalf("evt_deleted before its delete: %+v, %v", st, err)
	}
	if n, err := s.DeleteDead(ctx, st.ID); err != nil || n != 1 {
		t.Fatalf("DeleteDead: %d, %v", n, err)
	}
	for _, tc := range []struct {
		route, event string
		want         ItemState
	}{
		{"waits", "evt_queued", StatePending},
		{"r", "evt_retried", StatePending},
		{"r", "evt_inflight", StatePending},
		{"r", "evt_dead", StateDead},
		{"r", "evt_deleted", StateDeleted},
		{"r", "evt_delivered", StateDelivered},
	} {
		if st, err := s.Lookup(ctx, tc.route, tc.event); err != nil || st.State != tc.want {
			t.Errorf("%s: %+v, %v; want %s", tc.event, st, err, tc.want)
		}
	}
	if got := versions(t, s, prefixMessage); got != 0 {
		t.Fatalf("%d versions of m/ keys, want none", got)
	}
	// A retry points the dedupe record at the item's new key: no scan.
	s.mu.Lock()
	rid := s.cat.ridByName["r"]
	s.mu.Unlock()
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(dedupeKey("r", "evt_retried"))
		if err != nil {
			return err
		}
		rec, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		want := queueKey(rid, int64(beUint64(rec[16:])), beUint64(rec))
		if _, err := txn.Get(want); err != nil {
			return fmt.Errorf("the key its dedupe record names, %x: %w", want, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
