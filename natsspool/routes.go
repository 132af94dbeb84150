package natsspool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// routeState is a route's entry in the KV bucket, shared by every instance.
type routeState struct {
	PausedSinceMs int64  `json:"paused_since_ms,omitempty"` // 0 while not paused
	PausedTotalMs int64  `json:"paused_total_ms,omitempty"` // paused time before PausedSinceMs
	Disabled      string `json:"disabled,omitempty"`        // why the route is disabled
}

// pausedMs is the route's paused time up to nowMs.
func (s routeState) pausedMs(nowMs int64) int64 {
	if s.PausedSinceMs > 0 {
		return s.PausedTotalMs + max(nowMs-s.PausedSinceMs, 0)
	}
	return s.PausedTotalMs
}

// routeStates is this instance's copy of the bucket, kept by a watcher.
type routeStates struct {
	mu sync.RWMutex
	m  map[string]routeState // by route name
}

func (r *routeStates) get(route string) routeState {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.m[route]
}

func (r *routeStates) all() map[string]routeState {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[string]routeState, len(r.m))
	for k, v := range r.m {
		out[k] = v
	}
	return out
}

func (r *routeStates) set(route string, s routeState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[route] = s
}

// watchRoutes loads the bucket and keeps the copy current until Close.
func (b *Backend) watchRoutes(ctx context.Context) error {
	b.routes = &routeStates{m: map[string]routeState{}}
	wctx, cancel := context.WithCancel(context.Background())
	b.watchStop = cancel
	w, err := b.kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return fmt.Errorf("natsspool: watch %s: %w", b.n.bucket(), err)
	}
	loaded := make(chan struct{})
	go func() {
		defer close(b.watchDone)
		defer w.Stop()
		first := true
		for e := range w.Updates() {
			if e == nil { // the initial values are in
				if first {
					close(loaded)
					first = false
				}
				continue
			}
			b.applyRouteEntry(e)
		}
		if first {
			close(loaded)
		}
	}()
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.opts.RequestTimeout):
		return fmt.Errorf("natsspool: %s not loaded within %v", b.n.bucket(), b.opts.RequestTimeout)
	}
}

func (b *Backend) applyRouteEntry(e jetstream.KeyValueEntry) {
	if id, ok := presenceID(e.Key()); ok {
		b.applyPresence(id, e)
		return
	}
	t, ok := strings.CutPrefix(e.Key(), "r.")
	if !ok {
		return
	}
	route, ok := dec(t)
	if !ok {
		return
	}
	var s routeState
	if e.Operation() == jetstream.KeyValuePut {
		if err := json.Unmarshal(e.Value(), &s); err != nil {
			b.log.Error("natsspool: bad route state", zap.String("route", route), zap.Error(err))
			return
		}
	}
	b.routes.set(route, s)
	b.cache.invalidate()
}

// updateRoute changes a route's state in the bucket by compare-and-set, so
// that instances changing it at once do not lose each other's change, and
// applies the result to this instance's copy at once.
func (b *Backend) updateRoute(ctx context.Context, route string, change func(*routeState) bool) (routeState, error) {
	key := b.n.routeKey(route)
	for {
		if err := ctx.Err(); err != nil {
			return routeState{}, err
		}
		cctx, cancel := b.ctx(ctx)
		var s routeState
		var rev uint64
		e, err := b.kv.Get(cctx, key)
		switch {
		case err == nil:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &s); err != nil {
				cancel()
				return s, err
			}
		case errors.Is(err, jetstream.ErrKeyNotFound):
		default:
			cancel()
			return s, err
		}
		if !change(&s) {
			cancel()
			b.routes.set(route, s)
			return s, nil
		}
		v, _ := json.Marshal(s)
		if rev == 0 {
			_, err = b.kv.Create(cctx, key, v)
		} else {
			_, err = b.kv.Update(cctx, key, v, rev)
		}
		cancel()
		if err == nil {
			b.routes.set(route, s)
			b.cache.invalidate()
			return s, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && errCode(err) != codeWrongLastSeq && errCode(err) != codeWrongLastSeqInFlight {
			return s, err
		}
	}
}

