package spool

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"
)

// A route: where and how its items are delivered (Route, Deliverer,
// Delivery, Outcome), its registration, and its controls (pause, disable).

// Outcome is the result of one delivery attempt.
type Outcome struct {
	StatusCode int           // the response status, 0 when there was no response
	Err        error         // a transport error or timeout; nil when a response arrived
	RetryAfter time.Duration // the response's Retry-After, 0 when absent
	// DeadReason, when set on a failed outcome, sends the item to the dead
	// letters at once with this reason, whatever the policy says.
	DeadReason string
	// DisableRoute, with DeadReason, also disables the route with that
	// reason (see Spool.Disable): a receiver that has gone away for good.
	DisableRoute bool
}

// Succeeded reports whether the attempt delivered the item (a 2xx response).
func (o Outcome) Succeeded() bool {
	return o.Err == nil && o.StatusCode >= 200 && o.StatusCode < 300
}

// Deliverer makes one delivery attempt. It must honour ctx, which carries the
// route's timeout and is cancelled when the spool closes.
type Deliverer interface {
	Deliver(ctx context.Context, d *Delivery) Outcome
}

// DelivererFunc adapts a function to a Deliverer.
type DelivererFunc func(ctx context.Context, d *Delivery) Outcome

// Deliver calls f.
func (f DelivererFunc) Deliver(ctx context.Context, d *Delivery) Outcome { return f(ctx, d) }

// Delivery is one attempt at delivering an item. Header and Body are read
// only: a first attempt gets those the item was enqueued with, which other
// deliveries may share (a publish to several subscribers).
type Delivery struct {
	ID         uint64
	Route      string
	EventID    string
	Header     http.Header
	Body       []byte
	ReceivedAt time.Time
	Attempt    int // 1-based, persisted before the attempt starts
}

// Route is a route's delivery settings, looked up when each attempt starts.
type Route struct {
	Deliverer   Deliverer
	Policy      Policy
	Concurrency int           // deliveries in flight at most; default 8
	Timeout     time.Duration // per attempt; default 30s
	// Target names the destination in log lines; it must carry no
	// credentials or tokens (scheme and host).
	Target string
	// LogAttempts logs successful attempts at info level too (failures
	// always are), so that every attempt has its log line.
	LogAttempts bool
}

// Route defaults.
const (
	DefaultConcurrency = 8
	DefaultTimeout     = 30 * time.Second
)

func (r Route) withDefaults() Route {
	if r.Concurrency <= 0 {
		r.Concurrency = DefaultConcurrency
	}
	if r.Timeout <= 0 {
		r.Timeout = DefaultTimeout
	}
	r.Policy = r.Policy.withDefaults()
	return r
}

type registration struct{ route Route }

// RegisterRoute sets the delivery settings for a route name. Items are
// delivered only while their route is registered. Registrations of one name
// stack: the latest is in force, and the returned function removes only this
// one. A reloaded configuration registers its routes before the old one
// unregisters its own; if the new one fails and is cleaned up, the old
// registration is in force again.
func (s *Spool) RegisterRoute(name string, r Route) (unregister func()) {
	reg := &registration{route: r.withDefaults()}
	s.routesMu.Lock()
	s.routes[name] = append(s.routes[name], reg)
	s.routesMu.Unlock()
	s.nudge()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.routesMu.Lock()
			defer s.routesMu.Unlock()
			regs := slices.DeleteFunc(s.routes[name], func(x *registration) bool { return x == reg })
			if len(regs) == 0 {
				delete(s.routes, name)
			} else {
				s.routes[name] = regs
			}
		})
		s.nudge()
	}
}

func (s *Spool) route(name string) (Route, bool) {
	s.routesMu.RLock()
	defer s.routesMu.RUnlock()
	regs := s.routes[name]
	if len(regs) == 0 {
		return Route{}, false
	}
	return regs[len(regs)-1].route, true
}

// Pause holds a route's deliveries: nothing of it is leased until Resume.
// Items keep their order and keep arriving. The state survives restarts.
func (s *Spool) Pause(ctx context.Context, route string) error { return s.setPaused(ctx, route, true) }

// Resume releases a paused route.
func (s *Spool) Resume(ctx context.Context, route string) error {
	return s.setPaused(ctx, route, false)
}

func (s *Spool) setPaused(ctx context.Context, route string, paused bool) error {
	o := &pauseOp{route: route, paused: paused, done: make(chan struct{})}
	if err := s.submit(ctx, o, o.done); err != nil {
		return err
	}
	return o.err
}

// Disable stops a route's deliveries for good: its items that come due
// become dead letters with reason, until Enable. (A delivery whose outcome
// has DisableRoute set does this by itself.) The state survives restarts.
func (s *Spool) Disable(ctx context.Context, route, reason string) error {
	if reason == "" {
		return errors.New("spool: Disable needs a reason")
	}
	o := &disableOp{route: route, reason: reason, done: make(chan struct{})}
	if err := s.submit(ctx, o, o.done); err != nil {
		return err
	}
	return o.err
}

// Enable lets a disabled route deliver again. Its dead letters stay where
// they are; replay them with ReplayMatching (route and the disable reason).
func (s *Spool) Enable(ctx context.Context, route string) error {
	o := &disableOp{route: route, done: make(chan struct{})}
	if err := s.submit(ctx, o, o.done); err != nil {
		return err
	}
	return o.err
}
