package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestEnqueueDedupe(t *testing.T) {
	s := openTest(t, Options{})
	first := mustEnqueue(t, s, entry("a", "evt_1", `{"x":1}`))
	if first.Status != Accepted || first.ID == 0 {
		t.Fatalf("first enqueue = %+v, want accepted with an id", first)
	}
	tests := []struct {
		name string
		e    Entry
		want Status
		same bool // the id is the first item's
	}{
		{"same route, id and body", entry("a", "evt_1", `{"x":1}`), Duplicate, true},
		{"same route and id, other body", entry("a", "evt_1", `{"x":2}`), Conflict, true},
		{"other route, same id", entry("b", "evt_1", `{"x":1}`), Accepted, false},
		{"same route, other id", entry("a", "evt_2", `{"x":1}`), Accepted, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustEnqueue(t, s, tt.e)
			if r.Status != tt.want {
				t.Fatalf("status = %v, want %v", r.Status, tt.want)
			}
			if (r.ID == first.ID) != tt.same {
				t.Fatalf("id = %d, first = %d, same want %v", r.ID, first.ID, tt.same)
			}
		})
	}
	if items, _ := s.Usage(); items != 3 {
		t.Fatalf("stored items = %d, want 3", items)
	}
}

func TestEnqueueAllInOneTransaction(t *testing.T) {
	s := openTest(t, Options{})
	mustEnqueue(t, s, entry("b", "evt_1", "old"))
	res, err := s.EnqueueAll(context.Background(), []Entry{
		entry("a", "evt_1", "x"), entry("b", "evt_1", "old"), entry("c", "evt_1", "x"), entry("a", "evt_1", "x"),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Status{Accepted, Duplicate, Accepted, Duplicate}
	for i, r := range res {
		if r.Status != want[i] {
			t.Errorf("entry %d: %v, want %v", i, r.Status, want[i])
		}
	}
	if res[3].ID != res[0].ID {
		t.Errorf("a repeated entry got id %d, want its first occurrence's %d", res[3].ID, res[0].ID)
	}
}

func TestConcurrentEnqueueOfOneEvent(t *testing.T) {
	s := openTest(t, Options{})
	const n = 100
	var wg sync.WaitGroup
	results := make([]Result, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = s.Enqueue(context.Background(), entry("r", "evt_race", "same body"))
		})
	}
	close(start)
	wg.Wait()
	accepted, dup := 0, 0
	var id uint64
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("enqueue %d: %v", i, errs[i])
		}
		switch results[i].Status {
		case Accepted:
			accepted++
			id = results[i].ID
		case Duplicate:
			dup++
		}
	}
	if accepted != 1 || dup != n-1 {
		t.Fatalf("accepted=%d duplicate=%d, want 1 and %d", accepted, dup, n-1)
	}
	for i := range n {
		if results[i].ID != id {
			t.Fatalf("result %d names item %d, want %d", i, results[i].ID, id)
		}
	}
	if rs := routeStats(s, "r"); rs.Queued != 1 {
		t.Fatalf("queued = %d, want 1", rs.Queued)
	}
}

// TestDedupeWindowExpires: an event id is remembered for its dedupe window.
// Badger keeps expiry times in whole seconds, so a record lasts between the
// window less a second and the window: the checks allow for that second.
func TestDedupeWindowExpires(t *testing.T) {
	s := openTest(t, Options{})
	const window = 2 * time.Second
	e := entry("r", "evt_ttl", "body")
	e.DedupeWindow = window
	written := time.Now() // the record is written after this
	mustEnqueue(t, s, e)
	r := mustEnqueue(t, s, e)
	if time.Since(written) < window-time.Second && r.Status != Duplicate {
		t.Fatalf("inside the window: %v, want duplicate", r.Status)
	}
	eventually(t, window+5*time.Second, "the dedupe record to expire", func() bool {
		r, err := s.Enqueue(context.Background(), e)
		return err == nil && r.Status == Accepted
	})
	if age := time.Since(written); age < window-time.Second {
		t.Fatalf("the dedupe record expired after %v, more than a second before its window of %v", age, window)
	}
}

func TestDeliveryHappyPath(t *testing.T) {
	s := openTest(t, Options{})
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec})
	const n = 50
	for i := range n {
		mustEnqueue(t, s, entry("r", fmt.Sprintf("evt_%d", i), fmt.Sprintf(`{"n":%d}`, i)))
	}
	seen := map[string]int{}
	for range n {
		a := rec.next(t, 5*time.Second)
		seen[a.EventID]++
		if a.Attempt != 1 {
			t.Errorf("%s: attempt %d, want 1", a.EventID, a.Attempt)
		}
		if a.Header.Get("X-Webhook-Event") != "test.event" {
			t.Errorf("%s: headers not kept: %v", a.EventID, a.Header)
		}
	}
	rec.none(t, 100*time.Millisecond)
	if len(seen) != n {
		t.Fatalf("delivered %d distinct events, want %d", len(seen), n)
	}
	eventually(t, 2*time.Second, "the route to drain", func() bool {
		rs := routeStats(s, "r")
		return rs.Queued+rs.InFlight+rs.Scheduled == 0 && rs.Bytes == 0
	})
	st, err := s.Lookup(context.Background(), "r", "evt_7")
	if err != nil || st.State != StateDelivered {
		t.Fatalf("Lookup = %+v, %v; want delivered", st, err)
	}
	if items, bytes := s.Usage(); items != 0 || bytes != 0 {
		t.Fatalf("usage after delivery = %d items, %d bytes; want 0", items, bytes)
	}
}

func TestPerRouteConcurrencyCap(t *testing.T) {
	s := openTest(t, Options{})
	slow := newGate()
	fast := newRecorder(nil)
	s.RegisterRoute("slow", Route{Deliverer: slow, Concurrency: 2})
	s.RegisterRoute("fast", Route{Deliverer: fast})
	for i := range 10 {
		mustEnqueue(t, s, entry("slow", fmt.Sprintf("s%d", i), "x"))
	}
	eventually(t, 2*time.Second, "two slow deliveries", func() bool { n, _ := slow.counts(); return n == 2 })
	// The slow route is at its cap; another route still flows.
	for i := range 5 {
		mustEnqueue(t, s, entry("fast", fmt.Sprintf("f%d", i), "x"))
	}
	for range 5 {
		fast.next(t, 2*time.Second)
	}
	if rs := routeStats(s, "slow"); rs.InFlight != 2 || rs.Queued != 8 {
		t.Fatalf("slow route: %s; want 2 in flight, 8 queued", statsString(rs))
	}
	close(slow.release)
	eventually(t, 5*time.Second, "the slow route to drain", func() bool {
		rs := routeStats(s, "slow")
		return rs.Queued+rs.InFlight == 0
	})
	if _, peak := slow.counts(); peak != 2 {
		t.Fatalf("peak concurrency %d, want 2", peak)
	}
}

