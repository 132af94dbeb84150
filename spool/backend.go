package spool

import (
	"context"
	"time"
)

// Backend is the contract between the Caddy glue and a store of webhook
// events: what caddymodule enqueues to, delivers from and administers. The
// embedded Badger spool (Spool) is one implementation; a backend on a
// distributed engine is another. Every implementation keeps the same
// promises, checked by one contract test suite:
//
//   - Enqueue, EnqueueAll and Remember return only once what they accepted is
//     durable, so a 2xx to a sender means the event is kept;
//   - an event id is accepted once per route within its dedupe window;
//   - each accepted event is delivered at least once, retried by its route's
//     Policy (Policy.Decide), and kept as a dead letter when the policy gives up;
//   - a refusal (ErrFull, ErrClosed, ErrTooLarge) writes nothing.
//
// Stats, Usage, Records and CanRemember answer from memory or a short cache:
// metrics collection calls them.
type Backend interface {
	// Enqueue and dedupe.
	Enqueue(ctx context.Context, e Entry) (Result, error)
	EnqueueAll(ctx context.Context, entries []Entry) ([]Result, error)
	Remember(ctx context.Context, e Entry) (Result, error)
	Seen(ctx context.Context, route, eventID string, body []byte) (Status, error)
	CanRemember() error

	// Delivery.
	RegisterRoute(name string, r Route) (unregister func())

	// Administration.
	Stats() []RouteStats
	Usage() (items, bytes int64)
	Records() RecordUsage
	Pause(ctx context.Context, route string) error
	Resume(ctx context.Context, route string) error
	Disable(ctx context.Context, route, reason string) error
	Enable(ctx context.Context, route string) error
	ListDead(ctx context.Context, f DeadFilter, after uint64, limit int) ([]DeadLetter, uint64, error)
	Replay(ctx context.Context, ids ...uint64) (int, error)
	ReplayMatching(ctx context.Context, f DeadFilter) (int, error)
	DeleteDead(ctx context.Context, ids ...uint64) (int, error)
	Lookup(ctx context.Context, route, eventID string) (ItemStatus, error)

	// Lifecycle.
	Reconfigure(l Limits)
	StopDelivering(within time.Duration)
	Close() error
	// Name identifies the store: "badger:<absolute dir>" or the other
	// backend's equivalent. Instances with the same name share the store.
	Name() string
}

// Limits are the bounds and settings every backend applies and Reconfigure
// changes while it runs. Zero values take the defaults of WithDefaults.
type Limits struct {
	MaxItems         int64         // stored items, dead letters included
	MaxBytes         int64         // stored message bytes
	MaxRecordBytes   int64         // dedupe and attempt records
	Workers          int           // deliveries in flight over all routes
	DeadRetention    time.Duration // dead letters older than this are purged
	AttemptRetention time.Duration // how long attempt records are kept
}

// WithDefaults returns l with its zero (or negative) values replaced by the
// defaults: MaxItems 1,000,000; MaxBytes 1 GiB; MaxRecordBytes 4 GiB;
// Workers 64; DeadRetention and AttemptRetention 7 days.
func (l Limits) WithDefaults() Limits {
	orDefault(&l.MaxItems, 1_000_000)
	orDefault(&l.MaxBytes, 1<<30)
	orDefault(&l.MaxRecordBytes, 4<<30)
	orDefault(&l.Workers, 64)
	orDefault(&l.DeadRetention, 7*24*time.Hour)
	orDefault(&l.AttemptRetention, 7*24*time.Hour)
	return l
}

// orDefault sets *v to d unless it is positive.
func orDefault[T int | int64 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}
