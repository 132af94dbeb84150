package spool

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// killAll makes every attempt fail for good, so items die at once.
func killAll(t *testing.T, s *Spool, route string) {
	t.Helper()
	s.RegisterRoute(route, Route{Deliverer: newRecorder(func(*Delivery) Outcome { return Outcome{StatusCode: 400} })})
}

// deadAt enqueues an item that dies at once and returns when it died.
func deadAt(t *testing.T, s *Spool, route, id string) time.Time {
	t.Helper()
	mustEnqueue(t, s, entry(route, id, "x"))
	var st ItemStatus
	eventually(t, 5*time.Second, id+" to die", func() bool {
		st, _ = s.Lookup(context.Background(), route, id)
		return st.State == StateDead
	})
	return st.Dead.DeadAt
}

// waitPast waits until the clock is past t.
func waitPast(t time.Time) {
	for !time.Now().After(t) {
		time.Sleep(time.Until(t) + time.Millisecond)
	}
}

func TestPurgeDeadBefore(t *testing.T) {
	s := openTest(t, Options{})
	killAll(t, s, "r")
	var old, recent []string
	var cutoff time.Time
	for i := range 3 {
		id := fmt.Sprint("old_", i)
		cutoff = deadAt(t, s, "r", id).Add(time.Millisecond)
		old = append(old, id)
	}
	waitPast(cutoff)
	for i := range 2 {
		id := fmt.Sprint("recent_", i)
		deadAt(t, s, "r", id)
		recent = append(recent, id)
	}
	ctx := context.Background()
	if n, err := s.PurgeDead(ctx, cutoff); n != len(old) || err != nil {
		t.Fatalf("PurgeDead = %d, %v; want %d", n, err, len(old))
	}
	for _, id := range old {
		if st, _ := s.Lookup(context.Background(), "r", id); st.State != StateDeleted {
			t.Errorf("%s died before the cutoff and is %s, want deleted", id, st.State)
		}
	}
	for _, id := range recent {
		if st, _ := s.Lookup(context.Background(), "r", id); st.State != StateDead {
			t.Errorf("%s died after the cutoff and is %s, want dead", id, st.State)
		}
	}
	if items, _ := s.Usage(); items != int64(len(recent)) {
		t.Errorf("%d items stored after the purge, want %d", items, len(recent))
	}
	if n, err := s.PurgeDead(ctx, cutoff); n != 0 || err != nil {
		t.Fatalf("second PurgeDead = %d, %v; want 0", n, err)
	}
}

// TestMaintenancePurgesDeadLettersPastRetention: the maintenance loop
// purges each dead letter once it is older than DeadRetention, not before.
func TestMaintenancePurgesDeadLettersPastRetention(t *testing.T) {
	defer func(d time.Duration) { purgeInterval = d }(purgeInterval)
	purgeInterval = 10 * time.Millisecond
	const retention = time.Second
	s := openTest(t, Options{Limits: Limits{DeadRetention: retention}})
	defer s.Close() // before purgeInterval is restored
	killAll(t, s, "r")

	first := deadAt(t, s, "r", "first")
	waitPast(first.Add(retention))
	second := deadAt(t, s, "r", "second")
	eventually(t, 5*time.Second, "the first dead letter purged", func() bool {
		st, _ := s.Lookup(context.Background(), "r", "first")
		return st.State == StateDeleted
	})
	st, _ := s.Lookup(context.Background(), "r", "second")
	if young := time.Since(second) < retention; young && st.State != StateDead {
		t.Fatalf("the second dead letter is %s before its retention ended", st.State)
	}
	eventually(t, 5*time.Second, "the second dead letter purged", func() bool {
		st, _ := s.Lookup(context.Background(), "r", "second")
		return st.State == StateDeleted
	})
	if age := time.Since(second); age < retention {
		t.Fatalf("the second dead letter was purged at %v old, before its retention of %v", age, retention)
	}
	// The catalog counts a commit once it is synced, after Lookup sees it.
	eventually(t, 5*time.Second, "nothing stored after the purges", func() bool { items, _ := s.Usage(); return items == 0 })
}

// TestAttemptRecordsExpire: attempt records go after AttemptRetention.
// Badger keeps expiry times in whole seconds, so a record may go up to a
// second early, never later.
func TestAttemptRecordsExpire(t *testing.T) {
	const retention = 3 * time.Second
	s := openTest(t, Options{Limits: Limits{AttemptRetention: retention}})
	rec := newRecorder(func(d *Delivery) Outcome {
		if d.Attempt == 1 {
			return Outcome{StatusCode: 503}
		}
		return Outcome{StatusCode: 204}
	})
	s.RegisterRoute("r", Route{Deliverer: rec, Policy: fastPolicy(3)})
	mustEnqueue(t, s, entry("r", "evt_att", "x"))
	first := rec.next(t, 5*time.Second)
	rec.next(t, 5*time.Second)
	var st ItemStatus
	eventually(t, 5*time.Second, "delivered", func() bool {
		st, _ = s.Lookup(context.Background(), "r", "evt_att")
		return st.State == StateDelivered
	})
	if time.Since(first.At) < retention-time.Second && len(st.Attempts) != 2 {
		t.Fatalf("%d attempt records within the retention, want 2: %+v", len(st.Attempts), st.Attempts)
	}
	eventually(t, retention+5*time.Second, "the attempt records to expire", func() bool {
		st, _ = s.Lookup(context.Background(), "r", "evt_att")
		return len(st.Attempts) == 0
	})
	if age := time.Since(first.At); age < retention-time.Second {
		t.Fatalf("attempt records gone after %v, retention %v", age, retention)
	}
	if st.State != StateDelivered {
		t.Fatalf("the item is %s once its attempts expired, want still delivered", st.State)
	}
}
