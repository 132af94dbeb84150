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

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

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

// TestADeliveryThatOutlivesItsTimeoutKeepsItsItem: a lease lasts as long as
// its attempt, even one whose Deliverer ignores the timeout: the item is not
// delivered twice meanwhile, and the late outcome is the one recorded.
func TestADeliveryThatOutlivesItsTimeoutKeepsItsItem(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	hung := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hung) }) }
	t.Cleanup(release) // before Close, which waits for the hung worker
	rec := newRecorder(func(d *Delivery) Outcome {
		<-hung // a worker that ignores its context
		return Outcome{StatusCode: 200}
	})
	s.RegisterRoute("r", Route{Deliverer: rec, Timeout: 50 * time.Millisecond})
	mustEnqueue(t, s, entry("r", "evt_hang", "x"))
	if a := rec.next(t, 2*time.Second); a.Attempt != 1 {
		t.Fatalf("attempt %d, want 1", a.Attempt)
	}
	for range 3 { // passes that would lease it again
		p := s.passes.Load()
		eventually(t, 5*time.Second, "a dispatch pass", func() bool { s.nudge(); return s.passes.Load() > p })
	}
	rec.none(t, 200*time.Millisecond)
	if rs := routeStats(s, "r"); rs.InFlight != 1 || rs.Queued != 0 {
		t.Fatalf("stats %+v, want 1 in flight and none queued", rs)
	}
	release()
	eventually(t, 5*time.Second, "delivered", func() bool {
		st, _ := s.Lookup(context.Background(), "r", "evt_hang")
		return st.State == StateDelivered
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, Options{Dir: dir})
	if items, _ := s.Usage(); items != 0 {
		t.Fatalf("%d items stored after the late success", items)
	}
	if n := len(rec.snapshot()); n != 1 {
		t.Fatalf("%d attempts made, want 1", n)
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

// TestFreeDiskFloorRefusesWithFull: below min_free_disk (Badger's own
// bound; the contract suite checks the others) a new item is refused with
// a full error and nothing is written, a duplicate is still answered, and
// a floor lowered while running takes effect at once.
func TestFreeDiskFloorRefusesWithFull(t *testing.T) {
	s := openTest(t, Options{})
	ctx := context.Background()
	mustEnqueue(t, s, entry("r", "e0", "x"))
	s.SetMinFreeDisk(1 << 62) // Open refuses a directory already below the floor: raise it after
	var full *FullError
	if _, err := s.Enqueue(ctx, entry("r", "e1", "x")); !errors.As(err, &full) || full.Limit != "min_free_disk" {
		t.Fatalf("below the floor: %v; want a full error for min_free_disk", err)
	}
	if items, _ := s.Usage(); items != 1 {
		t.Fatalf("%d items after a refusal, want 1", items)
	}
	if r, err := s.Enqueue(ctx, entry("r", "e0", "x")); err != nil || r.Status != Duplicate {
		t.Fatalf("a duplicate below the floor: %v, %v", r.Status, err)
	}
	s.SetMinFreeDisk(1 << 20)
	if r, err := s.Enqueue(ctx, entry("r", "e1", "x")); err != nil || r.Status != Accepted {
		t.Fatalf("after lowering the floor: %v, %v", r.Status, err)
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
	s := openTest(t, Options{Dir: dir, CloseTimeout: 100 * time.Millisecond})
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
	s = openTest(t, Options{Dir: dir})
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
	s := openTest(t, Options{Dir: dir, CloseTimeout: time.Hour})
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
	s = openTest(t, Options{Dir: dir})
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
