// Package spooltest is the contract test suite of spool.Backend: the
// behaviour that caddymodule relies on, checked through the exported API
// only, so that every backend runs the same cases. A backend's tests call
// Run with a Factory that opens its stores:
//
//	func TestContract(t *testing.T) {
//		spooltest.Run(t, func(t *testing.T, l spool.Limits) (spool.Backend, func() spool.Backend) { … })
//	}
//
// Deliveries go to Deliverers of the suite's own (no HTTP): what is under
// test is the store. The cases synchronise on the deliverers' calls and on
// what the store reports, waiting for a condition within a bound, never for
// a guessed time.
package spooltest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
	"github.com/hookgate/hookgate/spool"
)

// Factory opens a new, empty store with limits l for test t, and returns it
// with reopen, which opens the same store again once the suite has closed
// it (its contents kept). The factory closes what it opened when t ends
// (Close may then be called a second time); a store that cannot be opened
// fails t.
type Factory func(t *testing.T, l spool.Limits) (store spool.Backend, reopen func() spool.Backend)

// wait bounds every wait of the suite: generous, as the machine may be
// busy; a case that passes never waits it out.
const wait = 15 * time.Second

// Run runs the suite against the stores that open makes, each case in
// parallel with the others on a store of its own.
func Run(t *testing.T, open Factory) {
	for _, c := range []struct {
		name string
		run  func(t *testing.T, open Factory)
	}{
		{"EnqueueDedupe", testEnqueueDedupe},
		{"ConcurrentEnqueueOfOneEvent", testConcurrentEnqueueOfOneEvent},
		{"EnqueueAllStandsOrFallsTogether", testEnqueueAllStandsOrFallsTogether},
		{"RememberSeenCanRemember", testRememberSeenCanRemember},
		{"DeliveredOnce", testDeliveredOnce},
		{"RegistrationsStack", testRegistrationsStack},
		{"RetryThenSuccess", testRetryThenSuccess},
		{"DeadLetterReasons", testDeadLetterReasons},
		{"GoneDisablesRouteUntilEnabled", testGoneDisablesRouteUntilEnabled},
		{"PauseHoldsAndResumeReleases", testPauseHoldsAndResumeReleases},
		{"DeadLettersListReplayDelete", testDeadLettersListReplayDelete},
		{"LookupStates", testLookupStates},
		{"StatsUsageRecords", testStatsUsageRecords},
		{"BoundsRefuseWithFull", testBoundsRefuseWithFull},
		{"ConcurrencyCap", testConcurrencyCap},
		{"CloseAndReopen", testCloseAndReopen},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, open)
		})
	}
}

// entry is a small entry with the header a deliverer gets back.
func entry(route, id, body string) spool.Entry {
	return spool.Entry{Route: route, EventID: id, Body: []byte(body), Header: http.Header{"X-Webhook-Event": {"test.event"}}}
}

func mustEnqueue(t *testing.T, s spool.Backend, e spool.Entry) spool.Result {
	t.Helper()
	r, err := s.Enqueue(context.Background(), e)
	if err != nil {
		t.Fatalf("Enqueue(%s/%s): %v", e.Route, e.EventID, err)
	}
	return r
}

// fastPolicy retries within milliseconds.
func fastPolicy(attempts int) spool.Policy {
	return spool.Policy{MaxAttempts: attempts, BackoffMin: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond}
}

// attempt is one call of a recorder.
type attempt struct {
	EventID string
	Attempt int
	Body    string
	Header  http.Header
}

// recorder is a Deliverer that reports every attempt on a channel and
// answers from a script (nil: 200).
type recorder struct {
	answer func(d *spool.Delivery) spool.Outcome
	calls  chan attempt
}

func newRecorder(answer func(d *spool.Delivery) spool.Outcome) *recorder {
	return &recorder{answer: answer, calls: make(chan attempt, 10000)}
}

func (r *recorder) Deliver(_ context.Context, d *spool.Delivery) spool.Outcome {
	r.calls <- attempt{EventID: d.EventID, Attempt: d.Attempt, Body: string(d.Body), Header: d.Header}
	if r.answer == nil {
		return spool.Outcome{StatusCode: 200}
	}
	return r.answer(d)
}

// next waits for the next attempt.
func (r *recorder) next(t *testing.T) attempt {
	t.Helper()
	return testwait.Recv(t, r.calls, wait, "no delivery attempt")
}

// noMore fails if an attempt was made that next did not take.
func (r *recorder) noMore(t *testing.T) {
	t.Helper()
	select {
	case a := <-r.calls:
		t.Fatalf("unexpected attempt %+v", a)
	default:
	}
}

// switchable answers by a setting that the case changes.
type switchable struct{ answer atomic.Pointer[spool.Outcome] }

func (s *switchable) set(o spool.Outcome) { s.answer.Store(&o) }
func (s *switchable) get(*spool.Delivery) spool.Outcome {
	return *s.answer.Load()
}

func routeStats(s spool.Backend, route string) spool.RouteStats {
	for _, rs := range s.Stats() {
		if rs.Route == route {
			return rs
		}
	}
	return spool.RouteStats{}
}

// waitStats waits until the route's stats satisfy ok.
func waitStats(t *testing.T, s spool.Backend, route string, ok func(rs spool.RouteStats) bool) spool.RouteStats {
	t.Helper()
	var rs spool.RouteStats
	testwait.Until(t, wait, func() (bool, string) {
		rs = routeStats(s, route)
		return ok(rs), fmt.Sprintf("route %s: %+v", route, rs)
	})
	return rs
}

