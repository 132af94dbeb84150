package natsspool

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// maintenanceEvery is how many presence intervals apart the maintenance
// passes are (10 s by default).
const maintenanceEvery = 5

// maintenanceLoop runs a pass at once and then every maintenanceEvery
// presence intervals until ctx ends (when deliveries stop).
func (b *Backend) maintenanceLoop(ctx context.Context) {
	t := time.NewTicker(maintenanceEvery * b.opts.presenceEvery)
	defer t.Stop()
	missing := missingRoutes{}
	for {
		b.maintain(ctx, missing)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// maintain reads every route consumer, makes its pause match the bucket,
// and makes the items of removed routes dead letters.
func (b *Backend) maintain(ctx context.Context, missing missingRoutes) {
	lctx, cancel := context.WithTimeout(ctx, 2*b.opts.RequestTimeout)
	var withItems []string
	paused := map[string]bool{}
	lister := b.queue.ListConsumers(lctx)
	for ci := range lister.Info() {
		route, ok := routeOfConsumer(ci.Name)
		if !ok {
			continue
		}
		paused[route] = ci.Paused
		if ci.NumPending+uint64(ci.NumAckPending) > 0 {
			withItems = append(withItems, route)
		}
	}
	err := lister.Err()
	cancel()
	if err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		if ctx.Err() == nil {
			b.log.Warn("natsspool: route consumers not read", zap.Error(err))
		}
		return
	}
	for route, p := range paused {
		b.reconcilePause(ctx, route, p)
	}
	for _, route := range b.removedRoutes(withItems, missing) {
		b.sweep(ctx, route)
	}
}
