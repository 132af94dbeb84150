package spool

import (
	"slices"
	"time"
)

// RouteStats describe one route's items.
type RouteStats struct {
	Route     string
	Queued    int64 // waiting for their first attempt
	InFlight  int64 // being delivered
	Scheduled int64 // waiting for a retry
	Dead      int64
	Bytes     int64     // message bytes, dead letters included
	Oldest    time.Time // receive time (to the second) of the oldest item not yet delivered or dead; zero if none
	Paused    bool
	Disabled  string // why the route is disabled; "" while it is enabled
}

// OldestAge is how long the oldest pending item has waited, 0 if none.
func (r RouteStats) OldestAge(now time.Time) time.Duration {
	if r.Oldest.IsZero() {
		return 0
	}
	return max(now.Sub(r.Oldest), 0)
}

// Stats returns every route that has items, is paused or is registered,
// sorted by name.
func (s *Spool) Stats() []RouteStats {
	byName := map[string]*RouteStats{}
	s.mu.Lock()
	for rid, name := range s.cat.names {
		_, paused := s.cat.paused[rid]
		rs := &RouteStats{Route: name, Paused: paused, Disabled: s.cat.disabled[rid]}
		if rc := s.cat.counts[rid]; rc != nil {
			// An item in flight is counted on disk by its state before the
			// attempt (see flight).
			f := s.flight.counts(rid)
			rs.Queued = max(rc.n[classQueued]-f[classQueued], 0)
			rs.Scheduled = max(rc.n[classScheduled]-f[classScheduled], 0)
			rs.InFlight, rs.Dead = f[classQueued]+f[classScheduled], rc.n[classDead]
			rs.Bytes = rc.bytes
			if ms := rc.pending.oldestMs(); ms != 0 {
				rs.Oldest = time.UnixMilli(ms)
			}
		}
		byName[name] = rs
	}
	s.mu.Unlock()
	s.routesMu.RLock()
	for name := range s.routes {
		if byName[name] == nil {
			byName[name] = &RouteStats{Route: name}
		}
	}
	s.routesMu.RUnlock()
	out := make([]RouteStats, 0, len(byName))
	for _, rs := range byName {
		out = append(out, *rs)
	}
	slices.SortFunc(out, func(a, b RouteStats) int {
		switch {
		case a.Route < b.Route:
			return -1
		case a.Route > b.Route:
			return 1
		}
		return 0
	})
	return out
}

// Usage returns the stored items and message bytes, dead letters included.
func (s *Spool) Usage() (items, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cat.items, s.cat.bytes
}
