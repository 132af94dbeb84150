package natsspool

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hookgate/hookgate/internal/natstest"
	"github.com/hookgate/hookgate/internal/testwait"
	"github.com/hookgate/hookgate/spool"
)

func TestAcceptedOnceDeliveredOnce(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a, b := s.open(t, "HG"), s.open(t, "HG") // two gateways on one store
		if want := "nats:HG@" + strings.Join(s.servers, ","); a.Name() != want || b.Name() != want || s.options("HG").Name() != want {
			t.Fatalf("names %q, %q; want %q", a.Name(), b.Name(), want)
		}
		res := mustEnqueue(t, a, entry("r", "evt_1", `{"a":1}`), spool.Accepted)
		if res.ID == 0 {
			t.Fatal("accepted without an id")
		}
		for _, tc := range []struct {
			on   *Backend
			body string
			want spool.Status
		}{
			{a, `{"a":1}`, spool.Duplicate},
			{b, `{"a":1}`, spool.Duplicate},
			{a, `{"a":2}`, spool.Conflict},
			{b, `{"a":2}`, spool.Conflict},
		} {
			got := mustEnqueue(t, tc.on, entry("r", "evt_1", tc.body), tc.want)
			if got.ID != res.ID {
				t.Fatalf("%v answered with item %d, want %d", tc.want, got.ID, res.ID)
			}
			if st, err := tc.on.Seen(ctxT(t), "r", "evt_1", []byte(tc.body)); err != nil || st != tc.want {
				t.Fatalf("Seen = %v, %v; want %v", st, err, tc.want)
			}
		}
		ch := make(chan delivery, 10)
		defer a.RegisterRoute("r", spool.Route{Deliverer: newRecorder("a", ch, nil)})()
		defer b.RegisterRoute("r", spool.Route{Deliverer: newRecorder("b", ch, nil)})()
		if d := next(t, ch); d.eventID != "evt_1" || d.attempt != 1 {
			t.Fatalf("delivery %+v", d)
		}
		// Delivered: a second event on the route comes next, not the first again.
		mustEnqueue(t, b, entry("r", "evt_2", `{}`), spool.Accepted)
		if d := next(t, ch); d.eventID != "evt_2" {
			t.Fatalf("delivery %+v, want evt_2 (evt_1 delivered twice?)", d)
		}
		// The marker outlives the delivery: still a duplicate.
		mustEnqueue(t, b, entry("r", "evt_1", `{"a":1}`), spool.Duplicate)
		// The recorder reports an attempt before its outcome is recorded.
		testwait.Until(t, wait, func() (bool, string) {
			st, err := a.Lookup(ctxT(t), "r", "evt_1")
			ok := err == nil && st.State == spool.StateDelivered && st.ID == res.ID && len(st.Attempts) == 1 && st.Attempts[0].StatusCode == 200
			return ok, fmt.Sprintf("Lookup = %+v, %v", st, err)
		})
	})
}

func TestEnqueueAllStandsOrFallsTogether(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a, b := s.open(t, "HG"), s.open(t, "HG")
		pub := entry("publish", "evt_1", `{"p":1}`)
		pub.DedupeOnly = true
		batch := []spool.Entry{pub, entry("subscriber/x", "evt_1", `{"p":1}`), entry("subscriber/y", "evt_1", `{"p":1}`)}
		res, err := a.EnqueueAll(ctxT(t), batch)
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Status != spool.Accepted || res[1].Status != spool.Accepted || res[2].Status != spool.Accepted ||
			res[1].ID == 0 || res[2].ID == 0 || res[1].ID == res[2].ID {
			t.Fatalf("results %+v", res)
		}
		again, err := b.EnqueueAll(ctxT(t), batch)
		if err != nil {
			t.Fatal(err)
		}
		for i := range again {
			if again[i].Status != spool.Duplicate || again[i].ID != res[i].ID {
				t.Fatalf("again: %+v, first %+v", again, res)
			}
		}
		// One entry conflicts: the new ones are not stored.
		mixed := []spool.Entry{entry("subscriber/z", "evt_2", `{}`), entry("subscriber/x", "evt_1", `{"p":2}`)}
		got, err := b.EnqueueAll(ctxT(t), mixed)
		if err != nil {
			t.Fatal(err)
		}
		if got[0].Status != spool.Aborted || got[1].Status != spool.Conflict {
			t.Fatalf("mixed: %+v", got)
		}
		if st, err := a.Seen(ctxT(t), "subscriber/z", "evt_2", []byte(`{}`)); err != nil || st != spool.Accepted {
			t.Fatalf("an aborted entry was stored: %v, %v", st, err)
		}
		if st, err := a.Lookup(ctxT(t), "publish", "evt_1"); err != nil || st.ID != 0 {
			t.Fatalf("Lookup of a remembered id = %+v, %v", st, err)
		}
	})
}

// TestTooManyOpenBatchesAreRetried: with one open batch allowed per stream,
// concurrent enqueues are refused batches and retry until accepted. The
// refusal (10210) answers a batch's first message, which is sent without a
// reply subject, so the client sees it as an incomplete batch (10176) at the
// commit.
func TestTooManyOpenBatchesAreRetried(t *testing.T) {
	n := natstest.StartNode(t, natstest.WithAtomicBatchesPerStream(1))
	s := store{name: "single", servers: []string{n.URL()}, monitors: []string{n.MonitorURL()}, replicas: 1}
	a := s.open(t, "HG")
	var wg sync.WaitGroup
	for i, id := range ids(32, "evt") {
		wg.Go(func() {
			res, err := a.Enqueue(ctxT(t), entry(fmt.Sprintf("r%d", i%4), id, `{}`))
			if err != nil || res.Status != spool.Accepted {
				t.Errorf("%s: %v, %v", id, res.Status, err)
			}
		})
	}
	wg.Wait()
}

