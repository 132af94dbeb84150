package natsspool

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/hookgate/hookgate/spool"
)

// maxSweep bounds the items one maintenance pass makes dead letters of, per
// route; the next pass goes on.
const maxSweep = 1000

// missingRoutes tracks, by this instance's clock, since when each route
// with items has had no live instance registering it.
type missingRoutes map[string]time.Time

// removedRoutes are the routes whose items must become dead letters: they
// have items, are not paused (as with Badger, a paused route's items wait),
// and no live instance has registered them for RouteGrace as this instance
// saw it. An instance's own clock starts when it first sees the route
// missing, so one that just started waits the whole grace, and a rolling
// restart, during which the other instances still register the route or an
// instance registers it again within the grace, kills nothing.
func (b *Backend) removedRoutes(withItems []string, missing missingRoutes) []string {
	now := time.Now()
	present := b.registeredAnywhere()
	var out []string
	for _, r := range withItems {
		if present[r] || b.routes.get(r).PausedSinceMs > 0 {
			delete(missing, r)
			continue
		}
		since, ok := missing[r]
		if !ok {
			missing[r] = now
			continue
		}
		if now.Sub(since) >= b.opts.RouteGrace {
			out = append(out, r)
		}
	}
	for r := range missing {
		if !slices.Contains(withItems, r) {
			delete(missing, r)
		}
	}
	return out
}

// sweep makes the due items of a removed route dead letters with reason
// spool.ReasonRouteRemoved (or the route's disable reason, as Badger), up
// to maxSweep, by the same kill as a delivery's, so an item is either still
// queued or a dead letter. It stops once the route is registered again.
// Items not due (waiting for a retry) or leased to an instance are swept by
// a later pass once they are handed out again.
func (b *Backend) sweep(ctx context.Context, route string) {
	cctx, cancel := b.ctx(ctx)
	cons, err := b.js.Consumer(cctx, b.n.stream(), b.n.consumer(route))
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("natsspool: removed route not swept", zap.String("route", route), zap.Error(err))
		}
		return
	}
	swept := 0
	for swept < maxSweep && ctx.Err() == nil {
		if b.registeredAnywhere()[route] {
			return
		}
		batch, err := cons.FetchNoWait(min(maxFetch, maxSweep-swept))
		if err != nil {
			if ctx.Err() == nil {
				b.log.Warn("natsspool: removed route not swept", zap.String("route", route), zap.Error(err))
			}
			return
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			if ctx.Err() != nil {
				_ = msg.Nak()
				continue
			}
			b.sweepOne(ctx, route, msg)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
			b.log.Warn("natsspool: removed route not swept", zap.String("route", route), zap.Error(err))
			return
		}
		if got == 0 {
			return
		}
		swept += got
	}
	if swept > 0 {
		b.log.Warn("natsspool: items of a route no gateway registers kept as dead letters",
			zap.String("route", route), zap.Int("items", swept), zap.Duration("grace", b.opts.RouteGrace))
	}
}

// sweepOne kills one item of a removed route, or finishes its kill if one
// was cut short.
func (b *Backend) sweepOne(ctx context.Context, route string, msg jetstream.Msg) {
	it, md, ok := b.received(msg)
	if !ok {
		return
	}
	kctx, cancel := context.WithTimeout(ctx, 2*b.opts.RequestTimeout)
	defer cancel()
	attempt, cut, err := b.redelivered(kctx, &it, md.NumDelivered)
	switch {
	case err != nil:
		_ = msg.NakWithDelay(skipDelay(md.NumDelivered))
		return
	case cut != nil:
		b.finishKill(kctx, msg, &it, *cut)
		return
	}
	d := deadInfo{reason: spool.ReasonRouteRemoved, lastErr: "route " + route + " is not configured", attempts: attempt - it.attemptBase - 1}
	if why := b.routes.get(route).Disabled; why != "" {
		d.reason, d.lastErr = why, "route "+route+" is disabled"
	}
	b.kill(kctx, msg, &it, d)
}
