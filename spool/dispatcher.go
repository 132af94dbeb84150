package spool

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// cursorReset is how often the dispatcher rescans each route from its start,
// a safety net for writes it was not told about.
const cursorReset = time.Minute

// maxIdle is the longest the dispatcher sleeps without being woken.
const maxIdle = 30 * time.Second

// dispatchLoop finds due items and leases them to workers. It keeps a cursor
// per route, so a poll seeks past the keys it already handled instead of
// rescanning their tombstones, and it sleeps until the next due time or a
// nudge (enqueue, retry, a free worker, a route change) instead of polling.
func (s *Spool) dispatchLoop() {
	defer s.closers.dispatch.exit()
	d := &dispatcher{s: s, cursors: map[uint32][]byte{}, missing: map[uint32]int64{}}
	resetAt := time.Now().Add(cursorReset)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if time.Now().After(resetAt) {
			clear(d.cursors)
			resetAt = time.Now().Add(cursorReset)
		}
		s.passes.Add(1)
		next, err := d.pass()
		if err != nil {
			if errors.Is(err, ErrClosed) {
				return
			}
			if !errors.Is(err, errDiskFull) { // diskFull logs when that starts and ends
				s.log.Error("dispatch failed", zap.Error(err))
			}
			next = time.Now().Add(time.Second)
		}
		wait := maxIdle
		if !next.IsZero() {
			wait = min(max(time.Until(next), 0), maxIdle)
		}
		s.wakeAtMs.Store(time.Now().Add(wait).UnixMilli())
		timer.Reset(wait)
		select {
		case <-s.closers.dispatch.stopping():
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// dispatcher is the dispatch loop's state.
type dispatcher struct {
	s       *Spool
	cursors map[uint32][]byte // per route: where the next scan starts
	missing map[uint32]int64  // when a route with items was first seen unregistered (ms)
}

// candidate is a due item found by a scan.
type candidate struct {
	key      []byte
	st       state
	name     string
	route    Route
	known    bool
	disabled string // the route's disable reason
}

// holdsSlot reports whether a slot was reserved for the candidate's
// delivery: the dispatcher reserves them for the routes it delivers to.
func (c *candidate) holdsSlot() bool { return c.known && c.disabled == "" }

// pass leases what is due and returns when the next item falls due (zero if
// unknown: the dispatcher then waits to be nudged).
func (d *dispatcher) pass() (time.Time, error) {
	s := d.s
	if s.diskFull(s.freeNow()) {
		// An outcome could not be recorded: start nothing.
		return time.Time{}, errDiskFull
	}
	now := time.Now()
	nowMs := now.UnixMilli()

	s.rewindMu.Lock()
	for rid, k := range s.rewind {
		if cur, ok := d.cursors[rid]; ok && bytes.Compare(k, cur) < 0 {
			d.cursors[rid] = k
		}
	}
	clear(s.rewind)
	s.rewindMu.Unlock()

	type routeRef struct {
		rid      uint32
		name     string
		disabled string
	}
	var refs []routeRef
	s.mu.Lock()
	for rid, name := range s.cat.names {
		if _, paused := s.cat.paused[rid]; !paused {
			refs = append(refs, routeRef{rid, name, s.cat.disabled[rid]})
		}
	}
	s.mu.Unlock()

	var nextMs int64
	later := func(ms int64) {
		if ms != 0 && (nextMs == 0 || ms < nextMs) {
			nextMs = ms
		}
	}
	var found []candidate
	s.flight.beginPass()
	err := s.db.View(func(txn *badger.Txn) error {
		for _, ref := range refs {
			route, known := s.route(ref.name)
			limit, reserved := 256, 0 // items of a removed or disabled route become dead letters
			if known && ref.disabled == "" {
				delete(d.missing, ref.rid)
				reserved = s.slots.reserveOrWant(ref.rid, route.Concurrency, route.Concurrency, s.live.Load().workers)
				limit = reserved
			} else if !known {
				// A reload may be registering it: wait out the grace period
				// before its items become dead letters.
				since, ok := d.missing[ref.rid]
				if !ok {
					since = nowMs
					d.missing[ref.rid] = since
				}
				if end := since + s.opts.RouteGrace.Milliseconds(); nowMs < end {
					later(end)
					continue
				}
			}
			if limit <= 0 {
				continue
			}
			due, next, err := d.scan(txn, ref.rid, nowMs, limit)
			if err != nil {
				s.slots.release(ref.rid, reserved)
				return err
			}
			s.slots.release(ref.rid, reserved-len(due))
			later(next)
			for _, c := range due {
				c.name, c.route, c.known, c.disabled = ref.name, route, known, ref.disabled
				found = append(found, c)
			}
		}
		return nil
	})
	s.flight.endPass()
	if err != nil {
		d.release(found)
		return time.Time{}, err
	}
	d.start(found, nowMs)
	if nextMs == 0 {
		return time.Time{}, nil
	}
	return time.UnixMilli(nextMs), nil
}

// lookAhead bounds how many deleted keys past now a scan walks to find when
// the next live item falls due.
const lookAhead = 1024

// scan returns up to limit due items of a route from its cursor on, and when
// the next item falls due (0 if unknown, nowMs if more are due already).
//
// It iterates with AllVersions so that it sees deleted keys instead of
// letting Badger skip them: the queue is full of them (every claim, retry and
// ack deletes a key), and a plain iterator would walk all of them on every
// pass in search of the next live key. This way the walk stops at the first
// key past now, and the cursor moves over each deleted key once.
func (d *dispatcher) scan(txn *badger.Txn, rid uint32, nowMs int64, limit int) ([]candidate, int64, error) {
	prefix := queuePrefix(rid)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, AllVersions: true})
	defer it.Close()
	start := d.cursors[rid]
	if start == nil {
		start = prefix
	}
	// Once the scan passes every due key, the cursor moves to now. Writes
	// that land behind it rewind it (see batch.queued).
	caughtUp := func() {
		if now := queueKey(rid, nowMs+1, 0); bytes.Compare(now, d.cursors[rid]) > 0 {
			d.cursors[rid] = now
		}
	}
	var out []candidate
	var last []byte
	ahead := 0
	for it.Seek(start); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		k := item.Key()
		if bytes.Equal(k, last) {
			continue // an older version of the key just seen
		}
		last = append(last[:0], k...)
		_, due, _, ok := parseQueueKey(k)
		if !ok {
			continue
		}
		if due > nowMs {
			caughtUp()
			if !item.IsDeletedOrExpired() {
				return out, due, nil
			}
			if ahead++; ahead == lookAhead {
				return out, due, nil // wake then and look further
			}
			continue
		}
		if item.IsDeletedOrExpired() {
			d.cursors[rid] = item.KeyCopy(nil)
			continue
		}
		id := keyID(k)
		if d.s.flight.has(id) {
			// In flight: its outcome will move or delete the key, and
			// rewind the cursor if it is due again.
			d.cursors[rid] = item.KeyCopy(nil)
			continue
		}
		if len(out) == limit {
			return out, nowMs, nil // more are due: look again once these are started
		}
		k = item.KeyCopy(nil)
		d.cursors[rid] = k
		var st state
		if err := item.Value(func(v []byte) (err error) { st, err = decodeState(v); return err }); err != nil {
			if errors.Is(err, errCorrupt) {
				d.s.log.Error("skipping a corrupt queue entry", zap.Binary("key", k))
				continue
			}
			return nil, 0, err
		}
		out = append(out, candidate{key: k, st: st})
	}
	caughtUp()
	return out, 0, nil
}

