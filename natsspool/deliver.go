package natsspool

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/hookgate/hookgate/spool"
)

// Delivery bounds.
const (
	maxFetch = 64 // messages asked for in one pull
	// fetchWait is how long a pull waits for messages. The server ends it
	// a tenth earlier (at most 1s, nats.go's FetchContext): a message sent
	// to a pull the client has given up on waits for its ack wait, so the
	// margin must hold on a busy machine.
	fetchWait = 10 * time.Second
	retryWait = time.Second // before a failed NATS step is tried again
	// skipWaitMax caps the delay of a redelivery after a delivery that made
	// no attempt (see skipDelay).
	skipWaitMax = time.Minute
	// maxUncounted is how many deliveries of an item may go without an
	// attempt record before each one counts as an attempt (see
	// attemptNumber).
	maxUncounted = 20
)

// skipDelay is how long a delivery that made no HTTP attempt (its records
// not read, its route no longer registered here, a dead letter not yet
// stored) waits to be delivered again: retryWait doubled with each earlier
// delivery, at most skipWaitMax, so an item that cannot be attempted comes
// back at most once a minute.
func skipDelay(delivered uint64) time.Duration {
	return min(retryWait<<min(max(delivered, 1)-1, 6), skipWaitMax)
}

// attemptNumber is the number of the attempt a delivery of it makes, the
// delivery being its delivered-th: one after the last attempt recorded for
// the item (last is the newest record of its event), as deliveries that
// made no attempt must not use up max_attempts. An attempt whose record was
// not written (a crash during the attempt, a failed write) goes uncounted,
// but at most maxUncounted deliveries go uncounted in all; without a record
// of the item (its marker expired with its records) every delivery counts.
func attemptNumber(it *item, last *jetstream.RawStreamMsg, delivered uint64) int {
	byDeliveries := it.attemptBase + int(delivered)
	if last == nil {
		return byDeliveries
	}
	recorded := 0
	switch kind := last.Header.Get(hdrKind); {
	case kind == kindAttempt && last.Header.Get(hdrItem) == strconv.FormatUint(it.seq, 10):
		var a attemptRecord
		if json.Unmarshal(last.Data, &a) != nil {
			return byDeliveries
		}
		recorded = a.Number + 1
	case (kind == kindMarker || kind == kindReplayed) && last.Sequence+1 == it.seq:
		recorded = it.attemptBase + 1 // the item's payload follows its marker: no attempt yet
	default:
		return byDeliveries
	}
	return max(recorded, byDeliveries-maxUncounted)
}

// received is the item a message holds, with the message's metadata; a
// message without metadata is logged and given back (ok false).
func (b *Backend) received(msg jetstream.Msg) (it item, md *jetstream.MsgMetadata, ok bool) {
	md, err := msg.Metadata()
	if err != nil {
		b.log.Error("natsspool: message without metadata", zap.Error(err))
		_ = msg.Nak()
		return item{}, nil, false
	}
	return b.itemOf(md.Sequence.Stream, msg.Headers(), msg.Data()), md, true
}

// redelivered reads the records of an item delivered before (delivered is
// the server's count): a kill of it that was started and cut short, which
// must finish without a new attempt, or else the number of the attempt a
// delivery now makes, counted from the records (attemptNumber).
func (b *Backend) redelivered(ctx context.Context, it *item, delivered uint64) (attempt int, cut *deadInfo, err error) {
	if delivered <= 1 {
		return it.attemptBase + 1, nil, nil
	}
	last, err := b.lastRecord(ctx, it.subject)
	if err != nil {
		return 0, nil, err
	}
	if last != nil && last.Header.Get(hdrItem) == strconv.FormatUint(it.seq, 10) {
		if k := last.Header.Get(hdrKind); k == kindDeadIntent || k == kindDead {
			d := deadInfoOf(last.Header)
			return 0, &d, nil
		}
	}
	return attemptNumber(it, last, delivered), nil, nil
}

