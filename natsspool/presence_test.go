package natsspool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/hookgate/hookgate/internal/testwait"
	"github.com/hookgate/hookgate/spool"
)

// openFast opens a backend whose presence and maintenance run every 100
// and 500 ms, with a route grace of grace.
func (s store) openFast(t *testing.T, prefix string, grace time.Duration) *Backend {
	t.Helper()
	o := s.options(prefix)
	o.Logger = zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	o.RouteGrace = grace
	o.presenceEvery = 100 * time.Millisecond
	return openWith(t, o)
}

// busy is a route of one slot whose first delivery holds it until release
// closes, so that its other items stay queued, free for any instance to
// fetch.
func busy(started chan<- string, release <-chan struct{}) spool.Route {
	return spool.Route{Concurrency: 1, Timeout: time.Minute,
		Deliverer: spool.DelivererFunc(func(ctx context.Context, d *spool.Delivery) spool.Outcome {
			started <- d.EventID
			select {
			case <-release:
			case <-ctx.Done():
			}
			return spool.Outcome{StatusCode: http.StatusOK}
		})}
}

// routeStats waits until b's stats of route have want's Queued, InFlight
// and Scheduled.
func routeStats(t *testing.T, b *Backend, route string, want spool.RouteStats) {
	t.Helper()
	testwait.Until(t, wait, func() (bool, string) {
		b.cache.invalidate()
		for _, r := range b.Stats() {
			if r.Route == route {
				return r.InFlight == want.InFlight && r.Queued == want.Queued && r.Scheduled == want.Scheduled,
					fmt.Sprintf("%+v, want %d queued, %d in flight, %d scheduled", r, want.Queued, want.InFlight, want.Scheduled)
			}
		}
		return false, "no stats for " + route
	})
}

func TestRemovedRouteItemsBecomeDeadLettersAfterTheGrace(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		const grace = time.Second
		a, b := s.openFast(t, "HG", grace), s.openFast(t, "HG", grace)
		// Only b registers "kept", and holds its one slot, so its second
		// item stays queued: a must see b's registration and leave it.
		started, release := make(chan string, 2), make(chan struct{})
		defer b.RegisterRoute("kept", busy(started, release))()
		defer close(release)
		mustEnqueue(t, a, entry("kept", "evt_k1", `{}`), spool.Accepted)
		if id := <-started; id != "evt_k1" {
			t.Fatalf("started %s", id)
		}
		mustEnqueue(t, a, entry("kept", "evt_k2", `{}`), spool.Accepted)
		mustEnqueue(t, a, entry("gone", "evt_orphan", `{}`), spool.Accepted)
		var dead []spool.DeadLetter
		testwait.Until(t, wait, func() (bool, string) {
			var err error
			dead, _, err = a.ListDead(ctxT(t), spool.DeadFilter{}, 0, 10)
			return err == nil && len(dead) > 0, fmt.Sprintf("dead letters %+v, %v", dead, err)
		})
		if d := dead[0]; len(dead) != 1 || d.EventID != "evt_orphan" || d.Route != "gone" || d.Reason != spool.ReasonRouteRemoved || d.Attempts != 0 {
			t.Fatalf("dead letters %+v, want evt_orphan of route gone, route_removed, no attempts", dead)
		}
		// Several maintenance passes of both instances later, "kept" has
		// no dead letter.
		time.Sleep(3 * grace)
		if n, _, err := b.ListDead(ctxT(t), spool.DeadFilter{Route: "kept"}, 0, 10); err != nil || len(n) != 0 {
			t.Fatalf("kept: dead letters %+v (%v)", n, err)
		}
		// A route registered again within the grace gets its items.
		mustEnqueue(t, a, entry("late", "evt_late", `{}`), spool.Accepted)
		time.Sleep(grace / 3)
		ch := make(chan delivery, 1)
		defer b.RegisterRoute("late", spool.Route{Deliverer: newRecorder("b", ch, nil)})()
		if d := next(t, ch); d.eventID != "evt_late" {
			t.Fatalf("delivered %+v", d)
		}
		if n, _, err := a.ListDead(ctxT(t), spool.DeadFilter{Route: "late"}, 0, 10); err != nil || len(n) != 0 {
			t.Fatalf("late: dead letters %+v (%v)", n, err)
		}
	})
}

// TestInFlightCountsEveryInstance: a route delivered by b only shows its
// deliveries in flight on a too, not as scheduled retries, and they leave
// the count once they end.
func TestInFlightCountsEveryInstance(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		a, b := s.openFast(t, "HG", DefaultRouteGrace), s.openFast(t, "HG", DefaultRouteGrace)
		started, release := make(chan string, 4), make(chan struct{})
		route := busy(started, release)
		route.Concurrency = 2
		defer b.RegisterRoute("r", route)()
		for _, id := range ids(3, "evt") {
			mustEnqueue(t, a, entry("r", id, `{}`), spool.Accepted)
		}
		<-started
		<-started
		routeStats(t, a, "r", spool.RouteStats{Queued: 1, InFlight: 2})
		routeStats(t, b, "r", spool.RouteStats{Queued: 1, InFlight: 2})
		close(release)
		routeStats(t, a, "r", spool.RouteStats{})
	})
}

// TestACrashedInstanceExpires: the routes and deliveries of an instance
// that stopped without closing count until its presence expires; then its
// route's queued items become dead letters after the grace, its delivery
// counts as scheduled until its lease ends, and its record is deleted.
func TestACrashedInstanceExpires(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		const grace = time.Second
		a, b := s.openFast(t, "HG", grace), s.openFast(t, "HG", grace)
		started, release := make(chan string, 2), make(chan struct{})
		defer close(release)
		b.RegisterRoute("x", busy(started, release))
		mustEnqueue(t, a, entry("x", "evt_1", `{}`), spool.Accepted)
		<-started
		mustEnqueue(t, a, entry("x", "evt_2", `{}`), spool.Accepted)
		routeStats(t, a, "x", spool.RouteStats{Queued: 1, InFlight: 1})
		b.presence.stopAndWait() // as kill -9: b's record stays, never refreshed
		b.nc.Close()
		testwait.Until(t, wait, func() (bool, string) {
			dead, _, err := a.ListDead(ctxT(t), spool.DeadFilter{Route: "x"}, 0, 10)
			return err == nil && len(dead) == 1 && dead[0].EventID == "evt_2" && dead[0].Reason == spool.ReasonRouteRemoved,
				fmt.Sprintf("dead letters %+v, %v", dead, err)
		})
		routeStats(t, a, "x", spool.RouteStats{Scheduled: 1}) // evt_1, until its lease ends
		testwait.Until(t, wait, func() (bool, string) {
			_, err := a.kv.Get(ctxT(t), b.presenceKey())
			return errors.Is(err, jetstream.ErrKeyNotFound), fmt.Sprintf("b's record: %v", err)
		})
	})
}
