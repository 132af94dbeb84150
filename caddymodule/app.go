// Package caddymodule is Hookgate's Caddy glue: the webhooks app, which owns
// the store of events (a spool.Backend, opened by a module of the
// webhooks.backends namespace: Badger by default) and its delivery workers;
// the webhook_ingest and webhook_publish handlers and the delivery client they share; the admin API under
// /webhooks/ (its types are package adminapi's); the caddy_webhook_*
// metrics; the Caddyfile syntax; and the caddy webhook commands (the
// operator commands are package webhookcli's). The work itself is done by
// the verifier and spool packages; docs/architecture.md shows how they fit
// together.
package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/hookgate/hookgate/spool"
)

func init() {
	caddy.RegisterModule(new(App))
}

// stores holds one open store per name (spool.Backend.Name) for the whole
// process. Caddy provisions a new configuration before it cleans up the old
// one, and a store is opened once per process (Badger locks its directory),
// so configurations share the handle; its delivery workers start with the
// first configuration that uses the store and stop when the last one is
// unloaded.
var stores = caddy.NewUsagePool()

// App is the webhooks app: it owns the store that webhook_ingest and
// webhook_publish routes write to and deliver from. It is optional; without a
// webhooks global option the defaults apply.
type App struct {
	// BackendRaw is the store of events: a module of the webhooks.backends
	// namespace, named by its "backend" member. Default: badger, with
	// Storage and MinFreeDisk.
	BackendRaw json.RawMessage `json:"backend,omitempty" caddy:"namespace=webhooks.backends inline_key=backend"`
	// Storage is a shorthand for the badger backend's storage, when there
	// is no BackendRaw.
	Storage string `json:"storage,omitempty"`
	// MaxItems bounds the stored items, dead letters included. Default 1,000,000.
	MaxItems int64 `json:"max_items,omitempty"`
	// MaxBytes bounds the stored message bytes. Default 1 GiB.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// MaxRecordBytes bounds the dedupe records (kept for each route's
	// dedupe window) and attempt records (kept for attempt_retention),
	// which outlive their events: the oldest attempt records are deleted to
	// make room, and new events are answered 503 once the dedupe records
	// fill it. Default 1 GiB.
	MaxRecordBytes int64 `json:"max_record_bytes,omitempty"`
	// MinFreeDisk is a shorthand for the badger backend's min_free_disk,
	// when there is no BackendRaw.
	MinFreeDisk int64 `json:"min_free_disk,omitempty"`
	// Workers bounds the deliveries in flight over all routes. Default 64.
	Workers int `json:"workers,omitempty"`
	// DeadRetention is how long dead letters are kept. Default 7 days.
	DeadRetention caddy.Duration `json:"dead_retention,omitempty"`
	// AttemptRetention is how long the record of each delivery attempt is
	// kept. Default 7 days.
	AttemptRetention caddy.Duration `json:"attempt_retention,omitempty"`
	// MaxUnverifiedBytes bounds the bytes that request bodies hold while
	// they are read and verified, over all handlers; past it requests are
	// answered 503. It must be above every handler's max_body. Default 64 MiB.
	MaxUnverifiedBytes int64 `json:"max_unverified_bytes,omitempty"`

	backend BackendModule
	limits  spool.Limits
	store   spool.Backend // set by Start
	opened  atomic.Bool   // Start took a use of the store (and set store) that Cleanup gives back
	log     *zap.Logger
	ctx     caddy.Context
	grace   time.Duration // what deliveries in flight get at shutdown

	unverified *byteBudget   // the request bodies being read and verified
	routes     []appRoute    // this configuration's spool routes
	unregister []func()      // undoes Start's route registrations
	ready      chan struct{} // closed once Start has set store
}

// appRoute is a spool route of the configuration's handlers.
type appRoute struct {
	name     string
	settings []byte       // the handler's settings, as JSON
	route    *spool.Route // nil: dedupe only
}

// defaultGrace is what deliveries in flight get at shutdown when the http
// app's grace period is eternal or unset.
const defaultGrace = 10 * time.Second

// defaultMaxUnverifiedBytes is the default of MaxUnverifiedBytes.
const defaultMaxUnverifiedBytes = 64 << 20

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "webhooks",
		New: func() caddy.Module { return new(App) },
	}
}

// routeStats returns the store's routes as the admin API and the metrics
// show them: without the publisher's dedupe scope, which holds dedupe
// records and never an item, so that it is never listed as a route.
func routeStats(s spool.Backend) []spool.RouteStats {
	return slices.DeleteFunc(s.Stats(), func(rs spool.RouteStats) bool { return rs.Route == publishScope })
}

// verifyOnly holds the verify-only routes of the loaded configurations, per
// store (by its name): the store keeps their dedupe records but has no
// route for them, and the admin API lists them with the others.
var verifyOnly = &routeNames{uses: map[string]map[string]int{}}

