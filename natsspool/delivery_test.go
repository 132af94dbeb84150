package natsspool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hookgate/hookgate/internal/testwait"
	"github.com/hookgate/hookgate/spool"
)

// idle waits until no instance has anything of route queued, in flight or
// scheduled.
func idle(t *testing.T, route string, bs ...*Backend) {
	t.Helper()
	testwait.Until(t, wait, func() (bool, string) {
		for _, b := range bs {
			b.cache.invalidate()
			for _, r := range b.Stats() {
				if r.Route == route && r.Queued+r.InFlight+r.Scheduled > 0 {
					return false, fmt.Sprintf("%+v", r)
				}
			}
		}
		return true, ""
	})
}

func TestSameEventOnTwoInstancesAcceptedAndDeliveredOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a, b := s.open(t, "HG"), s.open(t, "HG")
		var results sync.Map
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 32 {
			wg.Go(func() {
				on := []*Backend{a, b}[i%2]
				<-start
				res, err := on.Enqueue(context.Background(), entry("r", "evt_same", `{"x":1}`))
				if err != nil {
					t.Errorf("enqueue %d: %v", i, err)
					return
				}
				results.Store(i, res)
			})
		}
		close(start)
		wg.Wait()
		accepted := 0
		var id uint64
		results.Range(func(_, v any) bool {
			res := v.(spool.Result)
			switch res.Status {
			case spool.Accepted:
				accepted++
			case spool.Duplicate:
			default:
				t.Errorf("status %v", res.Status)
			}
			if id != 0 && res.ID != id {
				t.Errorf("item %d and %d for one event", id, res.ID)
			}
			id = res.ID
			return true
		})
		if accepted != 1 {
			t.Fatalf("%d accepted, want 1", accepted)
		}
		var c counter
		ch := make(chan delivery, 64)
		for _, x := range []*Backend{a, b} {
			defer x.RegisterRoute("r", spool.Route{Deliverer: newRecorder("", ch, func(d *spool.Delivery) spool.Outcome {
				c.add(d.EventID)
				return spool.Outcome{StatusCode: http.StatusOK}
			})})()
		}
		next(t, ch)
		idle(t, "r", a, b)
		if n := c.get("evt_same"); n != 1 {
			t.Fatalf("delivered %d times", n)
		}
	})
}

