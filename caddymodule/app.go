// Package caddymodule is Hookgate's Caddy glue: the webhooks app, which owns
// the spool and its delivery workers; the webhook_ingest and webhook_publish
// handlers and the delivery client they share; the admin API under
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
	"path/filepath"
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

// spools holds one open spool per storage directory for the whole process.
// Caddy provisions a new configuration before it cleans up the old one, and
// Badger locks its directory, so configurations share the handle; its
// delivery workers start with the first configuration that uses the
// directory and stop when the last one is unloaded.
var spools = caddy.NewUsagePool()

// App is the webhooks app: it owns the spool that webhook_ingest routes write
// to and deliver from. It is optional; without a webhooks global option the
// defaults apply.
type App struct {
	// Storage is the spool's directory. Default: "webhooks" in Caddy's data
	// directory.
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
	// MinFreeDisk is the free space the spool leaves to others on the
	// storage's file system, on top of the reserve it keeps for Badger's
	// flushes and compactions; new events that would cut into it are
	// answered 503. Default 512 MiB.
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

	dir    string
	opts   spool.Options
	spool  *spool.Spool // set by Start
	opened atomic.Bool  // Start took a use of the spool (and set spool) that Cleanup gives back
	log    *zap.Logger
	ctx    caddy.Context
	grace  time.Duration // what deliveries in flight get at shutdown

	unverified *byteBudget   // the request bodies being read and verified
	routes     []appRoute    // this configuration's spool routes
	unregister []func()      // undoes Start's route registrations
	ready      chan struct{} // closed once Start has set spool
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

// routeStats returns the spool's routes as the admin API and the metrics
// show them: without the publisher's dedupe scope, which holds dedupe
// records and never an item, so that it is never listed as a route.
func routeStats(s *spool.Spool) []spool.RouteStats {
	return slices.DeleteFunc(s.Stats(), func(rs spool.RouteStats) bool { return rs.Route == publishScope })
}

// verifyOnly holds the verify-only routes of the loaded configurations, per
// spool: the spool keeps their dedupe records but has no route for them,
// and the admin API lists them with the others.
var verifyOnly = &routeNames{uses: map[*spool.Spool]map[string]int{}}

// routeNames is a set of route names per spool, with a use count per name:
// a reloaded configuration adds its names before the old one removes them.
type routeNames struct {
	mu   sync.Mutex
	uses map[*spool.Spool]map[string]int
}

// add adds name for sp and returns the function that removes this use.
func (rn *routeNames) add(sp *spool.Spool, name string) (remove func()) {
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
func (rn *routeNames) has(sp *spool.Spool, name string) bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.uses[sp][name] > 0
}

// list returns the names of sp.
func (rn *routeNames) list(sp *spool.Spool) []string {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return slices.Sorted(maps.Keys(rn.uses[sp]))
}

// spoolHandle lets the usage pool close a spool when its last user goes.
type spoolHandle struct{ *spool.Spool }

// Destruct closes the spool; deliveries in flight finish or release their
// leases within the spool's close timeout.
func (h spoolHandle) Destruct() error { return h.Close() }

// Provision derives the spool's options. The spool itself is opened (or
// shared with the running configuration) in Start, so that a configuration
// that is only validated (caddy validate, caddy adapt --validate) neither
// takes the storage's lock nor delivers anything.
func (a *App) Provision(ctx caddy.Context) error {
	a.log = ctx.Logger()
	a.ctx, a.grace = ctx, defaultGrace
	a.ready = make(chan struct{})
	a.unverified = &byteBudget{limit: a.MaxUnverifiedBytes}
	if a.unverified.limit <= 0 {
		a.unverified.limit = defaultMaxUnverifiedBytes
	}
	dir := a.Storage
	if dir == "" {
		dir = filepath.Join(caddy.AppDataDir(), "webhooks")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	a.dir = filepath.Clean(abs)
	a.opts = spool.Options{
		Dir:         a.dir,
		MinFreeDisk: a.MinFreeDisk,
		Limits: spool.Limits{
			MaxItems:         a.MaxItems,
			MaxBytes:         a.MaxBytes,
			MaxRecordBytes:   a.MaxRecordBytes,
			Workers:          a.Workers,
			DeadRetention:    time.Duration(a.DeadRetention),
			AttemptRetention: time.Duration(a.AttemptRetention),
		},
		// The spool outlives this configuration: log through the process's
		// logger, not this context's.
		Logger:  caddy.Log().Named("webhooks"),
		Observe: observeAttempt,
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

// Validate checks the limits.
func (a *App) Validate() error {
	if a.MaxItems < 0 || a.MaxBytes < 0 || a.MaxRecordBytes < 0 || a.MinFreeDisk < 0 || a.Workers < 0 || a.DeadRetention < 0 || a.AttemptRetention < 0 ||
		a.MaxUnverifiedBytes < 0 {
		return errors.New("webhooks: limits must not be negative")
	}
	return nil
}

// Start opens the spool, or shares the one an earlier configuration opened
// (whose limits stay until this configuration has fully started, see
// takeOver), and registers this configuration's routes. It takes the http
// app's grace period for the deliveries in flight at shutdown.
func (a *App) Start() error {
	if h, err := a.ctx.AppIfConfigured("http"); err == nil {
		if h, ok := h.(*caddyhttp.App); ok && h.GracePeriod > 0 {
			a.grace = time.Duration(h.GracePeriod)
		}
	}
	val, loaded, err := spools.LoadOrNew(a.dir, func() (caddy.Destructor, error) {
		s, err := spool.Open(a.opts)
		if err != nil {
			return nil, err
		}
		return spoolHandle{s}, nil
	})
	if err != nil {
		if errors.Is(err, spool.ErrInUse) {
			return err
		}
		return fmt.Errorf("webhooks storage %s: %w (if another Caddy process uses it, reload that one instead)", a.dir, err)
	}
	if loaded {
		a.log.Debug("sharing the open spool", zap.String("storage", a.dir))
	} else {
		a.log.Info("spool opened", zap.String("storage", a.dir))
	}
	a.spool = val.(spoolHandle).Spool
	a.opened.Store(true)
	for _, r := range a.routes {
		if r.route != nil {
			a.unregister = append(a.unregister, a.spool.RegisterRoute(r.name, *r.route))
		} else {
			a.unregister = append(a.unregister, verifyOnly.add(a.spool, r.name))
		}
	}
	close(a.ready)
	return nil
}

// Stop winds deliveries down if the process is exiting (see beginExit). A
// reload stops the old configuration too, but the spool and its workers
// carry on for the new one; the spool closes when the last configuration
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
		a.spool.StopDelivering(a.grace)
	}
}

// takeOver makes this configuration's limits and retentions the spool's. It
// runs on Caddy's "started" event, once every app of the configuration has
// started, so that a load that fails on the way never changes them.
func (a *App) takeOver() {
	if a.opened.Load() {
		a.spool.Reconfigure(a.opts.Limits)
		a.spool.SetMinFreeDisk(a.opts.MinFreeDisk)
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
// the spool.
func (a *App) Cleanup() error {
	for _, u := range a.unregister {
		u()
	}
	a.unregister = nil
	if !a.opened.Swap(false) { // requests of this configuration still finishing keep a.spool
		return nil
	}
	_, err := spools.Delete(a.dir)
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

// spoolFor returns the spool once the app has started.
func (a *App) spoolFor(ctx context.Context) (*spool.Spool, error) {
	select {
	case <-a.ready:
		return a.spool, nil
	default:
	}
	t := time.NewTimer(startWait)
	defer t.Stop()
	select {
	case <-a.ready:
		return a.spool, nil
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