// routeNames is a set of route names per store name, with a use count per
// route name: a reloaded configuration adds its names before the old one
// removes them.
type routeNames struct {
	mu   sync.Mutex
	uses map[string]map[string]int
}

// add adds name for the store sp and returns the function that removes
// this use.
func (rn *routeNames) add(sp, name string) (remove func()) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if rn.uses[sp] == nil {
		rn.uses[sp] = map[string]int{}
	}
	rn.uses[sp][name]++
	var once sync.Once
	return func() {
		once.Do(func() {
			rn.mu.Lock()
			defer rn.mu.Unlock()
			if rn.uses[sp][name]--; rn.uses[sp][name] == 0 {
				delete(rn.uses[sp], name)
			}
			if len(rn.uses[sp]) == 0 {
				delete(rn.uses, sp)
			}
		})
	}
}

// has reports whether name is in the set of sp.
func (rn *routeNames) has(sp, name string) bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.uses[sp][name] > 0
}

// list returns the names of sp.
func (rn *routeNames) list(sp string) []string {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return slices.Sorted(maps.Keys(rn.uses[sp]))
}

// storeHandle lets the usage pool close a store when its last user goes.
type storeHandle struct{ spool.Backend }

// Destruct closes the store; deliveries in flight finish or release their
// leases within its close timeout.
func (h storeHandle) Destruct() error { return h.Close() }

// Provision loads the backend module and derives the limits. The store
// itself is opened (or shared with the running configuration) in Start, so
// that a configuration that is only validated (caddy validate, caddy adapt
// --validate) neither takes the storage's lock nor delivers anything.
func (a *App) Provision(ctx caddy.Context) error {
	a.log = ctx.Logger()
	a.ctx, a.grace = ctx, defaultGrace
	a.ready = make(chan struct{})
	a.unverified = &byteBudget{limit: a.MaxUnverifiedBytes}
	if a.unverified.limit <= 0 {
		a.unverified.limit = defaultMaxUnverifiedBytes
	}
	var err error
	if a.backend, err = a.loadBackend(ctx); err != nil {
		return err
	}
	a.limits = spool.Limits{
		MaxItems:         a.MaxItems,
		MaxBytes:         a.MaxBytes,
		MaxRecordBytes:   a.MaxRecordBytes,
		Workers:          a.Workers,
		DeadRetention:    time.Duration(a.DeadRetention),
		AttemptRetention: time.Duration(a.AttemptRetention),
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("webhooks: metrics: %w", err)
	}
	ev, err := ctx.App("events")
	if err != nil {
		return err
	}
	for _, name := range []string{"started", "stopping"} {
		if err := ev.(*caddyevents.App).On(name, lifecycle{a}); err != nil {
			return fmt.Errorf("webhooks: %w", err)
		}
	}
	return nil
}

// loadBackend loads the backend module, or without one the badger backend
// of the shorthand.
func (a *App) loadBackend(ctx caddy.Context) (BackendModule, error) {
	if err := a.checkShorthand(); err != nil {
		return nil, err
	}
	if a.BackendRaw == nil {
		b := &BadgerBackend{Storage: a.Storage, MinFreeDisk: a.MinFreeDisk}
		if err := b.Provision(ctx); err != nil {
			return nil, err
		}
		return b, b.Validate()
	}
	mod, err := ctx.LoadModule(a, "BackendRaw")
	if err != nil {
		return nil, fmt.Errorf("webhooks: loading the backend: %w", err)
	}
	b, ok := mod.(BackendModule)
	if !ok {
		return nil, fmt.Errorf("webhooks: module %T is not a backend", mod)
	}
	return b, nil
}

// checkShorthand refuses Badger's shorthand next to a backend.
func (a *App) checkShorthand() error {
	if a.BackendRaw != nil && (a.Storage != "" || a.MinFreeDisk != 0) {
		return errShorthand
	}
	return nil
}

// Validate checks the limits.
func (a *App) Validate() error {
	if a.MaxItems < 0 || a.MaxBytes < 0 || a.MaxRecordBytes < 0 || a.Workers < 0 || a.DeadRetention < 0 || a.AttemptRetention < 0 ||
		a.MaxUnverifiedBytes < 0 {
		return errors.New("webhooks: limits must not be negative")
	}
	return nil
}