func TestRetriesByPolicyThenDeadLetterReplayAndDelete(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a, b := s.open(t, "HG"), s.open(t, "HG")
		var up atomic.Bool
		ch := make(chan delivery, 16)
		policy := spool.Policy{MaxAttempts: 3, BackoffMin: 10 * time.Millisecond, BackoffMax: 10 * time.Millisecond}
		defer a.RegisterRoute("r", spool.Route{Policy: policy, Deliverer: newRecorder("a", ch, func(d *spool.Delivery) spool.Outcome {
			switch {
			case d.EventID == "evt_bad":
				return spool.Outcome{StatusCode: http.StatusBadRequest}
			case up.Load():
				return spool.Outcome{StatusCode: http.StatusOK}
			}
			return spool.Outcome{StatusCode: http.StatusServiceUnavailable}
		})})()
		mustEnqueue(t, a, entry("r", "evt_1", `{}`), spool.Accepted)
		for want := 1; want <= 3; want++ {
			if d := next(t, ch); d.eventID != "evt_1" || d.attempt != want {
				t.Fatalf("delivery %+v, want attempt %d", d, want)
			}
		}
		var dl []spool.DeadLetter
		testwait.Until(t, wait, func() (bool, string) {
			var err error
			dl, _, err = b.ListDead(ctxT(t), spool.DeadFilter{Route: "r"}, 0, 10) // the other instance sees it
			return err == nil && len(dl) == 1, fmt.Sprintf("%+v, %v", dl, err)
		})
		if d := dl[0]; d.EventID != "evt_1" || d.Reason != spool.ReasonMaxAttempts || d.Attempts != 3 || d.LastStatus != 503 {
			t.Fatalf("dead letter %+v", d)
		}
		st, err := b.Lookup(ctxT(t), "r", "evt_1")
		if err != nil || st.State != spool.StateDead || st.Dead == nil || st.Dead.ID != dl[0].ID || len(st.Attempts) != 3 {
			t.Fatalf("Lookup = %+v, %v", st, err)
		}
		up.Store(true)
		for range 2 { // a second replay of the same dead letter does nothing
			n, err := b.Replay(ctxT(t), dl[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			if n != 1 && n != 0 {
				t.Fatalf("replayed %d", n)
			}
		}
		if d := next(t, ch); d.eventID != "evt_1" || d.attempt != 4 {
			t.Fatalf("after replay: %+v, want attempt 4", d)
		}
		testwait.Until(t, wait, func() (bool, string) {
			st, err := a.Lookup(ctxT(t), "r", "evt_1")
			return err == nil && st.State == spool.StateDelivered && len(st.Attempts) == 4, fmt.Sprintf("%+v, %v", st, err)
		})
		// A rejection is a dead letter at once; deleted, Lookup says so.
		mustEnqueue(t, b, entry("r", "evt_bad", `{}`), spool.Accepted)
		if d := next(t, ch); d.eventID != "evt_bad" || d.attempt != 1 {
			t.Fatalf("delivery %+v", d)
		}
		testwait.Until(t, wait, func() (bool, string) {
			dl, _, err = a.ListDead(ctxT(t), spool.DeadFilter{Reason: spool.ReasonRejected}, 0, 10)
			return err == nil && len(dl) == 1, fmt.Sprintf("%+v, %v", dl, err)
		})
		if n, err := b.DeleteDead(ctxT(t), dl[0].ID); n != 1 || err != nil {
			t.Fatalf("DeleteDead = %d, %v", n, err)
		}
		if n, err := a.Replay(ctxT(t), dl[0].ID); n != 0 || err != nil {
			t.Fatalf("Replay of a deleted dead letter = %d, %v", n, err)
		}
		if st, err := a.Lookup(ctxT(t), "r", "evt_bad"); err != nil || st.State != spool.StateDeleted {
			t.Fatalf("Lookup = %+v, %v", st, err)
		}
		idle(t, "r", a)
		select {
		case d := <-ch:
			t.Fatalf("an extra delivery: %+v", d)
		default:
		}
	})
}

func TestPauseOnOneInstanceHoldsTheOther(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a, b := s.open(t, "HG"), s.open(t, "HG")
		ch := make(chan delivery, 16)
		defer b.RegisterRoute("r", spool.Route{Deliverer: newRecorder("b", ch, nil)})()
		if err := a.Pause(ctxT(t), "r"); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids(3, "evt") {
			mustEnqueue(t, a, entry("r", id, `{}`), spool.Accepted)
		}
		// b's view: paused, all three still queued, so none was handed out.
		testwait.Until(t, wait, func() (bool, string) {
			b.cache.invalidate()
			for _, r := range b.Stats() {
				if r.Route == "r" {
					return r.Paused && r.Queued == 3, fmt.Sprintf("%+v", r)
				}
			}
			return false, "no stats for r"
		})
		select {
		case d := <-ch:
			t.Fatalf("delivered while paused: %+v", d)
		default:
		}
		if err := a.Resume(ctxT(t), "r"); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			next(t, ch)
		}
	})
}

func TestAbruptlyClosedInstanceLeaseGoesToTheOther(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a, b := s.open(t, "HG"), s.open(t, "HG")
		started := make(chan struct{}, 1)
		route := spool.Route{Timeout: 2 * time.Second, Deliverer: spool.DelivererFunc(func(ctx context.Context, d *spool.Delivery) spool.Outcome {
			started <- struct{}{}
			<-ctx.Done()
			return spool.Outcome{Err: ctx.Err()}
		})}
		defer a.RegisterRoute("r", route)()
		mustEnqueue(t, a, entry("r", "evt_1", `{}`), spool.Accepted)
		select {
		case <-started:
		case <-time.After(wait):
			t.Fatal("not delivered")
		}
		a.nc.Close() // as kill -9: no ack, no nak
		ch := make(chan delivery, 4)
		route.Deliverer = newRecorder("b", ch, nil)
		defer b.RegisterRoute("r", route)()
		// a died before recording its attempt: uncounted (see attemptNumber).
		if d := next(t, ch); d.eventID != "evt_1" || d.attempt != 1 {
			t.Fatalf("delivery %+v, want attempt 1 on b", d)
		}
	})
}

