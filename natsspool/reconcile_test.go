package natsspool

import (
	"fmt"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
	"github.com/hookgate/hookgate/spool"
)

// TestACutPauseOrResumeIsReconciled: a Pause or Resume whose instance died
// between the bucket write and the consumer call is finished by another
// instance's Open, by a route loop starting, and by the periodic pass.
func TestACutPauseOrResumeIsReconciled(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		slow := func() *Backend { // one maintenance pass, at Open
			o := s.options("HG")
			o.presenceEvery = time.Hour
			return openWith(t, o)
		}
		a := slow()
		mustEnqueue(t, a, entry("r", "evt_1", `{}`), spool.Accepted) // makes the route's consumer
		// cut is a Pause or Resume without its consumer call.
		cut := func(pause bool) {
			t.Helper()
			if _, err := a.updateRoute(ctxT(t), "r", func(st *routeState) bool {
				st.PausedSinceMs = 0
				if pause {
					st.PausedSinceMs = time.Now().UnixMilli()
				}
				return true
			}); err != nil {
				t.Fatal(err)
			}
		}
		paused := func(want bool) {
			t.Helper()
			testwait.Until(t, wait, func() (bool, string) {
				c, err := a.js.Consumer(ctxT(t), a.n.stream(), a.n.consumer("r"))
				if err != nil {
					return false, err.Error()
				}
				return c.CachedInfo().Paused == want, fmt.Sprintf("consumer paused %v, want %v", c.CachedInfo().Paused, want)
			})
		}
		cut(true)
		paused(false)
		x := slow() // its Open pauses the consumer
		paused(true)
		cut(false)
		testwait.Until(t, wait, func() (bool, string) {
			return x.routes.get("r").PausedSinceMs == 0, "x has not seen the resume"
		})
		ch := make(chan delivery, 1)
		defer x.RegisterRoute("r", spool.Route{Deliverer: newRecorder("x", ch, nil)})() // resumes it
		if d := next(t, ch); d.eventID != "evt_1" {
			t.Fatalf("delivered %+v", d)
		}
		_ = s.openFast(t, "HG", DefaultRouteGrace) // pauses it within a pass
		cut(true)
		paused(true)
	})
}