func TestRetryThenSuccess(t *testing.T) {
	s := openTest(t, Options{})
	rec := newRecorder(func(d *Delivery) Outcome {
		if d.Attempt < 3 {
			return Outcome{StatusCode: 503}
		}
		return Outcome{StatusCode: 200}
	})
	p := Policy{MaxAttempts: 5, BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second}
	s.RegisterRoute("r", Route{Deliverer: rec, Policy: p})
	mustEnqueue(t, s, entry("r", "evt_retry", "x"))
	a1, a2, a3 := rec.next(t, 2*time.Second), rec.next(t, 2*time.Second), rec.next(t, 2*time.Second)
	rec.none(t, 200*time.Millisecond)
	if a1.Attempt != 1 || a2.Attempt != 2 || a3.Attempt != 3 {
		t.Fatalf("attempt numbers %d %d %d, want 1 2 3", a1.Attempt, a2.Attempt, a3.Attempt)
	}
	if gap := a2.At.Sub(a1.At); gap < p.BackoffMin {
		t.Fatalf("first retry after %v, want at least %v", gap, p.BackoffMin)
	}
	eventually(t, time.Second, "delivered", func() bool {
		st, _ := s.Lookup(context.Background(), "r", "evt_retry")
		return st.State == StateDelivered
	})
}

func TestRetryAfterHonoured(t *testing.T) {
	s := openTest(t, Options{})
	rec := newRecorder(func(d *Delivery) Outcome {
		if d.Attempt == 1 {
			return Outcome{StatusCode: 429, RetryAfter: 400 * time.Millisecond}
		}
		return Outcome{StatusCode: 200}
	})
	s.RegisterRoute("r", Route{Deliverer: rec, Policy: Policy{BackoffMin: 10 * time.Millisecond, BackoffMax: 5 * time.Second}})
	mustEnqueue(t, s, entry("r", "evt_ra", "x"))
	a1, a2 := rec.next(t, 2*time.Second), rec.next(t, 3*time.Second)
	if gap := a2.At.Sub(a1.At); gap < 400*time.Millisecond {
		t.Fatalf("retried after %v, want at least the Retry-After of 400ms", gap)
	}
}

func TestDeadLetterReasons(t *testing.T) {
	tests := []struct {
		name       string
		policy     Policy
		answer     Outcome
		wantReason string
		attempts   int
	}{
		{"max attempts", fastPolicy(3), Outcome{StatusCode: 500}, ReasonMaxAttempts, 3},
		{"connection errors count too", fastPolicy(2), Outcome{Err: errors.New("connection refused")}, ReasonMaxAttempts, 2},
		{"non-retryable status", fastPolicy(5), Outcome{StatusCode: 400}, ReasonRejected, 1},
		{"policy says no", Policy{MaxAttempts: 5, Retryable: func(Outcome) bool { return false }}, Outcome{StatusCode: 503}, ReasonRejected, 1},
		{"deliverer's reason", fastPolicy(5), Outcome{StatusCode: 410, DeadReason: "gone"}, "gone", 1},
		{"max age", Policy{MaxAttempts: 100, MaxAge: 300 * time.Millisecond, BackoffMin: 100 * time.Millisecond, BackoffMax: 100 * time.Millisecond}, Outcome{StatusCode: 500}, ReasonMaxAge, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, Options{})
			rec := newRecorder(func(*Delivery) Outcome { return tt.answer })
			s.RegisterRoute("r", Route{Deliverer: rec, Policy: tt.policy})
			mustEnqueue(t, s, entry("r", "evt_dead", "poison"))
			var dead []DeadLetter
			eventually(t, 5*time.Second, "a dead letter", func() bool {
				dead, _, _ = s.ListDead(context.Background(), DeadFilter{}, 0, 10)
				return len(dead) == 1
			})
			d := dead[0]
			if d.Reason != tt.wantReason || d.EventID != "evt_dead" || d.Route != "r" {
				t.Fatalf("dead letter %+v, want reason %q", d, tt.wantReason)
			}
			if tt.wantReason != ReasonMaxAge && d.Attempts != tt.attempts {
				t.Fatalf("attempts %d, want %d", d.Attempts, tt.attempts)
			}
			if got := len(rec.snapshot()); got != d.Attempts {
				t.Fatalf("deliverer saw %d attempts, record says %d", got, d.Attempts)
			}
			if d.LastStatus != tt.answer.StatusCode {
				t.Fatalf("last status %d, want %d", d.LastStatus, tt.answer.StatusCode)
			}
			if tt.answer.Err != nil && d.LastError != tt.answer.Err.Error() {
				t.Fatalf("last error %q, want %q", d.LastError, tt.answer.Err)
			}
			rs := routeStats(s, "r")
			if rs.Dead != 1 || rs.Queued+rs.Scheduled+rs.InFlight != 0 || rs.Bytes == 0 {
				t.Fatalf("stats %s; want one dead letter keeping its bytes", statsString(rs))
			}
			if st, _ := s.Lookup(context.Background(), "r", "evt_dead"); st.State != StateDead || st.Dead.Reason != tt.wantReason {
				t.Fatalf("Lookup = %+v", st)
			}
		})
	}
}