func TestFullRefusesNewEventsAndAnswersDuplicates(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		o := s.options("HG")
		o.Limits.MaxItems = 2
		a := openWith(t, o)
		mustEnqueue(t, a, entry("r", "evt_1", `{}`), spool.Accepted)
		mustEnqueue(t, a, entry("r", "evt_2", `{}`), spool.Accepted)
		_, err := a.Enqueue(ctxT(t), entry("r", "evt_3", `{}`))
		var full *spool.FullError
		if !errors.As(err, &full) || full.Limit != "max_items" || !errors.Is(err, spool.ErrFull) {
			t.Fatalf("a third item: %v, want FullError{max_items}", err)
		}
		mustEnqueue(t, a, entry("r", "evt_1", `{}`), spool.Duplicate)
		mustEnqueue(t, a, entry("r", "evt_2", `{"other":1}`), spool.Conflict)
		if st, err := a.Seen(ctxT(t), "r", "evt_3", []byte(`{}`)); err != nil || st != spool.Accepted {
			t.Fatalf("the refused event was stored: Seen = %v, %v", st, err)
		}
	})
}

func TestGoneDisablesTheRouteOnEveryInstanceUntilEnabled(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a, b := s.open(t, "HG"), s.open(t, "HG")
		var gone atomic.Bool
		gone.Store(true)
		ch := make(chan delivery, 16)
		defer a.RegisterRoute("r", spool.Route{Deliverer: newRecorder("a", ch, func(d *spool.Delivery) spool.Outcome {
			if gone.Load() {
				return spool.Outcome{StatusCode: http.StatusGone, DeadReason: "gone", DisableRoute: true}
			}
			return spool.Outcome{StatusCode: http.StatusOK}
		})})()
		mustEnqueue(t, b, entry("r", "evt_1", `{}`), spool.Accepted)
		if d := next(t, ch); d.eventID != "evt_1" {
			t.Fatalf("delivery %+v", d)
		}
		testwait.Until(t, wait, func() (bool, string) {
			b.cache.invalidate()
			for _, r := range b.Stats() {
				if r.Route == "r" {
					return r.Disabled == "gone" && r.Dead == 1, fmt.Sprintf("%+v", r)
				}
			}
			return false, "no stats for r"
		})
		// A disabled route's new items become dead letters without an attempt.
		mustEnqueue(t, b, entry("r", "evt_2", `{}`), spool.Accepted)
		testwait.Until(t, wait, func() (bool, string) {
			st, err := b.Lookup(ctxT(t), "r", "evt_2")
			return err == nil && st.State == spool.StateDead && st.Dead.Reason == "gone" && len(st.Attempts) == 0, fmt.Sprintf("%+v, %v", st, err)
		})
		gone.Store(false)
		if err := b.Enable(ctxT(t), "r"); err != nil {
			t.Fatal(err)
		}
		if n, err := b.ReplayMatching(ctxT(t), spool.DeadFilter{Route: "r", Reason: "gone"}); n != 2 || err != nil {
			t.Fatalf("ReplayMatching = %d, %v", n, err)
		}
		got := map[string]bool{}
		for range 2 {
			got[next(t, ch).eventID] = true
		}
		if !got["evt_1"] || !got["evt_2"] {
			t.Fatalf("after replay: %v", got)
		}
	})
}