// gate counts slots in flight against a limit that may change; a release
// wakes whoever waits for one.
type gate struct {
	mu   sync.Mutex
	n    int
	free chan struct{} // closed and replaced at each release
}

func newGate() *gate { return &gate{free: make(chan struct{})} }

// take takes up to want slots while fewer than limit are taken, and says
// how many it took.
func (g *gate) take(limit, want int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := max(min(want, limit-g.n), 0)
	g.n += k
	return k
}

// available is how many slots are free under limit, without taking them.
func (g *gate) available(limit int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(limit-g.n, 0)
}

func (g *gate) give(k int) {
	if k == 0 {
		return
	}
	g.mu.Lock()
	g.n -= k
	g.mu.Unlock()
	g.wake()
}

func (g *gate) wake() {
	g.mu.Lock()
	close(g.free)
	g.free = make(chan struct{})
	g.mu.Unlock()
}

func (g *gate) released() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.free
}

// routeLoop delivers one route on this instance while it is registered.
type routeLoop struct {
	name     string
	regs     []*spool.Route // stacked registrations; the last is in force
	slots    *gate
	inflight atomic.Int64 // deliveries of this instance, until they are settled or start a kill
	settling atomic.Int64 // kills between their dead copy and their ack: counted as dead already
	cancel   context.CancelFunc
}

// RegisterRoute sets the delivery settings for a route name, as
// spool.Spool.RegisterRoute: registrations stack, the latest is in force,
// and the returned function removes only its own. While a route is
// registered this instance pulls its items from the route's consumer, at
// most Concurrency at a time (per instance), and within Limits.Workers over
// all routes.
func (b *Backend) RegisterRoute(name string, r spool.Route) (unregister func()) {
	if r.Concurrency <= 0 {
		r.Concurrency = spool.DefaultConcurrency
	}
	if r.Timeout <= 0 {
		r.Timeout = spool.DefaultTimeout
	}
	reg := &r
	b.loopsMu.Lock()
	if b.loopsClosed {
		// Close waits for the loops, or has: none may start now.
		b.loopsMu.Unlock()
		return func() {}
	}
	rl := b.loops[name]
	if rl == nil {
		ctx, cancel := context.WithCancel(b.stopCtx)
		rl = &routeLoop{name: name, slots: newGate(), cancel: cancel}
		b.loops[name] = rl
		b.fetching.Add(1)
		go b.run(ctx, rl)
	}
	rl.regs = append(rl.regs, reg)
	b.loopsMu.Unlock()
	rl.slots.wake()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.loopsMu.Lock()
			defer b.loopsMu.Unlock()
			rl.regs = slices.DeleteFunc(rl.regs, func(x *spool.Route) bool { return x == reg })
			if len(rl.regs) == 0 {
				rl.cancel()
				if b.loops[name] == rl {
					delete(b.loops, name)
				}
			}
			rl.slots.wake()
		})
	}
}

func (b *Backend) route(rl *routeLoop) (spool.Route, bool) {
	b.loopsMu.Lock()
	defer b.loopsMu.Unlock()
	if len(rl.regs) == 0 {
		return spool.Route{}, false
	}
	return *rl.regs[len(rl.regs)-1], true
}

func (b *Backend) registered() []string {
	b.loopsMu.Lock()
	defer b.loopsMu.Unlock()
	var out []string
	for name, rl := range b.loops {
		if len(rl.regs) > 0 {
			out = append(out, name)
		}
	}
	return out
}

// localCounts are, per route, this instance's deliveries in flight and
// kills settling.
func (b *Backend) localCounts() map[string][2]int64 {
	b.loopsMu.Lock()
	defer b.loopsMu.Unlock()
	out := make(map[string][2]int64, len(b.loops))
	for name, rl := range b.loops {
		out[name] = [2]int64{rl.inflight.Load(), rl.settling.Load()}
	}
	return out
}

