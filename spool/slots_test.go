package spool

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
)

// TestNewItemsGoStraightToAWorker: an item enqueued to an idle route is
// leased at once and handed to a worker with its message, not found by the
// dispatcher, which is held at the start of its next pass meanwhile; and
// the dispatcher, let go, passes over it while it is in flight.
func TestNewItemsGoStraightToAWorker(t *testing.T) {
	s := openTest(t, Options{})
	g := newGate()
	t.Cleanup(func() { close(g.release) })
	s.RegisterRoute("r", Route{Deliverer: g, Timeout: time.Minute})
	s.rewindMu.Lock() // every pass starts with it
	held := true
	defer func() {
		if held {
			s.rewindMu.Unlock()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Enqueue(ctx, entry("r", "evt_1", "x")); err != nil { // a queued item would need rewindMu too
		t.Fatal(err)
	}
	testwait.Recv(t, g.started, 10*time.Second, "not delivered while the dispatcher was held")
	s.rewindMu.Unlock()
	held = false
	for range 2 {
		p := s.passes.Load()
		eventually(t, 5*time.Second, "a dispatch pass", func() bool { s.nudge(); return s.passes.Load() > p })
	}
	select {
	case id := <-g.started:
		t.Fatalf("%s started again while in flight", id)
	default:
	}
	if rs := routeStats(s, "r"); rs.InFlight != 1 || rs.Queued != 0 {
		t.Fatalf("during the delivery: %s; want 1 in flight", statsString(rs))
	}
}

// TestSlotsHoldWhoeverLeases: enqueues that lease new items themselves and
// the dispatcher that leases the queued ones share the route's concurrency;
// a delivery that ends wakes the dispatcher for the items left waiting (not
// its idle timer, which is longer than this test may take).
func TestSlotsHoldWhoeverLeases(t *testing.T) {
	const concurrency, senders, each = 3, 8, 25
	s := openTest(t, Options{})
	var inFlight, peak, delivered atomic.Int64
	s.RegisterRoute("r", Route{Concurrency: concurrency, Deliverer: DelivererFunc(func(context.Context, *Delivery) Outcome {
		n := inFlight.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(time.Millisecond)
		inFlight.Add(-1)
		delivered.Add(1)
		return Outcome{StatusCode: 200}
	})})
	var wg sync.WaitGroup
	for i := range senders {
		wg.Go(func() {
			for j := range each {
				mustEnqueue(t, s, entry("r", fmt.Sprintf("evt_%d_%d", i, j), "x"))
			}
		})
	}
	wg.Wait()
	eventually(t, maxIdle/2, "every item delivered", func() bool { return delivered.Load() == senders*each })
	if p := peak.Load(); p > concurrency {
		t.Fatalf("%d deliveries in flight at once, over the route's %d", p, concurrency)
	}
	// The last outcomes are committed after their deliverer returned.
	eventually(t, 5*time.Second, "every outcome committed", func() bool {
		rs := routeStats(s, "r")
		return rs.Queued+rs.InFlight+rs.Scheduled == 0
	})
}

// TestADispatcherWithoutASlotIsWoken: when the dispatcher finds no free
// slot, the reservation itself records that it waits, so the next delivery
// to end wakes it, however soon that is; one that got a slot is not woken.
func TestADispatcherWithoutASlotIsWoken(t *testing.T) {
	var l slots
	if l.reserve(1, 1, 1, 4) != 1 { // a delivery in flight
		t.Fatal("no slot for the delivery")
	}
	if n := l.reserveOrWant(1, 8, 1, 4); n != 0 {
		t.Fatalf("the dispatcher got %d slots of a full route", n)
	}
	if !l.end(1) {
		t.Fatal("the delivery that ended did not wake the waiting dispatcher")
	}
	if n := l.reserveOrWant(1, 8, 1, 4); n != 1 {
		t.Fatalf("the dispatcher got %d slots, want 1", n)
	}
	if l.end(1) {
		t.Fatal("a dispatcher that got its slot was woken")
	}
}