// waitState waits until Lookup reports the event in state.
func waitState(t *testing.T, s spool.Backend, route, id string, state spool.ItemState) spool.ItemStatus {
	t.Helper()
	var st spool.ItemStatus
	testwait.Until(t, wait, func() (bool, string) {
		var err error
		st, err = s.Lookup(context.Background(), route, id)
		return err == nil && st.State == state, fmt.Sprintf("%s on %s: %+v, %v; want %s", id, route, st, err, state)
	})
	return st
}

// drained reports a route with nothing pending and no bytes but its dead
// letters'.
func drained(rs spool.RouteStats) bool { return rs.Queued+rs.InFlight+rs.Scheduled == 0 }

// testEnqueueDedupe: an event id is accepted once per route; the same id
// again is a duplicate with the same body and a conflict with another,
// answered with the stored item's id; on another route it is another event.
func testEnqueueDedupe(t *testing.T, open Factory) {
	s, _ := open(t, spool.Limits{})
	first := mustEnqueue(t, s, entry("a", "evt_1", `{"x":1}`))
	if first.Status != spool.Accepted || first.ID == 0 {
		t.Fatalf("first enqueue %+v, want accepted with an id", first)
	}
	for _, tt := range []struct {
		name string
		e    spool.Entry
		want spool.Status
		same bool // the id is the first item's
	}{
		{"same route, id and body", entry("a", "evt_1", `{"x":1}`), spool.Duplicate, true},
		{"same route and id, other body", entry("a", "evt_1", `{"x":2}`), spool.Conflict, true},
		{"other route, same id", entry("b", "evt_1", `{"x":1}`), spool.Accepted, false},
		{"same route, other id", entry("a", "evt_2", `{"x":1}`), spool.Accepted, false},
	} {
		r := mustEnqueue(t, s, tt.e)
		if r.Status != tt.want || (r.ID == first.ID) != tt.same {
			t.Errorf("%s: %+v, want %v (the first item's id %d: %v)", tt.name, r, tt.want, first.ID, tt.same)
		}
	}
	// A fingerprint, not the body, tells a duplicate from a conflict.
	fp := entry("p", "evt_fp", `{"timestamp":"1"}`)
	fp.Fingerprint = []byte("request")
	mustEnqueue(t, s, fp)
	fp.Body = []byte(`{"timestamp":"2"}`)
	if r := mustEnqueue(t, s, fp); r.Status != spool.Duplicate {
		t.Errorf("same fingerprint, other body: %v, want duplicate", r.Status)
	}
	fp.Fingerprint = []byte("another request")
	if r := mustEnqueue(t, s, fp); r.Status != spool.Conflict {
		t.Errorf("other fingerprint: %v, want conflict", r.Status)
	}
	testwait.Until(t, wait, func() (bool, string) {
		items, _ := s.Usage()
		return items == 4, fmt.Sprintf("%d items stored, want 4", items)
	})
}

// testConcurrentEnqueueOfOneEvent: of one event sent many times at once,
// one copy is accepted and the others are its duplicates.
func testConcurrentEnqueueOfOneEvent(t *testing.T, open Factory) {
	s, _ := open(t, spool.Limits{})
	const n = 50
	var wg sync.WaitGroup
	results, errs := make([]spool.Result, n), make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = s.Enqueue(context.Background(), entry("r", "evt_race", "same body"))
		})
	}
	close(start)
	wg.Wait()
	accepted := 0
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("enqueue %d: %v", i, errs[i])
		}
		if r.Status == spool.Accepted {
			accepted++
		} else if r.Status != spool.Duplicate {
			t.Fatalf("enqueue %d: %v", i, r.Status)
		}
		if r.ID != results[0].ID {
			t.Fatalf("enqueue %d names item %d, enqueue 0 item %d", i, r.ID, results[0].ID)
		}
	}
	if accepted != 1 {
		t.Fatalf("%d accepted, want 1", accepted)
	}
	waitStats(t, s, "r", func(rs spool.RouteStats) bool { return rs.Queued == 1 })
}

// testEnqueueAllStandsOrFallsTogether: the entries of one EnqueueAll, as the
// publisher makes them (a dedupe-only entry for its scope, then one per
// subscriber), are all stored or, when one conflicts, none is.
func testEnqueueAllStandsOrFallsTogether(t *testing.T, open Factory) {
	s, _ := open(t, spool.Limits{})
	ctx := context.Background()
	mustEnqueue(t, s, entry("b", "evt_1", "old"))
	scope := spool.Entry{Route: "scope", EventID: "evt_1", Fingerprint: []byte("request"), DedupeOnly: true}
	res, err := s.EnqueueAll(ctx, []spool.Entry{scope, entry("a", "evt_1", "x"), entry("b", "evt_1", "new")})
	if err != nil {
		t.Fatal(err)
	}
	if got := []spool.Status{res[0].Status, res[1].Status, res[2].Status}; !slices.Equal(got, []spool.Status{spool.Aborted, spool.Aborted, spool.Conflict}) {
		t.Fatalf("results %v, want aborted aborted conflict", got)
	}
	if _, err := s.Lookup(ctx, "a", "evt_1"); !errors.Is(err, spool.ErrNotFound) {
		t.Fatalf("an aborted entry was stored: %v", err)
	}
	if st, err := s.Seen(ctx, "scope", "evt_1", []byte("request")); err != nil || st != spool.Accepted {
		t.Fatalf("an aborted dedupe-only entry was recorded: %v, %v", st, err)
	}
	// Without the conflict, all are recorded; the dedupe-only one stores no item.
	res, err = s.EnqueueAll(ctx, []spool.Entry{scope, entry("a", "evt_1", "x"), entry("c", "evt_1", "x")})
	if err != nil || res[0].Status != spool.Accepted || res[1].Status != spool.Accepted || res[2].Status != spool.Accepted {
		t.Fatalf("%+v, %v; want all accepted", res, err)
	}
	if st, err := s.Seen(ctx, "scope", "evt_1", []byte("request")); err != nil || st != spool.Duplicate {
		t.Fatalf("the dedupe-only entry was not recorded: %v, %v", st, err)
	}
	if res, err := s.EnqueueAll(ctx, []spool.Entry{scope, entry("a", "evt_1", "x")}); err != nil || res[0].Status != spool.Duplicate || res[1].Status != spool.Duplicate {
		t.Fatalf("the publisher's retry: %+v, %v; want duplicates", res, err)
	}
	// A duplicate aborts nothing; an entry given twice is a duplicate of its first.
	res, err = s.EnqueueAll(ctx, []spool.Entry{entry("d", "evt_1", "x"), entry("b", "evt_1", "old"), entry("d", "evt_1", "x")})
	if err != nil || res[0].Status != spool.Accepted || res[1].Status != spool.Duplicate || res[2].Status != spool.Duplicate || res[2].ID != res[0].ID {
		t.Fatalf("%+v, %v; want accepted, duplicate, and a duplicate of the first", res, err)
	}
	testwait.Until(t, wait, func() (bool, string) {
		items, _ := s.Usage()
		return items == 4, fmt.Sprintf("%d items stored, want 4 (b, a, c and d)", items)
	})
}

