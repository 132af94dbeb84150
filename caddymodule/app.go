// Package caddymodule is Hookgate's Caddy glue: the webhooks app, which owns
// the spool and its delivery workers, the webhook_ingest handler, their
// Caddyfile syntax and the caddy webhook commands. The work itself is done by
// the verifier and spool packages.
package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/hookgate/hookgate/spool"
)

func init() {
	caddy.RegisterModule(App{})
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
	// MinFreeDisk is the free space to keep on the storage's file system;
	// below it new events are answered 503. Default 512 MiB.
	MinFreeDisk int64 `json:"min_free_disk,omitempty"`
	// Workers bounds the deliveries in flight over all routes. Default 64.
	Workers int `json:"workers,omitempty"`
	// DeadRetention is how long dead letters are kept. Default 7 days.
	DeadRetention caddy.Duration `json:"dead_retention,omitempty"`
	// AttemptRetention is how long the record of each delivery attempt is
	// kept. Default 7 days.
	AttemptRetention caddy.Duration `json:"attempt_retention,omitempty"`

	dir   string
	opts  spool.Options
	spool *spool.Spool
	log   *zap.Logger
	ctx   caddy.Context
	grace time.Duration // what deliveries in flight get at shutdown

	// routes maps the spool route names this configuration's handlers use to
	// their settings (JSON): one name, one route.
	routes map[string][]byte
}

// defaultGrace is what deliveries in flight get at shutdown when the http
// app's grace period is eternal or unset.
const defaultGrace = 10 * time.Second

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "webhooks",
		New: func() caddy.Module { return new(App) },
	}
}

// spoolHandle lets the usage pool close a spool when its last user goes.
type spoolHandle struct{ *spool.Spool }

// Destruct closes the spool; deliveries in flight finish or release their
// leases within the spool's close timeout.
func (h spoolHandle) Destruct() error { return h.Close() }

// Provision opens (or shares) the spool.
func (a *App) Provision(ctx caddy.Context) error {
	a.log = ctx.Logger()
	a.ctx, a.grace = ctx, defaultGrace
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
		Dir:              a.dir,
		MaxItems:         a.MaxItems,
		MaxBytes:         a.MaxBytes,
		MinFreeDisk:      a.MinFreeDisk,
		Workers:          a.Workers,
		DeadRetention:    time.Duration(a.DeadRetention),
		AttemptRetention: time.Duration(a.AttemptRetention),
		// The spool outlives this configuration: log through the process's
		// logger, not this context's.
		Logger:  caddy.Log().Named("webhooks"),
		Observe: observeAttempt,
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("webhooks: metrics: %w", err)
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
	a.spool = val.(spoolHandle).Spool
	if loaded {
		a.log.Debug("sharing the open spool", zap.String("storage", a.dir))
	} else {
		a.log.Info("spool opened", zap.String("storage", a.dir))
	}
	return nil
}

// Validate checks the limits.
func (a *App) Validate() error {
	if a.MaxItems < 0 || a.MaxBytes < 0 || a.MinFreeDisk < 0 || a.Workers < 0 || a.DeadRetention < 0 || a.AttemptRetention < 0 {
		return errors.New("webhooks: limits must not be negative")
	}
	return nil
}

// Start applies this configuration's limits and retentions to the spool,
// which an earlier configuration may have opened (they take effect only now,
// so a reload that fails leaves the running ones alone), and takes the http
// app's grace period for the deliveries in flight at shutdown.
func (a *App) Start() error {
	a.spool.Reconfigure(a.opts)
	if h, err := a.ctx.AppIfConfigured("http"); err == nil {
		if h, ok := h.(*caddyhttp.App); ok && h.GracePeriod > 0 {
			a.grace = time.Duration(h.GracePeriod)
		}
	}
	return nil
}

// Stop starts winding deliveries down when the process is exiting, so they
// get the same grace period as the HTTP servers, in parallel with them;
// events still arriving meanwhile are stored. A reload stops the old
// configuration too, but the spool and its workers carry on for the new one;
// the spool closes when the last configuration using it is cleaned up.
func (a *App) Stop() error {
	if caddy.Exiting() && a.spool != nil {
		a.spool.StopDelivering(a.grace)
	}
	return nil
}

// Cleanup releases this configuration's use of the spool.
func (a *App) Cleanup() error {
	if a.spool == nil {
		return nil
	}
	a.spool = nil
	_, err := spools.Delete(a.dir)
	return err
}

// claimRoute records that a handler of this configuration uses the spool
// route name with the given settings. Handlers that share a name share its
// queue, dedupe records and forward target, so they must agree on the
// settings: the same handler imported twice is fine, two different ones are
// a configuration error (the last registered would take the other's events).
func (a *App) claimRoute(name string, settings any) error {
	js, err := json.Marshal(settings)
	if err != nil {
		return err
	}
	if prev, ok := a.routes[name]; ok && !bytes.Equal(prev, js) {
		return fmt.Errorf("route %q is configured twice with different settings; give each its own name", name)
	}
	if a.routes == nil {
		a.routes = map[string][]byte{}
	}
	a.routes[name] = js
	return nil
}

// Spool returns the app's spool.
func (a *App) Spool() *spool.Spool { return a.spool }

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