func TestCloseReleasesWhatItCancels(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		o := s.options("HG")
		o.CloseTimeout = 100 * time.Millisecond
		var outcomes sync.Map
		o.Observe = func(route string, a spool.Attempt, outcome string) { outcomes.Store(a.Number, outcome) }
		a, b := openWith(t, o), s.open(t, "HG")
		started := make(chan struct{}, 1)
		defer a.RegisterRoute("r", spool.Route{Deliverer: spool.DelivererFunc(func(ctx context.Context, d *spool.Delivery) spool.Outcome {
			started <- struct{}{}
			<-ctx.Done() // only Close ends it: the route's timeout is 30s
			return spool.Outcome{Err: ctx.Err()}
		})})()
		mustEnqueue(t, a, entry("r", "evt_1", `{}`), spool.Accepted)
		select {
		case <-started:
		case <-time.After(wait):
			t.Fatal("not delivered")
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if got, _ := outcomes.Load(1); got != "released" {
			t.Fatalf("outcome of the cancelled attempt: %v", got)
		}
		if _, err := a.Enqueue(ctxT(t), entry("r", "evt_2", `{}`)); !errors.Is(err, spool.ErrClosed) {
			t.Fatalf("enqueue after Close: %v", err)
		}
		// Released with a nak: b has it, as its second attempt (the released
		// one is recorded).
		ch := make(chan delivery, 1)
		defer b.RegisterRoute("r", spool.Route{Deliverer: newRecorder("b", ch, nil)})()
		if d := next(t, ch); d.eventID != "evt_1" || d.attempt != 2 {
			t.Fatalf("delivery %+v", d)
		}
	})
}

// TestADeliveryLongerThanTheRequestTimeoutIsAcked: the outcome of a
// delivery that took longer than the NATS calls' own timeout is still
// written: the item is acked at once, not left for its ack wait and
// delivered again.
func TestADeliveryLongerThanTheRequestTimeoutIsAcked(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		o := s.options("HG")
		o.RequestTimeout = 200 * time.Millisecond
		o.LeaseMargin = time.Minute // a redelivery would come long after the test ends
		b := openWith(t, o)
		ch := make(chan delivery, 10)
		b.RegisterRoute("r", spool.Route{Timeout: 10 * time.Second, Deliverer: newRecorder("a", ch, func(*spool.Delivery) spool.Outcome {
			time.Sleep(time.Second) // more than twice the request timeout
			return spool.Outcome{StatusCode: http.StatusOK}
		})})
		mustEnqueue(t, b, entry("r", "evt_slow", "x"), spool.Accepted)
		next(t, ch)
		testwait.Until(t, 10*time.Second, func() (bool, string) {
			items, _ := b.Usage()
			return items == 0, fmt.Sprintf("%d items stored after the delivery", items)
		})
	})
}

// TestADeletedConsumerIsMadeAgain: a route's consumer deleted behind the
// backend's back (by an operator) is created again, and delivery goes on.
func TestADeletedConsumerIsMadeAgain(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		b := s.open(t, "HG")
		ch := make(chan delivery, 10)
		b.RegisterRoute("r", spool.Route{Deliverer: newRecorder("a", ch, nil)})
		mustEnqueue(t, b, entry("r", "evt_1", "x"), spool.Accepted)
		next(t, ch)
		testwait.Until(t, wait, func() (bool, string) { // acked: nothing for the new consumer to redeliver
			items, _ := b.Usage()
			return items == 0, fmt.Sprintf("%d items stored", items)
		})
		if err := b.js.DeleteConsumer(ctxT(t), b.n.stream(), b.n.consumer("r")); err != nil {
			t.Fatal(err)
		}
		mustEnqueue(t, b, entry("r", "evt_2", "x"), spool.Accepted)
		if d := next(t, ch); d.eventID != "evt_2" {
			t.Fatalf("delivered %s, want evt_2", d.eventID)
		}
	})
}