// start decides for each due item: lease it to a worker (see flight), or
// make it a dead letter.
func (d *dispatcher) start(found []candidate, nowMs int64) {
	s := d.s
	var leases []work
	for _, c := range found {
		st := c.st
		var reason, lastErr string
		switch {
		case c.disabled != "":
			reason, lastErr = c.disabled, "route "+c.name+" is disabled"
		case !c.known:
			reason, lastErr = ReasonRouteRemoved, "route "+c.name+" is not configured"
		case st.Attempt >= c.route.Policy.MaxAttempts:
			// It has had its attempts: a reload lowered max_attempts, or an
			// older version leased it and never reported back.
			reason = ReasonMaxAttempts
		case st.Attempt > 0 && c.route.Policy.MaxAge > 0 && time.Duration(s.ageMs(&st, nowMs))*time.Millisecond > c.route.Policy.MaxAge:
			// Never before the first attempt: a gateway that was down, or
			// a route that was paused, delivers what it held.
			reason = ReasonMaxAge
		default:
			leases = append(leases, work{key: c.key, st: st, route: c.route})
			continue
		}
		s.flight.hold(keyID(c.key)) // until it commits
		s.send(&finishOp{s: s, key: c.key, held: true, to: toDead, reason: reason, lastErr: lastErr})
		d.release([]candidate{c})
	}
	for _, w := range leases {
		s.flight.add(keyID(w.key), &w.st)
	}
	s.readLeased(leases)
	s.startLeased(leases)
}