func TestReplayDeleteAndPurge(t *testing.T) {
	s := openTest(t, Options{})
	var mu sync.Mutex
	healthy := false
	rec := newRecorder(func(d *Delivery) Outcome {
		mu.Lock()
		defer mu.Unlock()
		if healthy {
			return Outcome{StatusCode: 200}
		}
		return Outcome{StatusCode: 500}
	})
	s.RegisterRoute("a", Route{Deliverer: rec, Policy: fastPolicy(1)})
	s.RegisterRoute("b", Route{Deliverer: rec, Policy: fastPolicy(1)})
	for i := range 4 {
		mustEnqueue(t, s, entry("a", fmt.Sprintf("a%d", i), "x"))
		mustEnqueue(t, s, entry("b", fmt.Sprintf("b%d", i), "x"))
	}
	eventually(t, 5*time.Second, "8 dead letters", func() bool {
		return routeStats(s, "a").Dead == 4 && routeStats(s, "b").Dead == 4
	})
	mu.Lock()
	healthy = true
	mu.Unlock()
	ctx := context.Background()

	// One by id.
	dead, _, _ := s.ListDead(context.Background(), DeadFilter{Route: "a"}, 0, 1)
	if n, err := s.Replay(ctx, dead[0].ID); n != 1 || err != nil {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	eventually(t, 2*time.Second, "the replayed item delivered", func() bool {
		st, _ := s.Lookup(context.Background(), "a", dead[0].EventID)
		return st.State == StateDelivered
	})
	if n, _ := s.Replay(ctx, dead[0].ID); n != 0 {
		t.Fatalf("replaying a delivered item found %d", n)
	}
	// Delete one.
	dead, _, _ = s.ListDead(context.Background(), DeadFilter{Route: "a"}, 0, 1)
	if n, err := s.DeleteDead(ctx, dead[0].ID); n != 1 || err != nil {
		t.Fatalf("DeleteDead = %d, %v", n, err)
	}
	if st, _ := s.Lookup(context.Background(), "a", dead[0].EventID); st.State != StateDeleted {
		t.Fatalf("a deleted dead letter looks %s", st.State)
	}
	// By filter: route b only.
	if n, err := s.ReplayMatching(ctx, DeadFilter{Route: "b", Reason: ReasonMaxAttempts}); n != 4 || err != nil {
		t.Fatalf("ReplayMatching(b) = %d, %v", n, err)
	}
	eventually(t, 2*time.Second, "route b drained", func() bool {
		rs := routeStats(s, "b")
		return rs.Dead == 0 && rs.Queued+rs.InFlight == 0 && rs.Bytes == 0
	})
	if rs := routeStats(s, "a"); rs.Dead != 2 {
		t.Fatalf("route a: %s, want 2 dead left", statsString(rs))
	}
	// Purge: nothing died before an hour ago; everything died before now.
	if n, _ := s.PurgeDead(ctx, time.Now().Add(-time.Hour)); n != 0 {
		t.Fatalf("purged %d recent dead letters", n)
	}
	if n, err := s.PurgeDead(ctx, time.Now().Add(time.Second)); n != 2 || err != nil {
		t.Fatalf("PurgeDead = %d, %v; want 2", n, err)
	}
	if items, bytes := s.Usage(); items != 0 || bytes != 0 {
		t.Fatalf("usage %d items %d bytes after purge", items, bytes)
	}
}

func TestListDeadPagesAndFilters(t *testing.T) {
	s := openTest(t, Options{})
	rec := newRecorder(func(d *Delivery) Outcome {
		if d.EventID[0] == 'x' {
			return Outcome{StatusCode: 404}
		}
		return Outcome{StatusCode: 500}
	})
	s.RegisterRoute("r", Route{Deliverer: rec, Policy: fastPolicy(1)})
	for i := range 7 {
		mustEnqueue(t, s, entry("r", fmt.Sprintf("e%d", i), "x"))
	}
	for i := range 3 {
		mustEnqueue(t, s, entry("r", fmt.Sprintf("x%d", i), "x"))
	}
	eventually(t, 5*time.Second, "10 dead letters", func() bool { return routeStats(s, "r").Dead == 10 })

	var all []DeadLetter
	var cursor uint64
	pages := 0
	for {
		page, next, err := s.ListDead(context.Background(), DeadFilter{}, cursor, 3)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		pages++
		if next == 0 {
			break
		}
		cursor = next
	}
	if len(all) != 10 || pages != 4 {
		t.Fatalf("%d dead letters in %d pages, want 10 in 4", len(all), pages)
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID <= all[i-1].ID {
			t.Fatalf("pages not in id order: %d after %d", all[i].ID, all[i-1].ID)
		}
	}
	rejected, _, _ := s.ListDead(context.Background(), DeadFilter{Reason: ReasonRejected}, 0, 100)
	if len(rejected) != 3 {
		t.Fatalf("%d rejected, want 3", len(rejected))
	}
	if other, _, _ := s.ListDead(context.Background(), DeadFilter{Route: "other"}, 0, 100); len(other) != 0 {
		t.Fatalf("filter by another route found %d", len(other))
	}
}

func TestLeaseExpiryRedelivers(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir, LeaseMargin: 100 * time.Millisecond})
	hung := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hung) }) }
	t.Cleanup(release) // before Close, which waits for the hung worker
	rec := newRecorder(func(d *Delivery) Outcome {
		if d.Attempt == 1 {
			<-hung // a worker that ignores its context
		}
		return Outcome{StatusCode: 200}
	})
	s.RegisterRoute("r", Route{Deliverer: rec, Timeout: 50 * time.Millisecond})
	mustEnqueue(t, s, entry("r", "evt_hang", "x"))
	a1 := rec.next(t, 2*time.Second)
	// The lease was committed before the attempt started: its end is the
	// due time of the item's queue key now.
	st, err := s.Lookup(context.Background(), "r", "evt_hang")
	if err != nil {
		t.Fatal(err)
	}
	leaseEnd := queueDue(t, s, st.ID)
	a2 := rec.next(t, 2*time.Second)
	if a1.Attempt != 1 || a2.Attempt != 2 {
		t.Fatalf("attempts %d then %d, want 1 then 2", a1.Attempt, a2.Attempt)
	}
	// Attempt 1 never returned, so attempt 2 can only come from its lease
	// ending.
	if a2.At.Before(leaseEnd) {
		t.Fatalf("redelivered at %v, before the lease ended at %v", a2.At, leaseEnd)
	}
	eventually(t, time.Second, "delivered", func() bool {
		st, _ := s.Lookup(context.Background(), "r", "evt_hang")
		return st.State == StateDelivered
	})
	// The hung attempt's late success must change nothing. Close waits for
	// it and commits what it sent.
	release()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, Options{Dir: dir})
	if items, _ := s.Usage(); items != 0 {
		t.Fatalf("%d items stored after the late success", items)
	}
	if st, _ := s.Lookup(context.Background(), "r", "evt_hang"); st.State != StateDelivered {
		t.Fatalf("after the late success: %s, want delivered", st.State)
	}
	if n := len(rec.snapshot()); n != 2 {
		t.Fatalf("%d attempts made, want 2", n)
	}
}