// consumerConfig is a route's durable pull consumer: its payload subject
// only, explicit ack, no server-side redelivery limit or backoff (the
// route's Policy decides), no cap on pending acks (items waiting for a
// retry must not hold up new ones; this instance's slots bound the work).
func (b *Backend) consumerConfig(route string, ackWait time.Duration) jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable:       b.n.consumer(route),
		FilterSubject: b.n.queue(route),
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: -1,
	}
	if b.routes.get(route).PausedSinceMs > 0 {
		until := farFuture
		c.PauseUntil = &until
	}
	return c
}

// ensureConsumer creates a route's consumer, or updates its ack wait when
// ackWait is not 0 and differs; an update keeps the pause the bucket says.
func (b *Backend) ensureConsumer(ctx context.Context, route string, ackWait time.Duration) error {
	cctx, cancel := b.ctx(ctx)
	defer cancel()
	c, err := b.js.Consumer(cctx, b.n.stream(), b.n.consumer(route))
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		create := ackWait
		if create == 0 {
			create = spool.DefaultTimeout + b.opts.LeaseMargin
		}
		_, err = b.js.CreateConsumer(cctx, b.n.stream(), b.consumerConfig(route, create))
		if errors.Is(err, jetstream.ErrConsumerExists) {
			// Another instance created it meanwhile: keep its ack wait
			// unless this call sets one (not the default it used).
			return b.ensureConsumer(ctx, route, ackWait)
		}
		return err
	case err != nil:
		return err
	case ackWait != 0 && c.CachedInfo().Config.AckWait != ackWait:
		_, err = b.js.UpdateConsumer(cctx, b.n.stream(), b.consumerConfig(route, ackWait))
		return err
	}
	return nil
}

// ensureConsumers makes sure, once per instance and route, that the routes
// of entries with items have consumers: the stats count a route's items
// from its consumer, also before any instance registers the route. One
// call per route does it while the others go on; a failure is logged and
// tried again by a later enqueue, as the enqueue does not need it.
func (b *Backend) ensureConsumers(ctx context.Context, ps []prepared) {
	for _, p := range ps {
		if p.e.DedupeOnly {
			continue
		}
		v, _ := b.ensured.LoadOrStore(p.e.Route, new(atomic.Int32))
		state := v.(*atomic.Int32) // 0: not yet, 1: being made, 2: made
		if !state.CompareAndSwap(0, 1) {
			continue
		}
		if err := b.ensureConsumer(ctx, p.e.Route, 0); err != nil {
			state.Store(0)
			b.log.Warn("natsspool: route consumer not made; its items are not counted yet", zap.String("route", p.e.Route), zap.Error(err))
			continue
		}
		state.Store(2)
	}
}

// run pulls a route's items while it is registered and deliveries go on.
func (b *Backend) run(ctx context.Context, rl *routeLoop) {
	defer b.fetching.Done()
	var cons jetstream.Consumer
	var ackWait time.Duration
	for ctx.Err() == nil {
		r, ok := b.route(rl)
		if !ok {
			return
		}
		if want := r.Timeout + b.opts.LeaseMargin; cons == nil || want != ackWait {
			err := b.ensureConsumer(ctx, rl.name, want)
			if err == nil {
				cctx, cancel := b.ctx(ctx)
				cons, err = b.js.Consumer(cctx, b.n.stream(), b.n.consumer(rl.name))
				cancel()
			}
			if err != nil {
				if ctx.Err() == nil {
					b.log.Warn("natsspool: route consumer not ready", zap.String("route", rl.name), zap.Error(err))
				}
				sleep(ctx, retryWait)
				continue
			}
			b.reconcilePause(ctx, rl.name, cons.CachedInfo().Paused)
			ackWait = want
		}
		// The route's slots are held through the pull (only this loop takes
		// them); a worker slot, shared by all routes, only per message
		// received, so that idle routes' pulls hold none.
		routeFree := rl.slots.released()
		n := rl.slots.take(r.Concurrency, maxFetch)
		if n == 0 {
			waitOn(ctx, routeFree)
			continue
		}
		workersFree := b.workers.released()
		k := min(n, b.workers.available(b.limits.Load().Workers))
		rl.slots.give(n - k)
		if k == 0 {
			waitOn(ctx, workersFree)
			continue
		}
		got, gone := b.fetch(ctx, rl, cons, k, ackWait)
		rl.slots.give(k - got)
		if gone {
			cons = nil // deleted behind our back: made again above
		}
	}
}