// farFuture is the pause deadline of a route paused until Resume.
var farFuture = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)

// Pause holds a route's deliveries on every instance until Resume: the
// bucket records it (for max_age's pause rule and Stats) and the route's
// consumer is paused on the server, so no instance is handed its items
// once Pause returns.
func (b *Backend) Pause(ctx context.Context, route string) error {
	if _, err := b.updateRoute(ctx, route, func(s *routeState) bool {
		if s.PausedSinceMs > 0 {
			return false
		}
		s.PausedSinceMs = time.Now().UnixMilli()
		return true
	}); err != nil {
		return err
	}
	return b.applyPause(ctx, route)
}

// Resume releases a paused route.
func (b *Backend) Resume(ctx context.Context, route string) error {
	if _, err := b.updateRoute(ctx, route, func(s *routeState) bool {
		if s.PausedSinceMs == 0 {
			return false
		}
		s.PausedTotalMs = s.pausedMs(time.Now().UnixMilli())
		s.PausedSinceMs = 0
		return true
	}); err != nil {
		return err
	}
	return b.applyPause(ctx, route)
}

// applyPause makes the route's consumer's pause match the bucket, and
// returns once the consumer's leader has applied it (awaitPause).
func (b *Backend) applyPause(ctx context.Context, route string) error {
	if err := b.ensureConsumer(ctx, route, 0); err != nil {
		return err
	}
	cctx, cancel := b.ctx(ctx)
	defer cancel()
	var err error
	paused := b.routes.get(route).PausedSinceMs > 0
	if paused {
		_, err = b.js.PauseConsumer(cctx, b.n.stream(), b.n.consumer(route), farFuture)
	} else {
		_, err = b.js.ResumeConsumer(cctx, b.n.stream(), b.n.consumer(route))
	}
	if err == nil {
		err = b.awaitPause(ctx, route, paused)
	}
	b.cache.invalidate()
	return err
}

// pausePoll is how often awaitPause asks the consumer's leader.
const pausePoll = 10 * time.Millisecond

// awaitPause waits, within the request timeout, until the route's consumer
// reports paused as it should be, or the bucket no longer wants it (a later
// Pause or Resume applies its own). On a cluster PauseConsumer answers once
// the change is proposed, and the consumer's leader, which alone answers
// its info, goes on handing out messages until it applies it: an item
// enqueued after Pause returned would be fetched, given back by deliver and
// held by the paused consumer as pending an ack, counted as scheduled.
func (b *Backend) awaitPause(ctx context.Context, route string, paused bool) error {
	cctx, cancel := b.ctx(ctx)
	defer cancel()
	for {
		c, err := b.js.Consumer(cctx, b.n.stream(), b.n.consumer(route))
		if err == nil && c.CachedInfo().Paused == paused {
			return nil
		}
		if (b.routes.get(route).PausedSinceMs > 0) != paused {
			return nil
		}
		select {
		case <-cctx.Done():
			if err == nil {
				err = cctx.Err()
			}
			return fmt.Errorf("natsspool: route %q consumer's pause (%v) not applied by its leader: %w", route, paused, err)
		case <-time.After(pausePoll):
		}
	}
}

// Disable makes a route's items dead letters with reason as they come due,
// on every instance, until Enable.
func (b *Backend) Disable(ctx context.Context, route, reason string) error {
	_, err := b.updateRoute(ctx, route, func(s *routeState) bool {
		if s.Disabled == reason {
			return false
		}
		s.Disabled = reason
		return true
	})
	return err
}

// Enable ends a route's Disable.
func (b *Backend) Enable(ctx context.Context, route string) error {
	_, err := b.updateRoute(ctx, route, func(s *routeState) bool {
		if s.Disabled == "" {
			return false
		}
		s.Disabled = ""
		return true
	})
	return err
}