// testRememberSeenCanRemember: Remember records an id without an item;
// Seen reads without writing; both refuse a new id once the records'
// budget is used up, and CanRemember says so beforehand.
func testRememberSeenCanRemember(t *testing.T, open Factory) {
	s, _ := open(t, spool.Limits{})
	ctx := context.Background()
	e := entry("v", "evt_seen", "body")
	if st, err := s.Seen(ctx, "v", "evt_seen", e.Body); err != nil || st != spool.Accepted {
		t.Fatalf("Seen before: %v, %v; want accepted (not seen)", st, err)
	}
	if err := s.CanRemember(); err != nil {
		t.Fatalf("CanRemember with room: %v", err)
	}
	if r, err := s.Remember(ctx, e); err != nil || r.Status != spool.Accepted {
		t.Fatalf("Remember: %+v, %v", r, err)
	}
	if r, err := s.Remember(ctx, e); err != nil || r.Status != spool.Duplicate {
		t.Fatalf("second Remember: %+v, %v; want duplicate", r, err)
	}
	for _, tt := range []struct {
		body string
		want spool.Status
	}{{"body", spool.Duplicate}, {"other", spool.Conflict}} {
		if st, err := s.Seen(ctx, "v", "evt_seen", []byte(tt.body)); err != nil || st != tt.want {
			t.Errorf("Seen(%q): %v, %v; want %v", tt.body, st, err, tt.want)
		}
	}
	if st, err := s.Seen(ctx, "other", "evt_seen", e.Body); err != nil || st != spool.Accepted {
		t.Errorf("Seen on another route: %v, %v; want accepted", st, err)
	}
	if items, _ := s.Usage(); items != 0 {
		t.Fatalf("Remember stored %d items", items)
	}

	// No room for one more record.
	full, _ := open(t, spool.Limits{MaxRecordBytes: 1})
	testwait.Until(t, wait, func() (bool, string) {
		err := full.CanRemember()
		return errors.Is(err, spool.ErrFull), fmt.Sprintf("CanRemember with a budget of 1 byte: %v", err)
	})
	for _, try := range []func() error{
		func() error { _, err := full.Remember(ctx, e); return err },
		func() error { _, err := full.Enqueue(ctx, e); return err },
	} {
		var fe *spool.FullError
		if err := try(); !errors.As(err, &fe) || fe.Limit != "max_record_bytes" {
			t.Fatalf("a new id without room: %v, want a full error for max_record_bytes", err)
		}
	}
	if st, err := full.Seen(ctx, "v", "evt_seen", e.Body); err != nil || st != spool.Accepted {
		t.Fatalf("a refused id was recorded: %v, %v", st, err)
	}
}

// testDeliveredOnce: every accepted event is delivered with its body and
// headers, once: one attempt, recorded, and the event delivered; the same
// id on two routes is two events, each delivered.
func testDeliveredOnce(t *testing.T, open Factory) {
	s, _ := open(t, spool.Limits{})
	rec := newRecorder(nil)
	s.RegisterRoute("a", spool.Route{Deliverer: rec})
	s.RegisterRoute("b", spool.Route{Deliverer: rec})
	const n = 20
	want := map[string]string{}
	for i := range n {
		e := entry("a", fmt.Sprintf("evt_%d", i), fmt.Sprintf(`{"n":%d}`, i))
		mustEnqueue(t, s, e)
		want["a/"+e.EventID] = string(e.Body)
	}
	onB, onA := mustEnqueue(t, s, entry("b", "evt_0", "on b")), mustEnqueue(t, s, entry("a", "evt_0", `{"n":0}`))
	if onB.Status != spool.Accepted || onA.Status != spool.Duplicate || onB.ID == onA.ID {
		t.Fatalf("evt_0 on b %+v, again on a %+v; want two items", onB, onA)
	}
	want["b/evt_0"] = "on b"
	got := map[string]string{}
	for range n + 1 {
		at := rec.next(t)
		route := "a"
		if at.Body == "on b" {
			route = "b"
		}
		key := route + "/" + at.EventID
		if _, twice := got[key]; twice || at.Attempt != 1 || at.Header.Get("X-Webhook-Event") != "test.event" {
			t.Fatalf("attempt %+v (delivered before: %v)", at, twice)
		}
		got[key] = at.Body
	}
	for key, body := range want {
		if got[key] != body {
			t.Errorf("%s delivered with %q, want %q", key, got[key], body)
		}
	}
	for route, ids := range map[string][]string{"a": {"evt_0", "evt_7", "evt_19"}, "b": {"evt_0"}} {
		for _, id := range ids {
			st := waitState(t, s, route, id, spool.StateDelivered)
			if len(st.Attempts) != 1 || st.Attempts[0].Number != 1 || st.Attempts[0].StatusCode != 200 {
				t.Errorf("%s on %s: attempts %+v, want one of 200", id, route, st.Attempts)
			}
		}
	}
	waitStats(t, s, "a", drained)
	testwait.Until(t, wait, func() (bool, string) {
		items, bytes := s.Usage()
		return items == 0 && bytes == 0, fmt.Sprintf("usage %d items, %d bytes after delivery", items, bytes)
	})
	rec.noMore(t)
}