// TestDeliveriesWithoutAnAttemptDoNotCount: deliveries that made no HTTP
// attempt (here naked by hand, as after a failed read of the records or on
// an instance that had just unregistered the route) do not use up
// max_attempts: the route still gets its three attempts, numbered from 1.
func TestDeliveriesWithoutAnAttemptDoNotCount(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a := s.open(t, "HG")
		mustEnqueue(t, a, entry("r", "evt_1", `{}`), spool.Accepted)
		cons, err := a.js.Consumer(ctxT(t), a.n.stream(), a.n.consumer("r"))
		if err != nil {
			t.Fatal(err)
		}
		for want := uint64(1); want <= 5; want++ {
			batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			for msg := range batch.Messages() {
				if md, err := msg.Metadata(); err != nil || md.NumDelivered != want {
					t.Fatalf("delivery %d: %+v, %v", want, md, err)
				}
				if err := msg.Nak(); err != nil {
					t.Fatal(err)
				}
			}
		}
		ch := make(chan delivery, 8)
		policy := spool.Policy{MaxAttempts: 3, BackoffMin: 10 * time.Millisecond, BackoffMax: 10 * time.Millisecond}
		defer a.RegisterRoute("r", spool.Route{Policy: policy, Deliverer: newRecorder("a", ch, func(*spool.Delivery) spool.Outcome {
			return spool.Outcome{StatusCode: http.StatusServiceUnavailable}
		})})()
		for want := 1; want <= 3; want++ {
			if d := next(t, ch); d.attempt != want {
				t.Fatalf("delivery %+v, want attempt %d", d, want)
			}
		}
		testwait.Until(t, wait, func() (bool, string) {
			st, err := a.Lookup(ctxT(t), "r", "evt_1")
			return err == nil && st.State == spool.StateDead && st.Dead.Attempts == 3, fmt.Sprintf("%+v, %v", st, err)
		})
	})
}