// fetch pulls up to k messages and hands each to a delivery goroutine that
// holds one of the k route slots and a worker slot, taken as the message
// comes; it returns how many it handed on, and whether the consumer is gone.
func (b *Backend) fetch(ctx context.Context, rl *routeLoop, cons jetstream.Consumer, k int, ackWait time.Duration) (int, bool) {
	fctx, cancel := context.WithTimeout(ctx, fetchWait)
	defer cancel()
	batch, err := cons.Fetch(k, jetstream.FetchContext(fctx))
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			b.log.Warn("natsspool: fetch", zap.String("route", rl.name), zap.Error(err))
			sleep(ctx, retryWait)
		}
		return 0, consumerGone(err)
	}
	got := 0
	for msg := range batch.Messages() {
		if ctx.Err() != nil || !b.takeWorker(ctx, msg, ackWait) {
			_ = msg.Nak() // stopped: released for another instance or the next start
			continue
		}
		got++
		rl.inflight.Add(1)
		b.inflight.Add(1)
		go b.deliver(rl, msg)
	}
	err = batch.Error()
	if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
		b.log.Warn("natsspool: fetch", zap.String("route", rl.name), zap.Error(err))
		sleep(ctx, retryWait)
	}
	return got, consumerGone(err)
}

// takeWorker takes a worker slot for msg, waiting for one while other
// routes' deliveries hold them all (msg's ack wait kept from running out
// meanwhile); false if ctx ended first.
func (b *Backend) takeWorker(ctx context.Context, msg jetstream.Msg, ackWait time.Duration) bool {
	var progress *time.Ticker
	for {
		free := b.workers.released()
		if b.workers.take(b.limits.Load().Workers, 1) == 1 {
			if progress != nil {
				progress.Stop()
			}
			return true
		}
		if progress == nil {
			progress = time.NewTicker(max(ackWait/3, time.Second))
			defer progress.Stop()
		}
		select {
		case <-free:
		case <-progress.C:
			_ = msg.InProgress()
		case <-ctx.Done():
			return false
		}
	}
}