// testRegistrationsStack: registrations of a route name stack, as reloads
// make them: the latest is in force, and unregistering one leaves the one
// below it in force (a failed reload's, then the old configuration's).
func testRegistrationsStack(t *testing.T, open Factory) {
	s, _ := open(t, spool.Limits{})
	old, cur, failed := newRecorder(nil), newRecorder(nil), newRecorder(nil)
	unregisterOld := s.RegisterRoute("r", spool.Route{Deliverer: old})
	unregisterFailed := s.RegisterRoute("r", spool.Route{Deliverer: failed})
	unregisterFailed()
	mustEnqueue(t, s, entry("r", "evt_1", "x"))
	if a := old.next(t); a.EventID != "evt_1" {
		t.Fatalf("the old registration delivered %+v", a)
	}
	s.RegisterRoute("r", spool.Route{Deliverer: cur})
	unregisterOld()
	mustEnqueue(t, s, entry("r", "evt_2", "x"))
	if a := cur.next(t); a.EventID != "evt_2" {
		t.Fatalf("the new registration delivered %+v", a)
	}
	waitState(t, s, "r", "evt_2", spool.StateDelivered)
	old.noMore(t)
	failed.noMore(t)
}

// testRetryThenSuccess: failed attempts are retried by the route's policy,
// numbered on, until one succeeds; each is recorded.
func testRetryThenSuccess(t *testing.T, open Factory) {
	s, _ := open(t, spool.Limits{})
	rec := newRecorder(func(d *spool.Delivery) spool.Outcome {
		switch d.Attempt {
		case 1:
			return spool.Outcome{Err: errors.New("connection refused")}
		case 2:
			return spool.Outcome{StatusCode: 503, RetryAfter: time.Millisecond}
		}
		return spool.Outcome{StatusCode: 204}
	})
	s.RegisterRoute("r", spool.Route{Deliverer: rec, Policy: fastPolicy(5)})
	mustEnqueue(t, s, entry("r", "evt_retry", "x"))
	for i := 1; i <= 3; i++ {
		if a := rec.next(t); a.Attempt != i || a.EventID != "evt_retry" {
			t.Fatalf("attempt %+v, want number %d", a, i)
		}
	}
	st := waitState(t, s, "r", "evt_retry", spool.StateDelivered)
	want := []struct {
		status int
		err    string
	}{{0, "connection refused"}, {503, ""}, {204, ""}}
	if len(st.Attempts) != len(want) {
		t.Fatalf("attempts recorded: %+v", st.Attempts)
	}
	for i, a := range st.Attempts {
		if a.Number != i+1 || a.StatusCode != want[i].status || a.Error != want[i].err || (i > 0 && a.At.Before(st.Attempts[i-1].At)) {
			t.Errorf("attempt %d: %+v, want status %d error %q", i+1, a, want[i].status, want[i].err)
		}
	}
	rec.noMore(t)
}

// testDeadLetterReasons: what the policy gives up on is a dead letter with
// its reason, last status or error and attempts, keeping its bytes.
func testDeadLetterReasons(t *testing.T, open Factory) {
	never := func(spool.Outcome) bool { return false }
	for _, tt := range []struct {
		name     string
		policy   spool.Policy
		answer   spool.Outcome
		reason   string
		attempts int // 0: not checked
	}{
		{"max attempts", fastPolicy(3), spool.Outcome{StatusCode: 500}, spool.ReasonMaxAttempts, 3},
		{"connection errors count too", fastPolicy(2), spool.Outcome{Err: errors.New("connection refused")}, spool.ReasonMaxAttempts, 2},
		{"not retryable", fastPolicy(5), spool.Outcome{StatusCode: 400}, spool.ReasonRejected, 1},
		{"the policy retries nothing", spool.Policy{MaxAttempts: 5, Retryable: never}, spool.Outcome{StatusCode: 503}, spool.ReasonRejected, 1},
		{"the deliverer's reason", fastPolicy(5), spool.Outcome{StatusCode: 410, DeadReason: "gone"}, "gone", 1},
		{"max age", spool.Policy{MaxAttempts: 1000, MaxAge: 200 * time.Millisecond, BackoffMin: 50 * time.Millisecond, BackoffMax: 50 * time.Millisecond},
			spool.Outcome{StatusCode: 500}, spool.ReasonMaxAge, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := open(t, spool.Limits{})
			rec := newRecorder(func(*spool.Delivery) spool.Outcome { return tt.answer })
			s.RegisterRoute("r", spool.Route{Deliverer: rec, Policy: tt.policy})
			mustEnqueue(t, s, entry("r", "evt_dead", "poison"))
			rs := waitStats(t, s, "r", func(rs spool.RouteStats) bool { return rs.Dead == 1 })
			if !drained(rs) || rs.Bytes == 0 {
				t.Fatalf("stats %+v; want one dead letter keeping its bytes", rs)
			}
			dead, _, err := s.ListDead(context.Background(), spool.DeadFilter{}, 0, 10)
			if err != nil || len(dead) != 1 {
				t.Fatalf("dead letters %+v, %v", dead, err)
			}
			d := dead[0]
			if d.Reason != tt.reason || d.EventID != "evt_dead" || d.Route != "r" || d.LastStatus != tt.answer.StatusCode {
				t.Fatalf("dead letter %+v, want reason %q, last status %d", d, tt.reason, tt.answer.StatusCode)
			}
			if tt.answer.Err != nil && d.LastError != tt.answer.Err.Error() {
				t.Fatalf("last error %q, want %q", d.LastError, tt.answer.Err)
			}
			if tt.attempts != 0 && d.Attempts != tt.attempts {
				t.Fatalf("attempts %d, want %d", d.Attempts, tt.attempts)
			}
			if got := len(rec.calls); got != d.Attempts {
				t.Fatalf("the deliverer saw %d attempts, the dead letter says %d", got, d.Attempts)
			}
			st, err := s.Lookup(context.Background(), "r", "evt_dead")
			if err != nil || st.State != spool.StateDead || st.Dead == nil || st.Dead.Reason != tt.reason || len(st.Attempts) != d.Attempts {
				t.Fatalf("Lookup %+v, %v", st, err)
			}
		})
	}
}