// queueDue returns when item id's queue key is due, the end of its lease
// while it is in flight.
func queueDue(t *testing.T, s *Spool, id uint64) time.Time {
	t.Helper()
	var due int64 = -1
	err := s.db.View(func(txn *badger.Txn) error {
		prefix := []byte{prefixQueue, '/'}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if _, d, kid, ok := parseQueueKey(it.Item().Key()); ok && kid == id {
				due = d
			}
		}
		return nil
	})
	if err != nil || due < 0 {
		t.Fatalf("no queue key for item %d (%v)", id, err)
	}
	return time.UnixMilli(due)
}

func TestPauseHoldsAndResumeReleasesInOrder(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	ctx := context.Background()
	if err := s.Pause(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec, Concurrency: 1})
	for i := range 5 {
		mustEnqueue(t, s, entry("r", fmt.Sprintf("evt_%d", i), "x"))
	}
	rec.none(t, 300*time.Millisecond)
	if rs := routeStats(s, "r"); !rs.Paused || rs.Queued != 5 {
		t.Fatalf("paused route: %s", statsString(rs))
	}
	// The pause survives a restart.
	s.Close()
	s = openTest(t, Options{Dir: dir})
	s.RegisterRoute("r", Route{Deliverer: rec, Concurrency: 1})
	rec.none(t, 200*time.Millisecond)
	if err := s.Resume(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if a := rec.next(t, 2*time.Second); a.EventID != fmt.Sprintf("evt_%d", i) {
			t.Fatalf("delivery %d was %s: order changed", i, a.EventID)
		}
	}
}

func TestMissingRouteKeepsItemsAsDeadLetters(t *testing.T) {
	s := openTest(t, Options{RouteGrace: 500 * time.Millisecond})
	mustEnqueue(t, s, entry("gone", "evt_orphan", "x"))
	var dead []DeadLetter
	eventually(t, 3*time.Second, "the orphan to become a dead letter", func() bool {
		dead, _, _ = s.ListDead(context.Background(), DeadFilter{Reason: ReasonRouteRemoved}, 0, 10)
		return len(dead) == 1
	})
	if dead[0].EventID != "evt_orphan" || dead[0].Attempts != 0 {
		t.Fatalf("dead letter %+v", dead[0])
	}
	// A route that comes back within the grace period gets its items.
	rec := newRecorder(nil)
	mustEnqueue(t, s, entry("late", "evt_late", "x"))
	time.Sleep(50 * time.Millisecond)
	s.RegisterRoute("late", Route{Deliverer: rec})
	if a := rec.next(t, 2*time.Second); a.EventID != "evt_late" {
		t.Fatalf("delivered %s", a.EventID)
	}
}

func TestRouteRegistrationsStack(t *testing.T) {
	s := openTest(t, Options{})
	old, cur, failed := newRecorder(nil), newRecorder(nil), newRecorder(nil)
	unregisterOld := s.RegisterRoute("r", Route{Deliverer: old})
	// A reload that fails after registering leaves the old route in force.
	unregisterFailed := s.RegisterRoute("r", Route{Deliverer: failed})
	unregisterFailed()
	mustEnqueue(t, s, entry("r", "evt_1", "x"))
	old.next(t, 2*time.Second)
	// A reload that succeeds registers first, then the old config cleans up.
	s.RegisterRoute("r", Route{Deliverer: cur})
	unregisterOld()
	mustEnqueue(t, s, entry("r", "evt_2", "x"))
	cur.next(t, 2*time.Second)
	old.none(t, 50*time.Millisecond)
	failed.none(t, 0)
}

func TestBoundsRefuseWithFull(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		limit string
	}{
		{"max items", Options{Limits: Limits{MaxItems: 3}}, "max_items"},
		{"max bytes", Options{Limits: Limits{MaxBytes: 3 * 150}}, "max_bytes"},
		{"free disk floor", Options{MinFreeDisk: 1 << 62}, "min_free_disk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			var s *Spool
			if tt.limit == "min_free_disk" {
				// Open refuses a directory already below the floor; raise it after.
				s = openTest(t, Options{})
				s.SetMinFreeDisk(opts.MinFreeDisk)
			} else {
				s = openTest(t, opts)
			}
			accepted := 0
			var err error
			for i := range 10 {
				if _, err = s.Enqueue(context.Background(), entry("r", fmt.Sprintf("e%d", i), string(make([]byte, 100)))); err != nil {
					break
				}
				accepted++
			}
			var full *FullError
			if !errors.Is(err, ErrFull) || !errors.As(err, &full) || full.Limit != tt.limit {
				t.Fatalf("after %d accepted: %v; want a full error for %s", accepted, err, tt.limit)
			}
			if tt.limit == "min_free_disk" && accepted != 0 {
				t.Fatalf("accepted %d below the floor", accepted)
			}
			if tt.limit != "min_free_disk" && accepted != 3 {
				t.Fatalf("accepted %d, want 3", accepted)
			}
			if accepted > 0 {
				// A duplicate is still answered when full.
				if r, err := s.Enqueue(context.Background(), entry("r", "e0", string(make([]byte, 100)))); err != nil || r.Status != Duplicate {
					t.Fatalf("duplicate when full: %v, %v", r.Status, err)
				}
			}
			// Bounds raised while running take effect at once.
			s.Reconfigure(Limits{})
			s.SetMinFreeDisk(1 << 20)
			if r, err := s.Enqueue(context.Background(), entry("r", "e_after", "x")); err != nil || r.Status != Accepted {
				t.Fatalf("after raising the bound: %v, %v", r.Status, err)
			}
		})
	}
}