func TestAttemptNumber(t *testing.T) {
	rec := func(seq uint64, kind string, item uint64, data string) *jetstream.RawStreamMsg {
		m := &jetstream.RawStreamMsg{Sequence: seq, Header: nats.Header{}, Data: []byte(data)}
		m.Header.Set(hdrKind, kind)
		if item != 0 {
			m.Header.Set(hdrItem, strconv.FormatUint(item, 10))
		}
		return m
	}
	it := &item{seq: 11, attemptBase: 2}
	for _, tt := range []struct {
		name      string
		last      *jetstream.RawStreamMsg
		delivered uint64
		want      int
	}{
		{"no records: by deliveries", nil, 4, 6},
		{"marker just before: none yet", rec(10, kindMarker, 0, ""), 4, 3},
		{"replayed just before: none yet", rec(10, kindReplayed, 0, ""), 4, 3},
		{"after a recorded attempt", rec(30, kindAttempt, 11, `{"n":4}`), 9, 5},
		{"another item's attempt: by deliveries", rec(30, kindAttempt, 7, `{"n":4}`), 4, 6},
		{"a marker of another run: by deliveries", rec(5, kindMarker, 0, ""), 4, 6},
		{"at most maxUncounted uncounted", rec(10, kindMarker, 0, ""), maxUncounted + 5, 2 + 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := attemptNumber(it, tt.last, tt.delivered); got != tt.want {
				t.Fatalf("attemptNumber = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestSkipDelayGrowsToItsCap(t *testing.T) {
	for _, tt := range []struct {
		delivered uint64
		want      time.Duration
	}{{0, retryWait}, {1, retryWait}, {2, 2 * retryWait}, {4, 8 * retryWait}, {7, skipWaitMax}, {1 << 40, skipWaitMax}} {
		if got := skipDelay(tt.delivered); got != tt.want {
			t.Errorf("skipDelay(%d) = %v, want %v", tt.delivered, got, tt.want)
		}
	}
}

// TestStatsReadNeverHoldsUpACaller: while a snapshot is being read (held
// here on the lock its read of the local counts takes), an enqueue and
// Stats, Usage and Records answer from the last snapshot at once.
func TestStatsReadNeverHoldsUpACaller(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a := s.open(t, "HG")
		mustEnqueue(t, a, entry("r", "evt_1", `{}`), spool.Accepted)
		a.loopsMu.Lock()
		held := true
		defer func() {
			if held {
				a.loopsMu.Unlock()
			}
		}()
		a.cache.invalidate()
		for _, tc := range []struct {
			name string
			call func() error
		}{
			{"enqueue", func() error {
				_, err := a.Enqueue(context.Background(), entry("r", "evt_2", `{}`))
				return err
			}},
			{"stats", func() error { a.Stats(); return nil }},
			{"usage", func() error { a.Usage(); return nil }},
			{"records", func() error { a.Records(); return nil }},
		} {
			done := make(chan error, 1)
			go func() { done <- tc.call() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s waited for the stats' read", tc.name)
			}
		}
		if items, _ := a.Usage(); items != 2 {
			t.Fatalf("usage %d items, want 2 (the last snapshot and this instance's enqueue)", items)
		}
		held = false
		a.loopsMu.Unlock()
		testwait.Until(t, wait, func() (bool, string) {
			for _, r := range a.Stats() {
				if r.Route == "r" && r.Queued == 2 {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%+v", a.Stats())
		})
	})
}

// TestIdleRoutesHoldNoWorkers: with one worker, a registered route with
// nothing to deliver, whose pull waits for messages, does not hold that
// worker from a route that has an item.
func TestIdleRoutesHoldNoWorkers(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a := openOneWorker(t, s)
		ch := make(chan delivery, 4)
		defer a.RegisterRoute("idle", spool.Route{Deliverer: newRecorder("a", ch, nil)})()
		waitConsumer(t, a, "idle", func(ci *jetstream.ConsumerInfo) bool { return ci.NumWaiting > 0 }) // its pull waits
		defer a.RegisterRoute("busy", spool.Route{Deliverer: newRecorder("a", ch, nil)})()
		// busy's pull waits too (its consumer's creation on a cluster may
		// take seconds): a pull that held the one worker would prevent it.
		waitConsumer(t, a, "busy", func(ci *jetstream.ConsumerInfo) bool { return ci.NumWaiting > 0 })
		start := time.Now()
		mustEnqueue(t, a, entry("busy", "evt_1", `{}`), spool.Accepted)
		select {
		case d := <-ch:
			if d.eventID != "evt_1" {
				t.Fatalf("delivery %+v", d)
			}
		case <-time.After(fetchWait / 2):
			t.Fatalf("not delivered within %v: the idle route's pull holds the worker", fetchWait/2)
		}
		t.Logf("delivered after %v", time.Since(start))
	})
}

// TestRegisterRouteDuringCloseStartsNoLoop: a registration racing Close
// starts no fetch loop once Close waits for them (a WaitGroup Add during
// its Wait), and one after Close starts none either.
func TestRegisterRouteDuringCloseStartsNoLoop(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a := s.open(t, "HG")
		r := spool.Route{Deliverer: newRecorder("a", make(chan delivery, 1), nil)}
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() { a.RegisterRoute(fmt.Sprintf("r%d", i), r) })
		}
		wg.Go(func() { _ = a.Close() })
		wg.Wait()
		unregister := a.RegisterRoute("late", r)
		defer unregister()
		a.loopsMu.Lock()
		defer a.loopsMu.Unlock()
		if a.loops["late"] != nil {
			t.Fatal("a route registered after Close has a fetch loop")
		}
	})
}

// TestReplayMatchingStopsAtTheDeadLettersItFound: items that die again
// while ReplayMatching pages through the dead letters (here at once, and
// one dead letter a page) are not replayed again: each of the six is
// replayed once, and the call ends.
func TestReplayMatchingStopsAtTheDeadLettersItFound(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a := s.open(t, "HG")
		defer a.RegisterRoute("r", spool.Route{Deliverer: newRecorder("a", make(chan delivery, 64), func(*spool.Delivery) spool.Outcome {
			return spool.Outcome{StatusCode: http.StatusBadRequest}
		})})()
		for _, id := range ids(6, "evt") {
			mustEnqueue(t, a, entry("r", id, `{}`), spool.Accepted)
		}
		deadLetters := func(want int) {
			testwait.Until(t, wait, func() (bool, string) {
				dl, _, err := a.ListDead(ctxT(t), spool.DeadFilter{Route: "r"}, 0, 100)
				return err == nil && len(dl) == want, fmt.Sprintf("%d dead letters, %v", len(dl), err)
			})
		}
		deadLetters(6)
		replayPage = 1
		defer func() { replayPage = maxPage }()
		ctx, cancel := context.WithTimeout(ctxT(t), 10*time.Second)
		defer cancel()
		if n, err := a.ReplayMatching(ctx, spool.DeadFilter{Route: "r"}); n != 6 || err != nil {
			t.Fatalf("ReplayMatching = %d, %v; want 6", n, err)
		}
		deadLetters(6) // dead again, each once
	})
}