// TestABatchCutBeforeItsCommitBlocksNoRetry: a gateway that dies between
// sending an event's marker and its commit leaves an open batch on the
// server, which stores nothing of it: the sender's retry to another gateway
// is accepted, once, and delivered. (The enqueue has no other step: marker
// and payload are one atomic batch.)
func TestABatchCutBeforeItsCommitBlocksNoRetry(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a := s.open(t, "HG")
		_, msgs := batchOf(t, a, entry("r", "evt_1", `{}`))
		if len(msgs) < 2 {
			t.Fatalf("%d messages in the batch, want the marker and the payload", len(msgs))
		}
		dying, err := nats.Connect(strings.Join(s.servers, ","))
		if err != nil {
			t.Fatal(err)
		}
		first := msgs[0]
		first.Header.Set(hdrBatchID, "cut-batch")
		first.Header.Set(hdrBatchSeq, "1")
		if err := dying.PublishMsg(first); err != nil {
			t.Fatal(err)
		}
		if err := dying.Flush(); err != nil {
			t.Fatal(err)
		}
		dying.Close() // the gateway dies: no commit follows

		b := s.open(t, "HG")
		ch := make(chan delivery, 2)
		defer b.RegisterRoute("r", spool.Route{Deliverer: newRecorder("b", ch, nil)})()
		mustEnqueue(t, b, entry("r", "evt_1", `{}`), spool.Accepted)
		if d := next(t, ch); d.eventID != "evt_1" {
			t.Fatalf("delivered %+v", d)
		}
		mustEnqueue(t, a, entry("r", "evt_1", `{}`), spool.Duplicate)
		select {
		case d := <-ch:
			t.Fatalf("delivered twice: %+v", d)
		case <-time.After(time.Second):
		}
	})
}

// batchOf prepares e's enqueue on a: its entry and its batch's messages.
func batchOf(t *testing.T, a *Backend, e spool.Entry) ([]prepared, []*nats.Msg) {
	t.Helper()
	ps, err := a.prepare([]spool.Entry{e})
	if err != nil {
		t.Fatal(err)
	}
	return ps, a.messages([]*prepared{&ps[0]}, func(string) int64 { return 0 })
}

// TestLostAnswerIsOwnCommit: a batch whose commit landed but whose answer
// was lost (a timeout) is found by the retry's read as this call's own, and
// answered Accepted with its item, not Duplicate.
func TestLostAnswerIsOwnCommit(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a := s.open(t, "HG")
		ps, msgs := batchOf(t, a, entry("r", "evt_1", `{}`))
		id, ack, err := publishBatch(ctxT(t), a.nc, msgs) // the first try; its answer is dropped
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			own  []string
			want spool.Status
		}{
			{[]string{"another-try", id}, spool.Accepted},
			{[]string{"another-try"}, spool.Duplicate}, // another call's commit
		} {
			results := make([]spool.Result, 1)
			pending, done, err := a.resolve(ctxT(t), ps, results, tc.own)
			if err != nil || !done || len(pending) != 0 {
				t.Fatalf("resolve: %v, done %v, pending %d", err, done, len(pending))
			}
			if results[0].Status != tc.want || results[0].ID != ack.Seq {
				t.Fatalf("own %v: %+v, want %v of item %d", tc.own, results[0], tc.want, ack.Seq)
			}
		}
	})
}

// TestBatchRefusalsBackOff: while the stream's one open batch is held by
// another client, an enqueue's retries back off instead of sending its
// batch every few milliseconds, and end with its context.
func TestBatchRefusalsBackOff(t *testing.T) {
	n := natstest.StartNode(t, natstest.WithAtomicBatchesPerStream(1))
	s := store{name: "single", servers: []string{n.URL()}, monitors: []string{n.MonitorURL()}, replicas: 1}
	a := s.open(t, "HG")
	held := nats.NewMsg(a.n.queue("held"))
	held.Header.Set(hdrBatchID, "held-open")
	held.Header.Set(hdrBatchSeq, "1")
	if err := a.nc.PublishMsg(held); err != nil {
		t.Fatal(err)
	}
	sub, err := a.nc.SubscribeSync(a.n.queue("r"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctxT(t), 1500*time.Millisecond)
	defer cancel()
	if _, err := a.Enqueue(ctx, entry("r", "evt_1", `{}`)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("enqueue while the stream's batch is held: %v, want the context's deadline", err)
	}
	tries, _, err := sub.Pending()
	if err != nil {
		t.Fatal(err)
	}
	// 2 ms doubling to 500 ms is about 11 tries in 1.5 s.
	if tries < 2 || tries > 20 {
		t.Fatalf("%d tries in 1.5 s", tries)
	}
}

func TestRetryPauseGrowsToItsCap(t *testing.T) {
	for _, tt := range []struct {
		try      int
		min, max time.Duration
	}{
		{0, retryPauseMin / 2, retryPauseMin},
		{3, 4 * retryPauseMin, 8 * retryPauseMin},
		{20, retryPauseMax / 2, retryPauseMax},
		{1 << 30, retryPauseMax / 2, retryPauseMax},
	} {
		for range 100 {
			if d := retryPauseOf(tt.try); d < tt.min || d > tt.max {
				t.Fatalf("retryPauseOf(%d) = %v, want %v to %v", tt.try, d, tt.min, tt.max)
			}
		}
	}
}