func TestStatsCounts(t *testing.T) {
	s := openTest(t, Options{})
	block := make(chan struct{})
	defer close(block)
	rec := newRecorder(func(d *Delivery) Outcome {
		switch d.EventID {
		case "inflight":
			<-block
			return Outcome{StatusCode: 200}
		case "retry":
			return Outcome{StatusCode: 503, RetryAfter: time.Hour}
		case "dead":
			return Outcome{StatusCode: 400}
		}
		return Outcome{StatusCode: 200}
	})
	before := time.Now()
	s.RegisterRoute("r", Route{Deliverer: rec, Policy: Policy{BackoffMin: time.Minute, BackoffMax: time.Hour}})
	for _, id := range []string{"inflight", "retry", "dead"} {
		mustEnqueue(t, s, entry("r", id, "12345"))
	}
	for range 3 {
		rec.next(t, 2*time.Second)
	}
	if err := s.Pause(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	mustEnqueue(t, s, entry("r", "queued", "12345"))
	var rs RouteStats
	eventually(t, 2*time.Second, "stats to settle", func() bool {
		rs = routeStats(s, "r")
		return rs.InFlight == 1 && rs.Scheduled == 1 && rs.Dead == 1 && rs.Queued == 1
	})
	if !rs.Paused {
		t.Fatal("not reported paused")
	}
	if rs.Bytes < 4*5 {
		t.Fatalf("bytes %d, want at least the 4 bodies", rs.Bytes)
	}
	if rs.Oldest.Before(before.Add(-time.Second)) || rs.Oldest.After(time.Now()) || rs.OldestAge(time.Now()) <= 0 {
		t.Fatalf("oldest pending %v, want between %v and now", rs.Oldest, before)
	}
}

// TestReconfigureKeepsMinFreeDisk: the Backend's Reconfigure changes the
// Limits and leaves MinFreeDisk, which only SetMinFreeDisk changes.
func TestReconfigureKeepsMinFreeDisk(t *testing.T) {
	s := openTest(t, Options{})
	s.SetMinFreeDisk(1 << 62)
	s.Reconfigure(Limits{MaxItems: 100})
	var full *FullError
	if _, err := s.Enqueue(context.Background(), entry("r", "evt_1", "x")); !errors.As(err, &full) || full.Limit != "min_free_disk" {
		t.Fatalf("after Reconfigure: %v, want the min_free_disk floor still in force", err)
	}
	s.SetMinFreeDisk(1 << 20)
	mustEnqueue(t, s, entry("r", "evt_1", "x"))
	s.Reconfigure(Limits{MaxItems: 1})
	if _, err := s.Enqueue(context.Background(), entry("r", "evt_2", "x")); !errors.As(err, &full) || full.Limit != "max_items" {
		t.Fatalf("after SetMinFreeDisk: %v, want max_items still in force", err)
	}
}

// TestNameOf: the name known before Open is the opened spool's Name, for a
// directory that Open creates below a symbolic link and for the same
// directory once it exists, given either way.
func TestNameOf(t *testing.T) {
	target := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(link, "a", "spool")
	before, err := NameOf(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := openTest(t, Options{Dir: dir})
	want := "badger:" + filepath.Join(target, "a", "spool")
	if before != want || s.Name() != want {
		t.Fatalf("NameOf before Open %q, Name %q; want %q", before, s.Name(), want)
	}
	for _, d := range []string{dir, filepath.Join(target, "a", "spool")} {
		if after, err := NameOf(d); err != nil || after != want {
			t.Fatalf("NameOf(%s) once it exists: %q, %v; want %q", d, after, err, want)
		}
	}
	if _, err := NameOf(""); err == nil {
		t.Fatal("NameOf of no directory: no error")
	}
}

func TestOpenCloseLifecycle(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open: %v, want ErrInUse", err)
	}
	r := mustEnqueue(t, s, entry("r", "evt_1", "x"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Enqueue(context.Background(), entry("r", "evt_2", "x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Enqueue after Close: %v, want ErrClosed", err)
	}
	s2 := openTest(t, Options{Dir: dir})
	if st, err := s2.Lookup(context.Background(), "r", "evt_1"); err != nil || st.ID != r.ID || st.State != StatePending {
		t.Fatalf("after reopen: %+v, %v", st, err)
	}
	if r2 := mustEnqueue(t, s2, entry("r", "evt_2", "x")); r2.ID <= r.ID {
		t.Fatalf("ids went back after reopen: %d after %d", r2.ID, r.ID)
	}
}

func TestCloseWaitsForDeliveries(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	rec := newRecorder(func(*Delivery) Outcome { time.Sleep(200 * time.Millisecond); return Outcome{StatusCode: 200} })
	s.RegisterRoute("r", Route{Deliverer: rec})
	mustEnqueue(t, s, entry("r", "evt_1", "x"))
	rec.next(t, 2*time.Second)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, Options{Dir: dir})
	if st, _ := s.Lookup(context.Background(), "r", "evt_1"); st.State != StateDelivered {
		t.Fatalf("after a graceful close: %s, want delivered", st.State)
	}
}

func TestCloseReleasesLeases(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir, CloseTimeout: 100 * time.Millisecond, LeaseMargin: time.Hour})
	stuck := newRecorder(func(d *Delivery) Outcome { return Outcome{} })
	stuck.answer = nil
	blocking := DelivererFunc(func(ctx context.Context, d *Delivery) Outcome {
		stuck.Deliver(ctx, d)
		<-ctx.Done()
		return Outcome{Err: ctx.Err()}
	})
	s.RegisterRoute("r", Route{Deliverer: blocking, Timeout: time.Hour})
	mustEnqueue(t, s, entry("r", "evt_1", "x"))
	stuck.next(t, 2*time.Second)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, Options{Dir: dir, LeaseMargin: time.Hour})
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec})
	// Released, so due at once and not charged for the interrupted attempt.
	if a := rec.next(t, 2*time.Second); a.Attempt != 1 {
		t.Fatalf("attempt %d after a released lease, want 1", a.Attempt)
	}
}