// Start opens the store, or shares the one of the same name that an earlier
// configuration opened (whose limits stay until this configuration has
// fully started, see takeOver), and registers this configuration's routes.
// It takes the http app's grace period for the deliveries in flight at
// shutdown.
func (a *App) Start() error {
	if h, err := a.ctx.AppIfConfigured("http"); err == nil {
		if h, ok := h.(*caddyhttp.App); ok && h.GracePeriod > 0 {
			a.grace = time.Duration(h.GracePeriod)
		}
	}
	name := a.backend.StoreName()
	val, loaded, err := stores.LoadOrNew(name, func() (caddy.Destructor, error) {
		s, err := a.backend.OpenStore(StoreConfig{
			Limits: a.limits,
			// The store outlives this configuration: log through the
			// process's logger, not this context's.
			Logger:  caddy.Log().Named("webhooks"),
			Observe: observeAttempt,
		})
		if err != nil {
			return nil, err
		}
		return storeHandle{s}, nil
	})
	if err != nil {
		return err
	}
	if loaded {
		a.log.Debug("sharing the open store", zap.String("storage", name))
	} else {
		a.log.Info("store opened", zap.String("storage", name))
	}
	a.store = val.(storeHandle).Backend
	a.opened.Store(true)
	for _, r := range a.routes {
		if r.route != nil {
			a.unregister = append(a.unregister, a.store.RegisterRoute(r.name, *r.route))
		} else {
			a.unregister = append(a.unregister, verifyOnly.add(a.store.Name(), r.name))
		}
	}
	close(a.ready)
	return nil
}

// Stop winds deliveries down if the process is exiting (see beginExit). A
// reload stops the old configuration too, but the store and its workers
// carry on for the new one; the store closes when the last configuration
// using it is cleaned up.
func (a *App) Stop() error {
	a.beginExit()
	return nil
}

// beginExit, when the process is exiting, stops new deliveries and gives
// those in flight the grace period, so that they wind down in parallel with
// the HTTP servers' grace; events still arriving meanwhile are stored. It
// runs on Caddy's "stopping" event, before any app stops, and again from
// Stop in case the events app is not there.
func (a *App) beginExit() {
	if caddy.Exiting() && a.opened.Load() {
		a.store.StopDelivering(a.grace)
	}
}

// takeOver makes this configuration's limits, retentions and backend
// settings the store's. It runs on Caddy's "started" event, once every app
// of the configuration has started, so that a load that fails on the way
// never changes them.
func (a *App) takeOver() {
	if a.opened.Load() {
		a.store.Reconfigure(a.limits)
		if r, ok := a.backend.(StoreReconfigurer); ok {
			r.ReconfigureStore(a.store)
		}
	}
}

// lifecycle runs takeOver on Caddy's "started" event and beginExit on its
// "stopping" event.
type lifecycle struct{ a *App }

// Handle implements caddyevents.Handler.
func (h lifecycle) Handle(_ context.Context, e caddy.Event) error {
	switch e.Name() {
	case "started":
		h.a.takeOver()
	case "stopping":
		h.a.beginExit()
	}
	return nil
}

// Cleanup unregisters this configuration's routes (a newer configuration's
// registrations of the same names stay in force) and releases its use of
// the store.
func (a *App) Cleanup() error {
	for _, u := range a.unregister {
		u()
	}
	a.unregister = nil
	if !a.opened.Swap(false) { // requests of this configuration still finishing keep a.store
		return nil
	}
	_, err := stores.Delete(a.backend.StoreName())
	return err
}

// addRoute records a spool route of this configuration's handlers, to be
// registered with the spool when the app starts; route is nil for a route
// that only dedupes (verify-only mode). Handlers that share a name share its
// queue, dedupe records and forward target, so they must agree on the
// settings: the same handler imported twice is fine, two different ones are
// a configuration error (the last registered would take the other's events).
func (a *App) addRoute(name string, settings any, route *spool.Route) error {
	js, err := json.Marshal(settings)
	if err != nil {
		return err
	}
	for _, r := range a.routes {
		if r.name != name {
			continue
		}
		if !bytes.Equal(r.settings, js) {
			return fmt.Errorf("route %q is configured twice with different settings; give each its own name", name)
		}
		return nil
	}
	a.routes = append(a.routes, appRoute{name: name, settings: js, route: route})
	return nil
}

// checkMaxBody refuses a handler's max_body that a body could not be read
// up to within max_unverified_bytes.
func (a *App) checkMaxBody(maxBody int64) error {
	if maxBody >= a.unverified.limit {
		return fmt.Errorf("max_body %d must be below the webhooks max_unverified_bytes %d", maxBody, a.unverified.limit)
	}
	return nil
}

// errNotStarted is what a request gets when the webhooks app has not
// started within startWait of its arrival.
var errNotStarted = errors.New("webhooks: the spool is not open yet")

// startWait bounds how long a request waits for the app to start: the HTTP
// servers may start before it, and opening a large spool takes a moment.
const startWait = 10 * time.Second

// storeFor returns the store once the app has started.
func (a *App) storeFor(ctx context.Context) (spool.Backend, error) {
	select {
	case <-a.ready:
		return a.store, nil
	default:
	}
	t := time.NewTimer(startWait)
	defer t.Stop()
	select {
	case <-a.ready:
		return a.store, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-a.ctx.Done(): // this configuration failed to start
		return nil, errNotStarted
	case <-t.C:
		return nil, errNotStarted
	}
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