// testGoneDisablesRouteUntilEnabled: an outcome with DisableRoute makes its
// item a dead letter and disables the route, whose later items become dead
// letters without an attempt, across a reopen, until Enable; a replay then
// delivers them.
func testGoneDisablesRouteUntilEnabled(t *testing.T, open Factory) {
	s, reopen := open(t, spool.Limits{})
	ctx := context.Background()
	answer := new(switchable)
	answer.set(spool.Outcome{StatusCode: 410, DeadReason: "gone", DisableRoute: true})
	rec := newRecorder(answer.get)
	s.RegisterRoute("sub", spool.Route{Deliverer: rec})
	mustEnqueue(t, s, entry("sub", "evt_1", "x"))
	rec.next(t)
	waitStats(t, s, "sub", func(rs spool.RouteStats) bool { return rs.Disabled == "gone" && rs.Dead == 1 })
	mustEnqueue(t, s, entry("sub", "evt_2", "x"))
	mustEnqueue(t, s, entry("sub", "evt_3", "x"))
	waitStats(t, s, "sub", func(rs spool.RouteStats) bool { return rs.Dead == 3 && drained(rs) })
	rec.noMore(t) // the later items were not attempted
	if dead, _, err := s.ListDead(ctx, spool.DeadFilter{Route: "sub", Reason: "gone"}, 0, 10); err != nil || len(dead) != 3 {
		t.Fatalf("%d dead letters with reason gone, %v", len(dead), err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = reopen()
	s.RegisterRoute("sub", spool.Route{Deliverer: rec})
	if rs := waitStats(t, s, "sub", func(rs spool.RouteStats) bool { return rs.Dead == 3 }); rs.Disabled != "gone" {
		t.Fatalf("after a reopen: %+v, want still disabled", rs)
	}
	answer.set(spool.Outcome{StatusCode: 200})
	if err := s.Enable(ctx, "sub"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ReplayMatching(ctx, spool.DeadFilter{Route: "sub", Reason: "gone"}); n != 3 || err != nil {
		t.Fatalf("replay: %d, %v", n, err)
	}
	for range 3 {
		rec.next(t)
	}
	if rs := waitStats(t, s, "sub", func(rs spool.RouteStats) bool { return rs.Dead == 0 && drained(rs) }); rs.Disabled != "" {
		t.Fatalf("still disabled: %+v", rs)
	}
}

// testPauseHoldsAndResumeReleases: nothing of a paused route is delivered,
// while other routes are, also after a reopen; Resume releases all, in
// order.
func testPauseHoldsAndResumeReleases(t *testing.T, open Factory) {
	s, reopen := open(t, spool.Limits{})
	ctx := context.Background()
	if err := s.Pause(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	var paused atomic.Bool
	paused.Store(true)
	rec := newRecorder(func(d *spool.Delivery) spool.Outcome {
		if paused.Load() {
			t.Errorf("%s delivered while its route is paused", d.EventID)
		}
		return spool.Outcome{StatusCode: 200}
	})
	probe := newRecorder(nil)
	register := func(s spool.Backend) {
		s.RegisterRoute("r", spool.Route{Deliverer: rec, Concurrency: 1})
		s.RegisterRoute("probe", spool.Route{Deliverer: probe})
	}
	register(s)
	for i := range 5 {
		mustEnqueue(t, s, entry("r", fmt.Sprintf("evt_%d", i), "x"))
	}
	// A route enqueued to after them is delivered: the paused one was passed over.
	mustEnqueue(t, s, entry("probe", "evt_probe_1", "x"))
	probe.next(t)
	if rs := waitStats(t, s, "r", func(rs spool.RouteStats) bool { return rs.Queued == 5 }); !rs.Paused || rs.InFlight != 0 {
		t.Fatalf("paused route: %+v", rs)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = reopen()
	register(s)
	mustEnqueue(t, s, entry("probe", "evt_probe_2", "x"))
	probe.next(t)
	if rs := waitStats(t, s, "r", func(rs spool.RouteStats) bool { return rs.Queued == 5 }); !rs.Paused {
		t.Fatalf("after a reopen: %+v, want still paused", rs)
	}
	paused.Store(false)
	if err := s.Resume(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if a := rec.next(t); a.EventID != fmt.Sprintf("evt_%d", i) {
			t.Fatalf("delivery %d was %s: the order changed", i, a.EventID)
		}
	}
	if rs := waitStats(t, s, "r", drained); rs.Paused {
		t.Fatalf("resumed route: %+v", rs)
	}
}

// testDeadLettersListReplayDelete: dead letters page by id with a cursor
// and filter by route and reason; they are replayed by id, by filter or
// all, and deleted.
func testDeadLettersListReplayDelete(t *testing.T, open Factory) {
	s, _ := open(t, spool.Limits{})
	ctx := context.Background()
	answer := new(switchable)
	answer.set(spool.Outcome{StatusCode: 500})
	rejecting := newRecorder(func(*spool.Delivery) spool.Outcome { return spool.Outcome{StatusCode: 404} })
	rec := newRecorder(answer.get)
	s.RegisterRoute("a", spool.Route{Deliverer: rec, Policy: fastPolicy(1)})
	s.RegisterRoute("b", spool.Route{Deliverer: rec, Policy: fastPolicy(1)})
	s.RegisterRoute("x", spool.Route{Deliverer: rejecting, Policy: fastPolicy(1)})
	for i := range 4 {
		mustEnqueue(t, s, entry("a", fmt.Sprintf("a%d", i), "x"))
		mustEnqueue(t, s, entry("b", fmt.Sprintf("b%d", i), "x"))
	}
	for i := range 2 {
		mustEnqueue(t, s, entry("x", fmt.Sprintf("x%d", i), "x"))
	}
	for _, r := range []struct {
		route string
		n     int64
	}{{"a", 4}, {"b", 4}, {"x", 2}} {
		waitStats(t, s, r.route, func(rs spool.RouteStats) bool { return rs.Dead == r.n && drained(rs) })
	}

	var all []spool.DeadLetter
	var cursor uint64
	pages := 0
	for {
		page, next, err := s.ListDead(ctx, spool.DeadFilter{}, cursor, 3)
		if err != nil {
			t.Fatal(err)
		}
		all, pages, cursor = append(all, page...), pages+1, next
		if next == 0 || pages > 10 {
			break
		}
	}
	if len(all) != 10 || pages != 4 {
		t.Fatalf("%d dead letters in %d pages of 3, want 10 in 4", len(all), pages)
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID <= all[i-1].ID {
			t.Fatalf("pages not in id order: %d after %d", all[i].ID, all[i-1].ID)
		}
	}
	for _, tt := range []struct {
		f    spool.DeadFilter
		want int
	}{
		{spool.DeadFilter{Reason: spool.ReasonRejected}, 2},
		{spool.DeadFilter{Route: "a"}, 4},
		{spool.DeadFilter{Route: "a", Reason: spool.ReasonMaxAttempts}, 4},
		{spool.DeadFilter{Route: "a", Reason: spool.ReasonRejected}, 0},
		{spool.DeadFilter{Route: "other"}, 0},
	} {
		if got, _, err := s.ListDead(ctx, tt.f, 0, 100); err != nil || len(got) != tt.want {
			t.Errorf("ListDead(%+v): %d, %v; want %d", tt.f, len(got), err, tt.want)
		}
	}

	answer.set(spool.Outcome{StatusCode: 200})
	a, _, _ := s.ListDead(ctx, spool.DeadFilter{Route: "a"}, 0, 2)
	if n, err := s.Replay(ctx, a[0].ID); n != 1 || err != nil {
		t.Fatalf("Replay: %d, %v", n, err)
	}
	waitState(t, s, "a", a[0].EventID, spool.StateDelivered)
	if n, err := s.Replay(ctx, a[0].ID); n != 0 || err != nil {
		t.Fatalf("replaying a delivered event: %d, %v; want 0", n, err)
	}
	if n, err := s.DeleteDead(ctx, a[1].ID); n != 1 || err != nil {
		t.Fatalf("DeleteDead: %d, %v", n, err)
	}
	if st, err := s.Lookup(ctx, "a", a[1].EventID); err != nil || st.State != spool.StateDeleted {
		t.Fatalf("a deleted dead letter: %+v, %v", st, err)
	}
	if n, err := s.DeleteDead(ctx, a[1].ID); n != 0 || err != nil {
		t.Fatalf("deleting it again: %d, %v; want 0", n, err)
	}
	if n, err := s.ReplayMatching(ctx, spool.DeadFilter{Route: "b", Reason: spool.ReasonMaxAttempts}); n != 4 || err != nil {
		t.Fatalf("ReplayMatching(b): %d, %v", n, err)
	}
	waitStats(t, s, "b", func(rs spool.RouteStats) bool { return rs.Dead == 0 && drained(rs) })
	waitStats(t, s, "a", func(rs spool.RouteStats) bool { return rs.Dead == 2 }) // one delivered, one deleted
	if n, err := s.ReplayMatching(ctx, spool.DeadFilter{}); n != 4 || err != nil {
		t.Fatalf("replaying all: %d, %v; want a's 2 and x's 2", n, err)
	}
	waitStats(t, s, "a", func(rs spool.RouteStats) bool { return rs.Dead == 0 && drained(rs) })
	// x's two were attempted once before the replay and once after it, and
	// died again (a 404 is final). The deliverer's calls say so, not the
	// stats: a backend's stats may lag (NATS: a snapshot up to 2 s old, read
	// from several servers), and a stale one can show both dead and drained
	// before the second is attempted again.
	attempts := map[string]int{}
	for range 4 {
		a := rejecting.next(t)
		attempts[a.EventID]++
	}
	if attempts["x0"] != 2 || attempts["x1"] != 2 {
		t.Fatalf("route x's attempts %v, want 2 each: once before the replay and once after", attempts)
	}
	waitStats(t, s, "x", func(rs spool.RouteStats) bool { return rs.Dead == 2 && drained(rs) }) // rejected again
	rejecting.noMore(t)
}

// testLookupStates: where an event stands, with its attempts.
func testLookupStates(t *testing.T, open Factory) {
	s, _ := open(t, spool.Limits{})
	ctx := context.Background()
	rec := newRecorder(func(d *spool.Delivery) spool.Outcome {
		if d.EventID == "evt_dead" {
			return spool.Outcome{StatusCode: 400}
		}
		return spool.Outcome{StatusCode: 200}
	})
	if _, err := s.Lookup(ctx, "r", "evt_none"); !errors.Is(err, spool.ErrNotFound) {
		t.Fatalf("an unknown event: %v, want ErrNotFound", err)
	}
	pending := mustEnqueue(t, s, entry("r", "evt_pending", "x")) // the route is not registered yet
	if st, err := s.Lookup(ctx, "r", "evt_pending"); err != nil || st.State != spool.StatePending || st.ID != pending.ID || len(st.Attempts) != 0 {
		t.Fatalf("pending: %+v, %v", st, err)
	}
	if err := s.Pause(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	s.RegisterRoute("r", spool.Route{Deliverer: rec})
	mustEnqueue(t, s, entry("r", "evt_dead", "x"))
	if err := s.Resume(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if st := waitState(t, s, "r", "evt_pending", spool.StateDelivered); st.ID != pending.ID || len(st.Attempts) != 1 || st.Attempts[0].StatusCode != 200 {
		t.Fatalf("delivered: %+v", st)
	}
	dead := waitState(t, s, "r", "evt_dead", spool.StateDead)
	if dead.Dead == nil || dead.Dead.Reason != spool.ReasonRejected || dead.Dead.ID != dead.ID || len(dead.Attempts) != 1 || dead.Attempts[0].StatusCode != 400 {
		t.Fatalf("dead: %+v", dead)
	}
	if _, err := s.DeleteDead(ctx, dead.ID); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Lookup(ctx, "r", "evt_dead"); err != nil || st.State != spool.StateDeleted || st.ID != dead.ID {
		t.Fatalf("deleted: %+v, %v", st, err)
	}
	if _, err := s.Lookup(ctx, "other", "evt_pending"); !errors.Is(err, spool.ErrNotFound) {
		t.Fatalf("the event on another route: %v, want ErrNotFound", err)
	}
}

// testStatsUsageRecords: the counts per route, of the store and of its
// records.
func testStatsUsageRecords(t *testing.T, open Factory) {
	s, _ := open(t, spool.Limits{MaxRecordBytes: 1 << 30})
	ctx := context.Background()
	block := make(chan struct{})
	defer close(block)
	rec := newRecorder(func(d *spool.Delivery) spool.Outcome {
		switch d.EventID {
		case "inflight":
			<-block
		case "retry":
			return spool.Outcome{StatusCode: 503, RetryAfter: time.Hour}
		case "dead":
			return spool.Outcome{StatusCode: 400}
		}
		return spool.Outcome{StatusCode: 200}
	})
	before := time.Now()
	s.RegisterRoute("r", spool.Route{Deliverer: rec, Policy: spool.Policy{BackoffMin: time.Minute, BackoffMax: time.Hour}})
	for _, id := range []string{"inflight", "retry", "dead", "delivered"} {
		mustEnqueue(t, s, entry("r", id, "12345"))
	}
	for range 4 {
		rec.next(t)
	}
	if err := s.Pause(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	mustEnqueue(t, s, entry("r", "queued", "12345"))
	if _, err := s.Remember(ctx, entry("v", "remembered", "x")); err != nil {
		t.Fatal(err)
	}
	rs := waitStats(t, s, "r", func(rs spool.RouteStats) bool {
		return rs.InFlight == 1 && rs.Scheduled == 1 && rs.Dead == 1 && rs.Queued == 1
	})
	if !rs.Paused || rs.Bytes < 4*5 {
		t.Fatalf("stats %+v, want paused and the 4 stored bodies' bytes", rs)
	}
	if rs.Oldest.Before(before.Add(-time.Second)) || rs.Oldest.After(time.Now()) || rs.OldestAge(time.Now()) <= 0 {
		t.Fatalf("oldest pending %v, want between %v and now", rs.Oldest, before)
	}
	testwait.Until(t, wait, func() (bool, string) {
		items, bytes := s.Usage()
		r := s.Records()
		return items == 4 && bytes >= rs.Bytes && r.Dedupe.Count == 6 && r.Dedupe.Bytes > 0 && r.Attempts.Count >= 3 && r.MaxBytes == 1<<30,
			fmt.Sprintf("usage %d items %d bytes, records %+v; want 4 items, 6 dedupe records, at least 3 attempt records, budget 1 GiB", items, bytes, r)
	})
}

// testBoundsRefuseWithFull: past MaxItems or MaxBytes a new item is refused
// with a *FullError and nothing of it is written, while a duplicate is
// still answered; Reconfigure raises the bound at once.
func testBoundsRefuseWithFull(t *testing.T, open Factory) {
	body := string(make([]byte, 1000))
	for _, tt := range []struct {
		limit  string
		limits spool.Limits
		raised spool.Limits
	}{
		{"max_items", spool.Limits{MaxItems: 3}, spool.Limits{MaxItems: 4}},
		{"max_bytes", spool.Limits{MaxBytes: 3500}, spool.Limits{MaxBytes: 4500}}, // room for 3 messages of 1000 bytes and their headers
	} {
		t.Run(tt.limit, func(t *testing.T) {
			t.Parallel()
			s, _ := open(t, tt.limits)
			ctx := context.Background()
			for i := range 3 {
				mustEnqueue(t, s, entry("r", fmt.Sprintf("e%d", i), body))
			}
			items, bytes := s.Usage()
			var full *spool.FullError
			for _, try := range []func() error{
				func() error { _, err := s.Enqueue(ctx, entry("r", "e_refused", body)); return err },
				func() error {
					_, err := s.EnqueueAll(ctx, []spool.Entry{{Route: "scope", EventID: "e_refused", DedupeOnly: true}, entry("r", "e_refused", body)})
					return err
				},
			} {
				if err := try(); !errors.Is(err, spool.ErrFull) || !errors.As(err, &full) || full.Limit != tt.limit {
					t.Fatalf("past the bound: %v; want a full error for %s", err, tt.limit)
				}
			}
			if i, b := s.Usage(); i != items || b != bytes {
				t.Fatalf("a refusal wrote: usage %d items %d bytes, before %d %d", i, b, items, bytes)
			}
			if _, err := s.Lookup(ctx, "r", "e_refused"); !errors.Is(err, spool.ErrNotFound) {
				t.Fatalf("the refused event is known: %v", err)
			}
			for route, fp := range map[string][]byte{"r": []byte(body), "scope": nil} {
				if st, err := s.Seen(ctx, route, "e_refused", fp); err != nil || st != spool.Accepted {
					t.Fatalf("the refused event's id is recorded on %s: %v, %v", route, st, err)
				}
			}
			if r, err := s.Enqueue(ctx, entry("r", "e0", body)); err != nil || r.Status != spool.Duplicate {
				t.Fatalf("a duplicate when full: %+v, %v", r, err)
			}
			s.Reconfigure(tt.raised)
			if r, err := s.Enqueue(ctx, entry("r", "e_refused", body)); err != nil || r.Status != spool.Accepted {
				t.Fatalf("after raising the bound: %+v, %v", r, err)
			}
		})
	}
}

// testConcurrencyCap: a route never has more attempts in flight than its
// Concurrency, and another route flows while it is at its cap.
func testConcurrencyCap(t *testing.T, open Factory) {
	s, _ := open(t, spool.Limits{})
	const limit = 2
	var mu sync.Mutex
	inFlight, peak := 0, 0
	started, release := make(chan string, 100), make(chan struct{})
	slow := spool.DelivererFunc(func(ctx context.Context, d *spool.Delivery) spool.Outcome {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		started <- d.EventID
		<-release
		mu.Lock()
		inFlight--
		mu.Unlock()
		return spool.Outcome{StatusCode: 204}
	})
	fast := newRecorder(nil)
	s.RegisterRoute("slow", spool.Route{Deliverer: slow, Concurrency: limit})
	s.RegisterRoute("fast", spool.Route{Deliverer: fast})
	for i := range 10 {
		mustEnqueue(t, s, entry("slow", fmt.Sprintf("s%d", i), "x"))
	}
	for range limit {
		testwait.Recv(t, started, wait, "the slow route's first attempts did not start")
	}
	for i := range 5 {
		mustEnqueue(t, s, entry("fast", fmt.Sprintf("f%d", i), "x"))
	}
	for range 5 {
		fast.next(t)
	}
	if rs := waitStats(t, s, "slow", func(rs spool.RouteStats) bool { return rs.InFlight == limit }); rs.Queued != 10-limit {
		t.Fatalf("slow route at its cap: %+v; want %d in flight, %d queued", rs, limit, 10-limit)
	}
	close(release)
	waitStats(t, s, "slow", drained)
	if len(started) != 10-limit {
		t.Fatalf("%d more attempts started, want %d", len(started), 10-limit)
	}
	mu.Lock()
	defer mu.Unlock()
	if peak != limit {
		t.Fatalf("peak concurrency %d, want %d", peak, limit)
	}
}

// testCloseAndReopen: once closed, a store refuses writes with ErrClosed; a
// clean close keeps what was queued, and it is delivered after a reopen.
func testCloseAndReopen(t *testing.T, open Factory) {
	s, reopen := open(t, spool.Limits{})
	ctx := context.Background()
	var ids []uint64
	for i := range 5 {
		ids = append(ids, mustEnqueue(t, s, entry("later", fmt.Sprintf("evt_%d", i), fmt.Sprint(i))).ID) // no route registered
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for name, try := range map[string]func() error{
		"Enqueue":    func() error { _, err := s.Enqueue(ctx, entry("later", "evt_late", "x")); return err },
		"EnqueueAll": func() error { _, err := s.EnqueueAll(ctx, []spool.Entry{entry("later", "evt_late", "x")}); return err },
		"Remember":   func() error { _, err := s.Remember(ctx, entry("v", "evt_late", "x")); return err },
	} {
		if err := try(); !errors.Is(err, spool.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}

	s = reopen()
	for i, id := range ids {
		if st, err := s.Lookup(ctx, "later", fmt.Sprintf("evt_%d", i)); err != nil || st.State != spool.StatePending || st.ID != id {
			t.Fatalf("evt_%d after a reopen: %+v, %v; want pending as item %d", i, st, err, id)
		}
	}
	if r := mustEnqueue(t, s, entry("later", "evt_0", "0")); r.Status != spool.Duplicate || r.ID != ids[0] {
		t.Fatalf("a sender's retry after a reopen: %+v, want a duplicate of item %d", r, ids[0])
	}
	rec := newRecorder(nil)
	s.RegisterRoute("later", spool.Route{Deliverer: rec})
	got := map[string]string{}
	for range 5 {
		a := rec.next(t)
		got[a.EventID] = a.Body
	}
	for i := range 5 {
		if id := fmt.Sprintf("evt_%d", i); got[id] != fmt.Sprint(i) {
			t.Errorf("%s delivered with %q", id, got[id])
		}
	}
	waitStats(t, s, "later", drained)
	rec.noMore(t)
}
