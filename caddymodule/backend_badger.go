package caddymodule

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/hookgate/hookgate/spool"
)

func init() {
	caddy.RegisterModule(new(BadgerBackend))
}

// BadgerBackend is the embedded Badger spool, the default backend. The
// webhooks app's storage and min_free_disk are a shorthand for it.
type BadgerBackend struct {
	// Storage is the spool's directory. Default: "webhooks" in Caddy's
	// data directory.
	Storage string `json:"storage,omitempty"`
	// MinFreeDisk is the free space the spool leaves to others on the
	// storage's file system, on top of the reserve it keeps for Badger's
	// flushes and compactions; new events that would cut into it are
	// answered 503. Default 512 MiB.
	MinFreeDisk int64 `json:"min_free_disk,omitempty"`

	dir  string
	name string
}

// CaddyModule returns the Caddy module information.
func (*BadgerBackend) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "webhooks.backends.badger",
		New: func() caddy.Module { return new(BadgerBackend) },
	}
}

// Provision resolves the directory and the store's name.
func (b *BadgerBackend) Provision(caddy.Context) error {
	b.dir = b.Storage
	if b.dir == "" {
		b.dir = filepath.Join(caddy.AppDataDir(), "webhooks")
	}
	name, err := spool.NameOf(b.dir)
	if err != nil {
		return fmt.Errorf("webhooks storage: %w", err)
	}
	b.name = name
	return nil
}

// Validate checks the floor.
func (b *BadgerBackend) Validate() error {
	if b.MinFreeDisk < 0 {
		return errors.New("webhooks: min_free_disk must not be negative")
	}
	return nil
}

// StoreName is "badger:" and the absolute directory.
func (b *BadgerBackend) StoreName() string { return b.name }

// OpenStore opens the spool.
func (b *BadgerBackend) OpenStore(c StoreConfig) (spool.Backend, error) {
	s, err := spool.Open(spool.Options{Dir: b.dir, MinFreeDisk: b.MinFreeDisk, Limits: c.Limits, Logger: c.Logger, Observe: c.Observe})
	if err != nil {
		if errors.Is(err, spool.ErrInUse) {
			return nil, err
		}
		return nil, fmt.Errorf("webhooks storage %s: %w (if another Caddy process uses it, reload that one instead)", b.dir, err)
	}
	return s, nil
}

// ReconfigureStore applies min_free_disk, which spool.Limits leave out.
func (b *BadgerBackend) ReconfigureStore(store spool.Backend) {
	if s, ok := store.(*spool.Spool); ok {
		s.SetMinFreeDisk(b.MinFreeDisk)
	}
}

// UnmarshalCaddyfile sets up the backend from Caddyfile tokens. Syntax, in
// the webhooks global option:
//
//	backend badger {
//		storage       <dir>
//		min_free_disk <size>
//	}
func (b *BadgerBackend) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return backendBlock(d, func(opt string) error {
		switch opt {
		case "storage":
			return oneArg(d, stringArg(&b.Storage))
		case "min_free_disk":
			return oneArg(d, sizeArg(d, &b.MinFreeDisk))
		}
		return d.Errf("webhooks: unknown option %q in backend badger", opt)
	})
}

// Interface guards.
var (
	_ BackendModule         = (*BadgerBackend)(nil)
	_ StoreReconfigurer     = (*BadgerBackend)(nil)
	_ caddy.Provisioner     = (*BadgerBackend)(nil)
	_ caddy.Validator       = (*BadgerBackend)(nil)
	_ caddyfile.Unmarshaler = (*BadgerBackend)(nil)
)
