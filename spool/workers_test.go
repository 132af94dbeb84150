package spool

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
)

// TestWorkersCapHoldsAcrossRoutes: routes that each allow more deliveries
// than the spool's workers share the workers; each delivery that ends lets
// one more start.
func TestWorkersCapHoldsAcrossRoutes(t *testing.T) {
	const workers, routes, perRoute = 3, 4, 5
	s := openTest(t, Options{Limits: Limits{Workers: workers}, CloseTimeout: time.Second})
	g := newGate()
	for r := range routes {
		name := fmt.Sprint("route", r)
		s.RegisterRoute(name, Route{Deliverer: g, Concurrency: 2 * perRoute, Timeout: time.Minute})
		for i := range perRoute {
			mustEnqueue(t, s, entry(name, fmt.Sprint("evt_", i), "x"))
		}
	}
	next := func() {
		t.Helper()
		testwait.Recv(t, g.started, 10*time.Second, "no delivery started")
	}
	// settled makes the dispatcher look for due items twice more, so that
	// whatever it was going to start has started.
	settled := func() {
		t.Helper()
		p := s.passes.Load()
		eventually(t, 10*time.Second, "two more dispatch passes", func() bool {
			s.nudge()
			return s.passes.Load() >= p+2
		})
	}
	for range workers {
		next()
	}
	for remaining := routes*perRoute - workers; remaining >= 0; remaining-- {
		settled()
		select {
		case id := <-g.started:
			t.Fatalf("%s started with %d deliveries in flight already", id, workers)
		default:
		}
		if remaining > 0 {
			g.release <- struct{}{}
			next()
		}
	}
	close(g.release)
	eventually(t, 10*time.Second, "every item delivered", func() bool { items, _ := s.Usage(); return items == 0 })
	if _, peak := g.counts(); peak != workers {
		t.Fatalf("at most %d deliveries were in flight, want %d", peak, workers)
	}
}

// TestAWorkerDeliversOneItemAfterAnother: deliveries one after another run
// on one goroutine, which ends once the spool closes.
func TestAWorkerDeliversOneItemAfterAnother(t *testing.T) {
	s := openTest(t, Options{})
	ids := make(chan string, 10)
	s.RegisterRoute("r", Route{Concurrency: 1, Deliverer: DelivererFunc(func(ctx context.Context, d *Delivery) Outcome {
		ids <- goroutineID()
		return Outcome{StatusCode: 204}
	})})
	var first string
	for i := range 5 {
		mustEnqueue(t, s, entry("r", fmt.Sprint("evt_", i), "x"))
		id := testwait.Recv(t, ids, 10*time.Second, "not delivered")
		if i == 0 {
			first = id
		} else if id != first {
			t.Fatalf("delivery %d ran on goroutine %s, the first on %s", i, id, first)
		}
	}
	s.Close()
	eventually(t, 10*time.Second, "the worker to end", func() bool {
		return !strings.Contains(allStacks(), "spool.(*Spool).worker")
	})
}

// goroutineID is the calling goroutine's number, from its stack's header.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	return strings.Fields(string(buf))[1]
}

func allStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
