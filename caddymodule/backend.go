package caddymodule

import (
	"errors"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/hookgate/hookgate/spool"
)

// BackendModule is a module of the webhooks.backends namespace: the store of
// webhook events that the webhooks app opens and works on through the
// spool.Backend contract. The app's "backend" field chooses one by its name
// ({"backend": "badger", …}; Caddyfile: backend <name> { … }); without it,
// the app uses Badger. A backend module is its own file: its settings, its
// Caddyfile block, its store's name and how it opens the store.
type BackendModule interface {
	caddy.Module
	// StoreName is the Name of the store the module opens, known once it
	// is provisioned: configurations whose stores have the same name share
	// one open store.
	StoreName() string
	// OpenStore opens the store. The store outlives the configuration
	// that opened it, shared with the ones that follow until the last of
	// them is unloaded.
	OpenStore(c StoreConfig) (spool.Backend, error)
}

// StoreReconfigurer is implemented by a BackendModule with settings of its
// own that a reload changes in an open store, beyond the spool.Limits that
// the app applies with Reconfigure.
type StoreReconfigurer interface {
	ReconfigureStore(store spool.Backend)
}

// StoreConfig is what the app gives a BackendModule to open its store with.
type StoreConfig struct {
	Limits spool.Limits
	// Logger is the process's, not a configuration's: the store outlives
	// configurations.
	Logger *zap.Logger
	// Observe is called after every delivery attempt (the metrics).
	Observe func(route string, a spool.Attempt, outcome string)
}

// errShorthand refuses a configuration that gives Badger's settings both
// in the shorthand and in a backend.
var errShorthand = errors.New(`webhooks: storage and min_free_disk are a shorthand for "backend badger"; with a backend, give them in its block`)
