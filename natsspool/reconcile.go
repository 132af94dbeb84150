package natsspool

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// reconcilePause makes a route's consumer's pause match the bucket, when
// this instance's copy of the bucket says they differ and a fresh read
// agrees: it finishes a Pause or Resume cut between its bucket write and
// its consumer call (a crash, a lost connection). Called by the maintenance
// passes (the first at Open) and when a route loop gets its consumer. A
// Pause and Resume racing a reconcile can leave the consumer wrong until
// the next pass corrects it.
func (b *Backend) reconcilePause(ctx context.Context, route string, consumerPaused bool) {
	if (b.routes.get(route).PausedSinceMs > 0) == consumerPaused {
		return
	}
	cctx, cancel := b.ctx(ctx)
	defer cancel()
	var s routeState
	e, err := b.kv.Get(cctx, b.n.routeKey(route))
	switch {
	case err == nil:
		err = json.Unmarshal(e.Value(), &s)
	case errors.Is(err, jetstream.ErrKeyNotFound):
		err = nil
	}
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("natsspool: route state not read", zap.String("route", route), zap.Error(err))
		}
		return
	}
	paused := s.PausedSinceMs > 0
	if paused == consumerPaused {
		return
	}
	if paused {
		_, err = b.js.PauseConsumer(cctx, b.n.stream(), b.n.consumer(route), farFuture)
	} else {
		_, err = b.js.ResumeConsumer(cctx, b.n.stream(), b.n.consumer(route))
	}
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("natsspool: route consumer's pause not reconciled", zap.String("route", route), zap.Error(err))
		}
		return
	}
	b.log.Info("natsspool: route consumer's pause reconciled with the bucket", zap.String("route", route), zap.Bool("paused", paused))
	b.cache.invalidate()
}