// TestFullDeadLettersBackOffAndLoseNothing: a kill that finds the dead
// letters full leaves its item in the queue, undead and not attempted
// again, retried with a growing delay and one warning a minute; once there
// is room its dead letter is stored.
func TestFullDeadLettersBackOffAndLoseNothing(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		core, logs := observer.New(zap.WarnLevel)
		o := s.options("HG")
		o.Logger = zap.New(core)
		a := openWith(t, o)
		for _, id := range ids(2, "evt") {
			mustEnqueue(t, a, entry("r", id, `{}`), spool.Accepted)
		}
		a.Reconfigure(spool.Limits{MaxItems: 1}) // room for one dead letter
		var attempts counter
		defer a.RegisterRoute("r", spool.Route{Deliverer: spool.DelivererFunc(func(_ context.Context, d *spool.Delivery) spool.Outcome {
			attempts.add(d.EventID)
			return spool.Outcome{StatusCode: http.StatusBadRequest}
		})})()
		notStored := func() int { return logs.FilterMessageSnippet("dead letter not stored").Len() }
		testwait.Until(t, wait, func() (bool, string) { return notStored() > 0, "no kill found the dead letters full" })
		time.Sleep(4 * time.Second) // 1 s apart, 4 more tries and warnings
		if n := notStored(); n != 1 {
			t.Fatalf("%d warnings of a full dead letter stream, want 1", n)
		}
		a.Reconfigure(spool.Limits{MaxItems: 10})
		testwait.Until(t, wait, func() (bool, string) {
			dl, _, err := a.ListDead(ctxT(t), spool.DeadFilter{Route: "r"}, 0, 10)
			return err == nil && len(dl) == 2, fmt.Sprintf("%d dead letters, %v", len(dl), err)
		})
		for _, id := range ids(2, "evt") {
			if n := attempts.get(id); n != 1 {
				t.Fatalf("%s attempted %d times", id, n)
			}
		}
	})
}

// TestADeadEventsIDIsFreeAfterItsWindow: the records of an event's kill
// last no longer than its dedupe window, so its id is accepted again once
// the window has passed.
func TestADeadEventsIDIsFreeAfterItsWindow(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a := s.open(t, "HG")
		defer a.RegisterRoute("r", spool.Route{Deliverer: newRecorder("a", make(chan delivery, 4), func(*spool.Delivery) spool.Outcome {
			return spool.Outcome{StatusCode: http.StatusBadRequest}
		})})()
		e := entry("r", "evt_1", `{}`)
		e.DedupeWindow = 3 * time.Second
		mustEnqueue(t, a, e, spool.Accepted)
		// Listed, not looked up: on a slow host the route's consumer may
		// be ready only after the window, when Lookup no longer finds it.
		testwait.Until(t, wait, func() (bool, string) {
			dl, _, err := a.ListDead(ctxT(t), spool.DeadFilter{Route: "r"}, 0, 10)
			return err == nil && len(dl) == 1 && dl[0].EventID == "evt_1", fmt.Sprintf("%+v, %v", dl, err)
		})
		testwait.Until(t, 15*time.Second, func() (bool, string) {
			res, err := a.Enqueue(ctxT(t), e)
			return err == nil && res.Status == spool.Accepted, fmt.Sprintf("%+v, %v", res, err)
		})
	})
}