// TestStopDeliveringStartsTheCloseTimeout: after StopDelivering no delivery
// starts, writes still work, and Close cancels the delivery in flight once
// the time given to StopDelivering is up, not CloseTimeout after Close.
func TestStopDeliveringStartsTheCloseTimeout(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir, CloseTimeout: time.Hour, LeaseMargin: time.Hour})
	started := make(chan string, 4)
	s.RegisterRoute("r", Route{Timeout: time.Hour, Deliverer: DelivererFunc(func(ctx context.Context, d *Delivery) Outcome {
		started <- d.EventID
		<-ctx.Done()
		return Outcome{Err: ctx.Err()}
	})})
	mustEnqueue(t, s, entry("r", "evt_1", "x"))
	if id := <-started; id != "evt_1" {
		t.Fatalf("started %s", id)
	}
	s.StopDelivering(300 * time.Millisecond)
	mustEnqueue(t, s, entry("r", "evt_2", "x")) // accepted, not delivered
	time.Sleep(400 * time.Millisecond)
	select {
	case id := <-started:
		t.Fatalf("%s was delivered after StopDelivering", id)
	default:
	}
	begin := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(begin); waited > 5*time.Second {
		t.Fatalf("Close waited %v for a delivery whose time was up", waited)
	}
	s = openTest(t, Options{Dir: dir, LeaseMargin: time.Hour})
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec})
	got := rec.byEvent(t, 2, 2*time.Second)
	if got["evt_1"].Attempt != 1 || got["evt_2"].Attempt != 1 {
		t.Fatalf("after restart: %+v, want evt_1 and evt_2 at attempt 1", got)
	}
}

func TestDispatcherRewindsForKeysBehindItsCursor(t *testing.T) {
	s := openTest(t, Options{})
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec})
	mustEnqueue(t, s, entry("r", "evt_1", "x"))
	rec.next(t, 2*time.Second)
	// Pretend the dispatcher's cursor ran ahead of a write that then commits
	// behind it: the committer must tell it to rewind.
	s.rewindMu.Lock()
	s.rewind[1] = queueKey(1, time.Now().Add(time.Hour).UnixMilli(), 0) // ahead of everything
	s.rewindMu.Unlock()
	mustEnqueue(t, s, entry("r", "evt_2", "x"))
	if a := rec.next(t, 2*time.Second); a.EventID != "evt_2" {
		t.Fatalf("delivered %s", a.EventID)
	}
}

func TestDispatcherCursorSkipsHandledKeys(t *testing.T) {
	s := openTest(t, Options{})
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec})
	for i := range 100 {
		mustEnqueue(t, s, entry("r", fmt.Sprintf("evt_%d", i), "x"))
	}
	for range 100 {
		rec.next(t, 5*time.Second)
	}
	eventually(t, 2*time.Second, "drained", func() bool { rs := routeStats(s, "r"); return rs.Queued+rs.InFlight == 0 })
	s.mu.Lock()
	rid := s.cat.ridByName["r"]
	s.mu.Unlock()
	last := queueKey(rid, time.Now().UnixMilli(), ^uint64(0)) // after every deleted key
	// A fresh dispatcher (as after a restart) scans from the start once, then
	// from past the tombstones.
	d := &dispatcher{s: s, cursors: map[uint32][]byte{}, missing: map[uint32]int64{}}
	if _, err := d.pass(); err != nil {
		t.Fatal(err)
	}
	if c := d.cursors[rid]; c == nil || bytes.Compare(c, last) <= 0 {
		t.Fatalf("cursor %x does not skip the handled keys (last %x)", c, last)
	}
}

func TestIdleDispatcherDoesNotPoll(t *testing.T) {
	s := openTest(t, Options{})
	rec := newRecorder(func(*Delivery) Outcome { return Outcome{StatusCode: 503, RetryAfter: time.Hour} })
	s.RegisterRoute("r", Route{Deliverer: rec, Policy: Policy{BackoffMax: 2 * time.Hour}})
	mustEnqueue(t, s, entry("r", "evt_later", "x"))
	rec.next(t, 2*time.Second)
	eventually(t, time.Second, "the retry to be scheduled", func() bool { return routeStats(s, "r").Scheduled == 1 })
	before := s.passes.Load()
	time.Sleep(time.Second)
	if n := s.passes.Load() - before; n > 2 {
		t.Fatalf("%d dispatch passes in an idle second", n)
	}
}