// release gives back the slots reserved for candidates that are not
// delivered.
func (d *dispatcher) release(cs []candidate) {
	for _, c := range cs {
		if c.holdsSlot() {
			d.s.slots.release(c.st.Route, 1)
		}
	}
}

// send queues a fire-and-forget op. Losing one on shutdown is safe: the item
// keeps its lease or schedule and is handled again later.
func (s *Spool) send(o op) {
	select {
	case s.ops <- o:
	case <-s.closers.commit.done():
	}
}

// deliver makes one attempt for a leased item, whose state on disk is st,
// and records its outcome. It runs as a worker goroutine holding one of the
// route's slots, which it releases when it ends. msg is the item's message
// if the caller has it, nil to read it.
func (s *Spool) deliver(key []byte, st state, route Route, msg *message) {
	defer func() {
		if s.slots.end(st.Route) {
			s.nudgeSoon()
		}
	}()
	_, _, id, _ := parseQueueKey(key)
	if msg == nil {
		var err error
		if msg = s.recent.take(id); msg == nil {
			msg, err = s.leasedMessage(id, key, &st)
		}
		if err != nil {
			s.log.Error("cannot read a leased item's message", zap.Uint64("id", id), zap.Error(err))
			s.send(&finishOp{s: s, key: key, leased: &st, to: toDead, reason: "corrupt", lastErr: err.Error()})
			return
		}
	}
	d := &Delivery{
		ID:         id,
		Route:      msg.Route,
		EventID:    msg.EventID,
		Header:     msg.Header,
		Body:       msg.Body,
		ReceivedAt: time.UnixMilli(msg.ReceivedMs),
		Attempt:    st.Attempt + 1,
	}
	ctx, cancel := context.WithTimeout(s.workCtx, route.Timeout)
	start := time.Now()
	out := route.Deliverer.Deliver(ctx, d)
	took := time.Since(start)
	cancel()

	fields := []zap.Field{
		zap.String("route", d.Route),
		zap.String("event_id", d.EventID),
		zap.Uint64("id", id),
		zap.Int("attempt", d.Attempt),
		zap.Int("status", out.StatusCode),
		zap.Duration("duration", took),
	}
	if route.Target != "" {
		fields = append(fields, zap.String("target", route.Target))
	}
	if out.Err != nil {
		fields = append(fields, zap.String("error", out.Err.Error()))
	}
	rec := Attempt{Number: d.Attempt, At: start, Duration: took, StatusCode: out.StatusCode}
	if out.Err != nil {
		rec.Error = out.Err.Error()
	}
	if !out.Succeeded() && s.workCtx.Err() != nil {
		// Its item stays as it was, due at the next start.
		s.log.Info("delivery interrupted by shutdown; released", fields...)
		s.observe(d.Route, rec, "released")
		s.flight.done(id)
		return
	}
	// Age counts from the state's clock, which a replay resets, less the
	// time the route was paused.
	v := route.Policy.Decide(out, d.Attempt, time.Duration(s.ageMs(&st, nowMs()))*time.Millisecond)
	o := &finishOp{s: s, key: key, leased: &st, status: out.StatusCode, lastErr: rec.Error, attempt: &rec, route: d.Route, eventID: d.EventID}
	switch {
	case v.Ack:
		o.to = toDelivered
		s.observe(d.Route, rec, "delivered")
		if route.LogAttempts {
			s.log.Info("delivered", fields...)
		} else {
			s.log.Debug("delivered", fields...)
		}
	case v.Reason != "":
		o.to, o.reason = toDead, v.Reason
		s.observe(d.Route, rec, "dead")
		s.log.Warn("delivery failed; kept as a dead letter", append(fields, zap.String("reason", v.Reason))...)
		if out.DisableRoute && out.DeadReason != "" {
			s.log.Warn("route disabled until it is enabled again", zap.String("route", d.Route), zap.String("reason", out.DeadReason))
			s.send(&disableOp{route: d.Route, reason: out.DeadReason})
		}
	default:
		o.to, o.delay = toRetry, v.Delay
		s.observe(d.Route, rec, "retry")
		s.log.Info("delivery failed; will retry", append(fields, zap.Duration("retry_in", v.Delay))...)
	}
	s.send(o)
}

func (s *Spool) observe(route string, a Attempt, outcome string) {
	if s.opts.Observe != nil {
		s.opts.Observe(route, a, outcome)
	}
}

// ageMs is an item's age by its MaxAge clock (see catalog.ageMs).
func (s *Spool) ageMs(st *state, nowMs int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cat.ageMs(st, nowMs)
}