// TestAMessageFetchedBeforeAPauseIsNotAttempted: a message a pull received
// before its route was paused, and that waited for a worker, is not
// attempted once it gets one: with Badger nothing starts after Pause
// returns. It is delivered after Resume.
func TestAMessageFetchedBeforeAPauseIsNotAttempted(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a := openOneWorker(t, s)
		ch := make(chan delivery, 4)
		defer a.RegisterRoute("r", spool.Route{Deliverer: newRecorder("a", ch, nil)})()
		started, release := make(chan struct{}, 1), make(chan struct{})
		defer a.RegisterRoute("hold", spool.Route{Timeout: time.Minute, Deliverer: spool.DelivererFunc(func(ctx context.Context, d *spool.Delivery) spool.Outcome {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return spool.Outcome{StatusCode: http.StatusOK}
		})})()
		waitConsumer(t, a, "r", func(ci *jetstream.ConsumerInfo) bool { return ci.NumWaiting > 0 }) // its pull asks for the free worker
		mustEnqueue(t, a, entry("hold", "evt_h", `{}`), spool.Accepted)
		testwait.Recv(t, started, wait, "the holding delivery did not start")
		mustEnqueue(t, a, entry("r", "evt_1", `{}`), spool.Accepted)
		waitConsumer(t, a, "r", func(ci *jetstream.ConsumerInfo) bool { return ci.NumAckPending == 1 }) // received, waiting for the worker
		if err := a.Pause(ctxT(t), "r"); err != nil {
			t.Fatal(err)
		}
		close(release)
		select {
		case d := <-ch:
			t.Fatalf("attempted after the pause: %+v", d)
		case <-time.After(2 * time.Second):
		}
		if err := a.Resume(ctxT(t), "r"); err != nil {
			t.Fatal(err)
		}
		if d := next(t, ch); d.eventID != "evt_1" || d.attempt != 1 {
			t.Fatalf("delivery %+v, want evt_1's first attempt", d)
		}
	})
}

// openOneWorker opens a backend that makes one delivery at a time.
func openOneWorker(t *testing.T, s store) *Backend {
	o := s.options("HG")
	o.Limits.Workers = 1
	return openWith(t, o)
}

// waitConsumer polls route's consumer until ok holds for its info; a
// request lost in an election is asked again.
func waitConsumer(t *testing.T, b *Backend, route string, ok func(*jetstream.ConsumerInfo) bool) {
	t.Helper()
	testwait.Until(t, wait, func() (bool, string) {
		ctx, cancel := context.WithTimeout(ctxT(t), 2*time.Second)
		defer cancel()
		c, err := b.js.Consumer(ctx, b.n.stream(), b.n.consumer(route))
		if err != nil {
			return false, err.Error()
		}
		return ok(c.CachedInfo()), fmt.Sprintf("%+v", c.CachedInfo())
	})
}

// TestNothingEnqueuedAfterAPauseIsHandedOut: once Pause returns, the
// route's consumer hands out nothing more, not even to a pull already
// waiting, so an item enqueued then stays queued until Resume. On a cluster
// PauseConsumer answers before the consumer's leader applies the pause;
// such an item was handed out, given back by deliver and counted as
// scheduled while paused.
func TestNothingEnqueuedAfterAPauseIsHandedOut(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a := s.open(t, "HG")
		ch := make(chan delivery, 4)
		defer a.RegisterRoute("r", spool.Route{Deliverer: newRecorder("a", ch, nil)})()
		for i, id := range ids(10, "evt") {
			waitConsumer(t, a, "r", func(ci *jetstream.ConsumerInfo) bool { return ci.NumWaiting > 0 }) // a pull waits
			if err := a.Pause(ctxT(t), "r"); err != nil {
				t.Fatal(err)
			}
			mustEnqueue(t, a, entry("r", id, `{}`), spool.Accepted)
			waitConsumer(t, a, "r", func(ci *jetstream.ConsumerInfo) bool {
				if ci.NumAckPending > 0 {
					t.Fatalf("round %d: handed out while paused: %+v", i, ci)
				}
				return ci.Paused && ci.NumPending == 1
			})
			if err := a.Resume(ctxT(t), "r"); err != nil {
				t.Fatal(err)
			}
			if d := next(t, ch); d.eventID != id || d.attempt != 1 {
				t.Fatalf("round %d: delivery %+v, want %s's first attempt", i, d, id)
			}
			waitConsumer(t, a, "r", func(ci *jetstream.ConsumerInfo) bool { return ci.NumAckPending == 0 && ci.NumPending == 0 })
		}
	})
}