// TestASaturatedRouteIsNotPassedPerDelivery: a backlog drained through a
// full route takes dispatch passes for batches of freed slots, not one or
// two per delivery (each pass opens a Badger iterator).
func TestASaturatedRouteIsNotPassedPerDelivery(t *testing.T) {
	s := openTest(t, Options{})
	ctx := context.Background()
	if err := s.Pause(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	for i := range n {
		mustEnqueue(t, s, entry("r", fmt.Sprint("evt_", i), "x"))
	}
	var delivered atomic.Int64
	s.RegisterRoute("r", Route{Concurrency: 16, Deliverer: DelivererFunc(func(context.Context, *Delivery) Outcome {
		delivered.Add(1)
		return Outcome{StatusCode: 204}
	})})
	before := s.passes.Load()
	if err := s.Resume(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "every item delivered", func() bool { return delivered.Load() == n })
	if p := s.passes.Load() - before; p > n/4 {
		t.Fatalf("%d dispatch passes for %d deliveries", p, n)
	}
}

func TestRememberAndSeen(t *testing.T) {
	s := openTest(t, Options{})
	e := entry("v", "evt_seen", "body")
	if st, err := s.Seen(context.Background(), "v", "evt_seen", e.Body); err != nil || st != Accepted {
		t.Fatalf("Seen before = %v, %v; want accepted (not seen)", st, err)
	}
	if r, err := s.Remember(context.Background(), e); err != nil || r.Status != Accepted {
		t.Fatalf("Remember = %+v, %v", r, err)
	}
	if r, _ := s.Remember(context.Background(), e); r.Status != Duplicate {
		t.Fatalf("second Remember = %v, want duplicate", r.Status)
	}
	tests := []struct {
		body string
		want Status
	}{{"body", Duplicate}, {"other", Conflict}}
	for _, tt := range tests {
		if st, err := s.Seen(context.Background(), "v", "evt_seen", []byte(tt.body)); err != nil || st != tt.want {
			t.Errorf("Seen(%q) = %v, %v; want %v", tt.body, st, err, tt.want)
		}
	}
	if items, _ := s.Usage(); items != 0 {
		t.Fatalf("Remember stored %d items", items)
	}
}

func TestReplayAll(t *testing.T) {
	s := openTest(t, Options{})
	var mu sync.Mutex
	healthy := false
	rec := newRecorder(func(*Delivery) Outcome {
		mu.Lock()
		defer mu.Unlock()
		if healthy {
			return Outcome{StatusCode: 200}
		}
		return Outcome{StatusCode: 404}
	})
	for _, r := range []string{"a", "b", "c"} {
		s.RegisterRoute(r, Route{Deliverer: rec})
		mustEnqueue(t, s, entry(r, "evt_"+r, "x"))
	}
	eventually(t, 5*time.Second, "3 dead letters", func() bool {
		dead, _, _ := s.ListDead(context.Background(), DeadFilter{}, 0, 10)
		return len(dead) == 3
	})
	mu.Lock()
	healthy = true
	mu.Unlock()
	if n, err := s.ReplayMatching(context.Background(), DeadFilter{}); n != 3 || err != nil {
		t.Fatalf("replay all = %d, %v", n, err)
	}
	eventually(t, 2*time.Second, "all delivered", func() bool {
		items, _ := s.Usage()
		return items == 0
	})
}

func TestAttemptHistory(t *testing.T) {
	s := openTest(t, Options{})
	rec := newRecorder(func(d *Delivery) Outcome {
		switch d.Attempt {
		case 1:
			return Outcome{Err: errors.New("connection refused")}
		case 2:
			time.Sleep(20 * time.Millisecond)
			return Outcome{StatusCode: 503}
		}
		return Outcome{StatusCode: 204}
	})
	s.RegisterRoute("r", Route{Deliverer: rec, Policy: fastPolicy(5)})
	before := time.Now()
	mustEnqueue(t, s, entry("r", "evt_hist", "x"))
	var st ItemStatus
	eventually(t, 5*time.Second, "delivery", func() bool {
		st, _ = s.Lookup(context.Background(), "r", "evt_hist")
		return st.State == StateDelivered
	})
	want := []struct {
		status int
		err    string
	}{{0, "connection refused"}, {503, ""}, {204, ""}}
	if len(st.Attempts) != len(want) {
		t.Fatalf("%d attempts recorded: %+v", len(st.Attempts), st.Attempts)
	}
	for i, a := range st.Attempts {
		if a.Number != i+1 || a.StatusCode != want[i].status || a.Error != want[i].err {
			t.Errorf("attempt %d: %+v, want status %d error %q", i+1, a, want[i].status, want[i].err)
		}
		if a.At.Before(before.Add(-time.Second)) || (i > 0 && a.At.Before(st.Attempts[i-1].At)) {
			t.Errorf("attempt %d at %v is out of order", i+1, a.At)
		}
	}
	if st.Attempts[1].Duration < 20*time.Millisecond {
		t.Errorf("attempt 2 took %v, recorded less than the 20ms it slept", st.Attempts[1].Duration)
	}
}

func TestFingerprintDecidesDuplicates(t *testing.T) {
	s := openTest(t, Options{})
	first := entry("sub", "evt_pub", `{"timestamp":"t1"}`)
	first.Fingerprint = []byte(`{"eventType":"a.b","payload":{}}`)
	again := entry("sub", "evt_pub", `{"timestamp":"t2"}`) // stamped anew, same request
	again.Fingerprint = first.Fingerprint
	other := entry("sub", "evt_pub", `{"timestamp":"t3"}`)
	other.Fingerprint = []byte(`{"eventType":"a.b","payload":{"x":1}}`)
	if r := mustEnqueue(t, s, first); r.Status != Accepted {
		t.Fatalf("first: %v", r.Status)
	}
	if r := mustEnqueue(t, s, again); r.Status != Duplicate {
		t.Fatalf("same fingerprint, other body: %v, want duplicate", r.Status)
	}
	if r := mustEnqueue(t, s, other); r.Status != Conflict {
		t.Fatalf("other fingerprint: %v, want conflict", r.Status)
	}
}

func TestGoneDisablesRouteUntilEnabled(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	var mu sync.Mutex
	gone := true
	answer := func(*Delivery) Outcome {
		mu.Lock()
		defer mu.Unlock()
		if gone {
			return Outcome{StatusCode: 410, DeadReason: "gone", DisableRoute: true}
		}
		return Outcome{StatusCode: 200}
	}
	rec := newRecorder(answer)
	s.RegisterRoute("sub", Route{Deliverer: rec})
	mustEnqueue(t, s, entry("sub", "evt_1", "x"))
	rec.next(t, 2*time.Second)
	eventually(t, 2*time.Second, "the route to be disabled", func() bool { return routeStats(s, "sub").Disabled == "gone" })
	mustEnqueue(t, s, entry("sub", "evt_2", "x"))
	mustEnqueue(t, s, entry("sub", "evt_3", "x"))
	eventually(t, 2*time.Second, "3 dead letters", func() bool { return routeStats(s, "sub").Dead == 3 })
	rec.none(t, 100*time.Millisecond) // the later items were not attempted
	dead, _, _ := s.ListDead(context.Background(), DeadFilter{Route: "sub", Reason: "gone"}, 0, 10)
	if len(dead) != 3 {
		t.Fatalf("%d dead letters with reason gone", len(dead))
	}

	// Disabled survives a restart.
	s.Close()
	s = openTest(t, Options{Dir: dir})
	rec = newRecorder(answer)
	s.RegisterRoute("sub", Route{Deliverer: rec})
	if rs := routeStats(s, "sub"); rs.Disabled != "gone" {
		t.Fatalf("after restart: %s disabled=%q", statsString(rs), rs.Disabled)
	}
	mu.Lock()
	gone = false
	mu.Unlock()
	ctx := context.Background()
	if err := s.Enable(ctx, "sub"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ReplayMatching(ctx, DeadFilter{Route: "sub", Reason: "gone"}); n != 3 || err != nil {
		t.Fatalf("replay: %d, %v", n, err)
	}
	for range 3 {
		rec.next(t, 2*time.Second)
	}
	eventually(t, 2*time.Second, "all delivered", func() bool { items, _ := s.Usage(); return items == 0 })
	if rs := routeStats(s, "sub"); rs.Disabled != "" {
		t.Fatalf("still disabled: %q", rs.Disabled)
	}
}

func TestAttemptLogLines(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	s := openTest(t, Options{Logger: zap.New(core)})
	rec := newRecorder(func(d *Delivery) Outcome {
		if d.Attempt == 1 {
			return Outcome{StatusCode: 502}
		}
		return Outcome{StatusCode: 200}
	})
	s.RegisterRoute("sub", Route{Deliverer: rec, Policy: fastPolicy(3), Target: "https://hooks.example", LogAttempts: true})
	mustEnqueue(t, s, entry("sub", "evt_log", "x"))
	eventually(t, 2*time.Second, "two attempt lines", func() bool {
		return logs.FilterField(zap.String("event_id", "evt_log")).Len() == 2
	})
	lines := logs.FilterField(zap.String("event_id", "evt_log")).All()
	for i, l := range lines {
		m := l.ContextMap()
		if m["attempt"] != int64(i+1) || m["target"] != "https://hooks.example" || m["duration"] == nil {
			t.Errorf("line %d: %s %v", i+1, l.Message, m)
		}
	}
	if lines[0].ContextMap()["status"] != int64(502) || lines[1].Message != "delivered" {
		t.Errorf("lines: %q %v / %q", lines[0].Message, lines[0].ContextMap(), lines[1].Message)
	}
}

func TestEnqueueAllStandsOrFallsTogether(t *testing.T) {
	s := openTest(t, Options{})
	mustEnqueue(t, s, entry("b", "evt_1", "old"))
	scope := Entry{Route: "scope", EventID: "evt_1", Body: []byte("request"), DedupeOnly: true}
	res, err := s.EnqueueAll(context.Background(), []Entry{scope, entry("a", "evt_1", "x"), entry("b", "evt_1", "new")})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != Aborted || res[1].Status != Aborted || res[2].Status != Conflict {
		t.Fatalf("results %v %v %v, want aborted aborted conflict", res[0].Status, res[1].Status, res[2].Status)
	}
	if _, err := s.Lookup(context.Background(), "a", "evt_1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an aborted entry was stored: %v", err)
	}
	if st, _ := s.Seen(context.Background(), "scope", "evt_1", []byte("request")); st != Accepted {
		t.Fatalf("an aborted dedupe-only entry was recorded: %v", st)
	}
	// Without the conflict, the dedupe-only entry is recorded and stores no item.
	res, err = s.EnqueueAll(context.Background(), []Entry{scope, entry("a", "evt_1", "x")})
	if err != nil || res[0].Status != Accepted || res[1].Status != Accepted {
		t.Fatalf("%v %v, %v", res[0].Status, res[1].Status, err)
	}
	if st, _ := s.Seen(context.Background(), "scope", "evt_1", []byte("request")); st != Duplicate {
		t.Fatalf("the dedupe-only entry was not recorded: %v", st)
	}
	if items, _ := s.Usage(); items != 2 {
		t.Fatalf("%d items stored, want 2 (b and a)", items)
	}
}

// TestReplayRestartsMaxAge: a dead letter replayed after MaxAge has passed
// since it was received gets a fresh age budget: it is attempted, and a
// failed attempt is retried, instead of dying again at once.
func TestReplayRestartsMaxAge(t *testing.T) {
	s := openTest(t, Options{})
	pol := Policy{MaxAttempts: 100, MaxAge: time.Second, BackoffMin: 50 * time.Millisecond, BackoffMax: 50 * time.Millisecond}
	s.RegisterRoute("r", Route{Policy: pol, Deliverer: newRecorder(func(*Delivery) Outcome { return Outcome{StatusCode: 503} })})
	res := mustEnqueue(t, s, entry("r", "evt_1", "x"))
	eventually(t, 5*time.Second, "a max_age dead letter", func() bool {
		d, _, _ := s.ListDead(context.Background(), DeadFilter{Route: "r", Reason: ReasonMaxAge}, 0, 1)
		return len(d) == 1
	})
	time.Sleep(1100 * time.Millisecond) // replayed well after MaxAge
	healthy := newRecorder(func(d *Delivery) Outcome {
		if d.Attempt == 1 {
			return Outcome{StatusCode: 503}
		}
		return Outcome{StatusCode: 200}
	})
	s.RegisterRoute("r", Route{Policy: pol, Deliverer: healthy})
	if n, err := s.Replay(context.Background(), res.ID); n != 1 || err != nil {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	// The upstream fails once more: that is retried within the fresh budget.
	if a := healthy.next(t, 2*time.Second); a.EventID != "evt_1" || a.Attempt != 1 {
		t.Fatalf("after replay: %s attempt %d", a.EventID, a.Attempt)
	}
	if a := healthy.next(t, 2*time.Second); a.EventID != "evt_1" || a.Attempt != 2 {
		t.Fatalf("after replay: %s attempt %d, want the retry", a.EventID, a.Attempt)
	}
	eventually(t, 2*time.Second, "delivered", func() bool { st, _ := s.Lookup(context.Background(), "r", "evt_1"); return st.State == StateDelivered })
}

// TestReplayAndDeleteManyIDs: more ids than one transaction can hold are
// replayed (or deleted) in chunks, and the count is exact.
func TestReplayAndDeleteManyIDs(t *testing.T) {
	s := openTest(t, Options{MemTableSize: 1 << 20}) // a transaction holds ~2,000 entries
	s.RegisterRoute("r", Route{Policy: fastPolicy(1), Concurrency: 64, Deliverer: newRecorder(func(*Delivery) Outcome { return Outcome{StatusCode: 400} })})
	const n = 6000
	ids := enqueueN(t, s, "r", n)
	eventually(t, 60*time.Second, "all dead", func() bool { return routeStats(s, "r").Dead == n })
	if err := s.Pause(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Replay(context.Background(), ids[:n/2]...); got != n/2 || err != nil {
		t.Fatalf("Replay(%d ids) = %d, %v", n/2, got, err)
	}
	if got, err := s.DeleteDead(context.Background(), ids...); got != n/2 || err != nil {
		t.Fatalf("DeleteDead(%d ids) = %d, %v; want the %d still dead", n, got, err, n/2)
	}
	if rs := routeStats(s, "r"); rs.Queued != n/2 || rs.Dead != 0 {
		t.Fatalf("%s, want %d queued and none dead", statsString(rs), n/2)
	}
}

// TestDisabledRouteDrainsAtOnce: a disabled route's backlog becomes dead
// letters without waiting for the dispatcher's idle wake-ups between passes.
func TestDisabledRouteDrainsAtOnce(t *testing.T) {
	deadN(t, openTest(t, Options{}), "r", 2000)
}