// consumerGone reports whether a pull failed because its consumer no longer
// exists (an operator deleted it, or the stream was lost).
func consumerGone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func waitOn(ctx context.Context, ch <-chan struct{}) {
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// item is a payload as delivered.
type item struct {
	seq         uint64
	route       string
	eventID     string
	subject     string // the event's records
	fp          string
	header      http.Header
	body        []byte
	raw         nats.Header
	receivedMs  int64
	window      time.Duration
	ageStartMs  int64
	attemptBase int
	pausedBase  int64
	delivered   uint64     // JetStream's count of its deliveries, this one included
	rl          *routeLoop // the loop delivering it, nil outside a delivery
	leave       func()     // ends its count as in flight
}

func (b *Backend) itemOf(seq uint64, h nats.Header, body []byte) item {
	it := item{seq: seq, route: h.Get(hdrRoute), eventID: h.Get(hdrEventID), fp: h.Get(hdrFp), body: body, raw: h}
	it.subject = b.n.ids(it.route, it.eventID)
	it.receivedMs, _ = strconv.ParseInt(h.Get(hdrReceived), 10, 64)
	w, _ := strconv.ParseInt(h.Get(hdrWindow), 10, 64)
	it.window = time.Duration(w) * time.Second
	it.ageStartMs, _ = strconv.ParseInt(h.Get(hdrAgeStart), 10, 64)
	it.attemptBase, _ = strconv.Atoi(h.Get(hdrAttemptBase))
	it.pausedBase, _ = strconv.ParseInt(h.Get(hdrPausedBase), 10, 64)
	_ = json.Unmarshal([]byte(h.Get(hdrHeader)), &it.header)
	return it
}

// remaining is how long the event's marker lasts from now.
func (it *item) remaining() time.Duration {
	return time.Until(time.UnixMilli(it.receivedMs).Add(it.window))
}

// deliver makes one attempt at a fetched item and settles it: ack, a
// delayed nak for a retry, or the dead letters.
func (b *Backend) deliver(rl *routeLoop, msg jetstream.Msg) {
	leave := sync.OnceFunc(func() { rl.inflight.Add(-1) })
	defer func() {
		leave()
		rl.slots.give(1)
		b.workers.give(1)
		b.inflight.Done()
	}()
	it, md, ok := b.received(msg)
	if !ok {
		return
	}
	it.rl, it.leave = rl, leave
	it.delivered = md.NumDelivered
	ctx, cancel := context.WithTimeout(context.Background(), 2*b.opts.RequestTimeout)
	defer cancel()
	attempt, cut, err := b.redelivered(ctx, &it, md.NumDelivered)
	switch {
	case err != nil:
		b.log.Warn("natsspool: records not read; retried", zap.String("route", it.route), zap.Error(err))
		_ = msg.NakWithDelay(skipDelay(md.NumDelivered))
		return
	case cut != nil:
		b.finishKill(ctx, msg, &it, *cut)
		return
	case b.routes.get(it.route).PausedSinceMs > 0:
		// Received before the pause reached the consumer, or waited for a
		// worker meanwhile: nothing starts once Pause has returned. The
		// paused consumer keeps it until Resume; not an attempt.
		_ = msg.NakWithDelay(skipDelay(md.NumDelivered))
		return
	}
	r, ok := b.route(rl)
	if !ok {
		_ = msg.Nak() // unregistered meanwhile: for another instance at once; not an attempt
		return
	}
	if reason := b.routes.get(it.route).Disabled; reason != "" {
		b.kill(ctx, msg, &it, deadInfo{reason: reason, attempts: attempt - it.attemptBase - 1})
		return
	}
	d := &spool.Delivery{ID: it.seq, Route: it.route, EventID: it.eventID, Header: it.header, Body: it.body,
		ReceivedAt: time.UnixMilli(it.receivedMs), Attempt: attempt}
	dctx, dcancel := context.WithTimeout(b.workCtx, r.Timeout)
	start := time.Now()
	out := r.Deliverer.Deliver(dctx, d)
	took := time.Since(start)
	dcancel()
	// The outcome's writes get a timeout of their own: the delivery may have
	// outlasted ctx's.
	sctx, scancel := context.WithTimeout(context.Background(), 2*b.opts.RequestTimeout)
	defer scancel()
	rec := spool.Attempt{Number: attempt, At: start, Duration: took, StatusCode: out.StatusCode}
	if out.Err != nil {
		rec.Error = out.Err.Error()
	}
	fields := []zap.Field{zap.String("route", it.route), zap.String("event_id", it.eventID), zap.Int("attempt", attempt)}
	if !out.Succeeded() && b.workCtx.Err() != nil {
		b.log.Info("natsspool: delivery interrupted by shutdown; released", fields...)
		b.observe(it.route, rec, "released")
		b.recordAttempt(sctx, &it, rec) // an attempt was made: the next delivery counts it
		_ = msg.Nak()
		return
	}
	nowMs := time.Now().UnixMilli()
	paused := b.routes.get(it.route).pausedMs(nowMs) - it.pausedBase
	age := time.Duration(nowMs-it.ageStartMs-max(paused, 0)) * time.Millisecond
	v := r.Policy.Decide(out, attempt, age)
	b.recordAttempt(sctx, &it, rec)
	switch {
	case v.Ack:
		if err := msg.DoubleAck(sctx); err != nil {
			b.log.Warn("natsspool: ack of a delivered item failed; it may be delivered again", append(fields, zap.Error(err))...)
		}
		b.observe(it.route, rec, "delivered")
		if r.LogAttempts {
			b.log.Info("delivered", fields...)
		}
	case v.Reason != "":
		b.observe(it.route, rec, "dead")
		b.log.Warn("delivery failed; kept as a dead letter", append(fields, zap.String("reason", v.Reason))...)
		b.kill(sctx, msg, &it, deadInfo{reason: v.Reason, status: out.StatusCode, lastErr: rec.Error, attempts: attempt - it.attemptBase})
		if out.DisableRoute && out.DeadReason != "" {
			if err := b.Disable(sctx, it.route, out.DeadReason); err != nil {
				b.log.Error("natsspool: route not disabled", zap.String("route", it.route), zap.Error(err))
			}
		}
	default:
		b.observe(it.route, rec, "retry")
		b.log.Info("delivery failed; will retry", append(fields, zap.Duration("retry_in", v.Delay))...)
		if err := msg.NakWithDelay(v.Delay); err != nil {
			b.log.Warn("natsspool: nak failed; the item is retried after its ack wait", append(fields, zap.Error(err))...)
		}
	}
	b.cache.invalidate()
}

func (b *Backend) observe(route string, a spool.Attempt, outcome string) {
	if b.opts.Observe != nil {
		b.opts.Observe(route, a, outcome)
	}
}

// attemptRecord is an attempt as its record stores it.
type attemptRecord struct {
	Number     int    `json:"n"`
	AtMs       int64  `json:"at"`
	DurationUs int64  `json:"us"`
	StatusCode int    `json:"status,omitempty"`
	Error      string `json:"error,omitempty"`
}

// maxErrorLen bounds an attempt's error text in its record.
const maxErrorLen = 256

// recordAttempt appends an attempt record to the event's subject, kept for
// the attempt retention but not beyond the event's marker. A record that
// cannot be written is counted, and the delivery goes on.
func (b *Backend) recordAttempt(ctx context.Context, it *item, a spool.Attempt) {
	ttl := min(b.limits.Load().AttemptRetention, it.remaining())
	if ttl < time.Second {
		return
	}
	errText := a.Error
	if len(errText) > maxErrorLen {
		errText = errText[:maxErrorLen]
	}
	v, _ := json.Marshal(attemptRecord{Number: a.Number, AtMs: a.At.UnixMilli(), DurationUs: a.Duration.Microseconds(), StatusCode: a.StatusCode, Error: errText})
	m := b.record(it, kindAttempt, ttl)
	m.Data = v
	if _, err := b.js.PublishMsg(ctx, m); err != nil {
		b.attemptRecordsDropped.Add(1)
		b.log.Warn("natsspool: attempt record not written", zap.String("route", it.route), zap.Error(err))
	}
}

// record is a new record of kind about it, expiring after ttl.
func (b *Backend) record(it *item, kind string, ttl time.Duration) *nats.Msg {
	m := nats.NewMsg(it.subject)
	m.Header.Set(hdrKind, kind)
	m.Header.Set(hdrFp, it.fp)
	m.Header.Set(hdrItem, strconv.FormatUint(it.seq, 10))
	m.Header.Set(hdrTTL, ttlSeconds(ttl))
	return m
}

// lastRecord is the newest record on an event's subject, nil if none.
func (b *Backend) lastRecord(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	cctx, cancel := b.ctx(ctx)
	defer cancel()
	msg, err := b.queue.GetLastMsgForSubject(cctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	return msg, err
}
