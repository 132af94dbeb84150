package natsspool

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/hookgate/hookgate/spool"
)

// recordBytes is what one marker or record is counted as against
// MaxRecordBytes: an estimate of its memory per replica (the subject's entry
// in the server's subject index and the TTL wheel; proposal §2.4).
const recordBytes = 150

// Refreshes of the snapshot: see refreshStats.
const (
	cacheAge      = time.Second            // how old a snapshot may be while it is asked for
	statsInterest = time.Minute            // how long after the last ask the snapshot is kept current
	refreshGap    = 100 * time.Millisecond // the least time between two reads
)

// snapshot is the cluster-wide state read from the servers.
type snapshot struct {
	at       time.Time
	items    int64 // payloads in the queue (any route) and dead letters
	bytes    int64 // their bodies' bytes (estimated, see read)
	records  int64 // events' markers: one per event id within its window
	attempts int64 // the other records on events' subjects: attempts, dead and replay records
	routes   []spool.RouteStats
}

// statsCache holds the last snapshot, plus what this instance added since;
// refreshStats reads new ones in the background.
type statsCache struct {
	mu      sync.Mutex
	snap    snapshot
	extra   snapshot // local additions since snap was read
	askedAt time.Time
	kick    chan struct{} // wakes refreshStats; capacity 1
}

func newStatsCache() statsCache { return statsCache{kick: make(chan struct{}, 1)} }

func (c *statsCache) invalidate() {
	c.mu.Lock()
	c.snap.at = time.Time{}
	c.mu.Unlock()
}

func (c *statsCache) added(items, bytes int64) {
	c.mu.Lock()
	c.extra.items += items
	c.extra.bytes += bytes
	c.mu.Unlock()
}

func (c *statsCache) addedRecords(n int64) {
	c.mu.Lock()
	c.extra.records += n
	c.mu.Unlock()
}

// peek is the snapshot plus the local additions.
func (c *statsCache) peek() snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.snap
	s.items += c.extra.items
	s.bytes += c.extra.bytes
	s.records += c.extra.records
	return s
}

// get is peek for a caller that wants current counts: a stale snapshot
// wakes refreshStats, and the answer is the last one, without waiting.
func (c *statsCache) get() snapshot {
	c.mu.Lock()
	c.askedAt = time.Now()
	stale := time.Since(c.snap.at) >= cacheAge
	c.mu.Unlock()
	if stale {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return c.peek()
}

// wanted reports whether the snapshot is stale and was asked for lately.
func (c *statsCache) wanted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Since(c.snap.at) >= cacheAge && time.Since(c.askedAt) < statsInterest
}

// refresh reads a snapshot, bounded by the request timeout. Additions made
// while it reads stay counted on top of it (it may have seen them: counted
// twice until the next read, never missed); after a failure the last
// snapshot stands for another cacheAge.
func (c *statsCache) refresh(ctx context.Context, b *Backend) {
	c.mu.Lock()
	before := c.extra
	c.mu.Unlock()
	rctx, cancel := b.ctx(ctx)
	s, err := b.read(rctx)
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("natsspool: stats not read; answering from the last ones", zap.Error(err))
		}
		c.snap.at = time.Now()
		return
	}
	c.snap = s
	c.extra.items -= before.items
	c.extra.bytes -= before.bytes
	c.extra.records -= before.records
}

// refreshStats keeps the snapshot current until ctx ends, one read at a
// time and refreshGap apart: at once when a stale one is asked for, and
// every cacheAge while one was asked for within statsInterest. No caller
// waits for it.
func (b *Backend) refreshStats(ctx context.Context) {
	tick := time.NewTicker(cacheAge)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.cache.kick:
		case <-tick.C:
			if !b.cache.wanted() {
				continue
			}
		}
		b.cache.refresh(ctx, b)
		sleep(ctx, refreshGap)
	}
}

// read takes a snapshot: the streams' states, each route consumer's
// counts, the dead letters per route, each route's oldest payload, and the
// route states. JetStream counts bytes per stream, not per subject, so a
// route's Bytes is estimated as its pending items times the body size of
// its oldest payload plus its dead letters times that of its oldest dead
// letter. Each event's records share one subject, and each route's payloads
// another, so the stream's subject count less the routes with payloads is
// the number of events remembered.
func (b *Backend) read(ctx context.Context) (snapshot, error) {
	s := snapshot{at: time.Now()}
	qi, err := b.queue.Info(ctx)
	if err != nil {
		return s, err
	}
	di, err := b.dead.Info(ctx, jetstream.WithSubjectFilter(b.n.deadFilter("", "")))
	if err != nil {
		return s, err
	}
	byRoute := map[string]*spool.RouteStats{}
	get := func(route string) *spool.RouteStats {
		r := byRoute[route]
		if r == nil {
			r = &spool.RouteStats{Route: route}
			byRoute[route] = r
		}
		return r
	}
	var payloads, queues int64
	// Read after the dead letters and before the consumers: a kill counts
	// as settling from before its dead copy is stored until after its ack.
	// Other instances' counts are as they last published them.
	local := b.clusterCounts()
	lister := b.queue.ListConsumers(ctx)
	for ci := range lister.Info() {
		route, ok := routeOfConsumer(ci.Name)
		if !ok {
			continue
		}
		r := get(route)
		r.Queued = int64(ci.NumPending)
		r.InFlight = local[route][0]
		r.Scheduled = max(int64(ci.NumAckPending)-r.InFlight-local[route][1], 0)
		if n := int64(ci.NumPending) + int64(ci.NumAckPending); n > 0 {
			payloads += n
			queues++
		}
	}
	if err := lister.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return s, err
	}
	for subj, n := range di.State.Subjects {
		if route, ok := b.n.routeOfDead(subj); ok {
			get(route).Dead += int64(n)
		}
	}
	for route, st := range b.routes.all() {
		if st.PausedSinceMs > 0 || st.Disabled != "" {
			r := get(route)
			r.Paused, r.Disabled = st.PausedSinceMs > 0, st.Disabled
		}
	}
	for _, route := range b.registered() {
		get(route)
	}
	for _, r := range byRoute {
		if pending := r.Queued + r.InFlight + r.Scheduled; pending > 0 {
			msg, err := b.queue.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(b.n.queue(r.Route)))
			if err == nil {
				ms, _ := strconv.ParseInt(msg.Header.Get(hdrReceived), 10, 64)
				r.Oldest = time.UnixMilli(ms).Truncate(time.Second)
				r.Bytes += pending * int64(len(msg.Data))
			}
		}
		if r.Dead > 0 {
			msg, err := b.dead.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(b.n.deadFilter(r.Route, "")))
			if err == nil {
				r.Bytes += r.Dead * int64(len(msg.Data))
			}
		}
		s.bytes += r.Bytes
	}
	for _, r := range byRoute {
		s.routes = append(s.routes, *r)
	}
	slices.SortFunc(s.routes, func(a, b spool.RouteStats) int { return strings.Compare(a.Route, b.Route) })
	s.items = payloads + int64(di.State.Msgs)
	s.records = max(int64(qi.State.NumSubjects)-queues, 0)
	s.attempts = max(int64(qi.State.Msgs)-payloads-s.records, 0)
	return s, nil
}

// Stats returns every route that has items, is paused or disabled, or is
// registered here, sorted by name, from the last snapshot (see
// refreshStats): at most about a second old while asked for every minute.
// Every count is cluster-wide. InFlight adds to this instance's deliveries
// the other live instances' as they last published them (presence.go), so
// up to presenceEvery (2s) late: a delivery that ended meanwhile still
// counts as in flight, and one started meanwhile as scheduled. Bytes are
// estimated (see read).
func (b *Backend) Stats() []spool.RouteStats {
	return slices.Clone(b.cache.get().routes)
}

// Usage returns the stored items (payloads and dead letters) and their
// bodies' bytes (estimated, see read), from the last snapshot as Stats.
func (b *Backend) Usage() (items, bytes int64) {
	s := b.cache.get()
	return s.items, s.bytes
}

// Records counts the events' markers as dedupe records and their other
// records as attempt records, each at recordBytes.
func (b *Backend) Records() spool.RecordUsage {
	s := b.cache.get()
	return spool.RecordUsage{
		Dedupe:                spool.RecordCount{Count: s.records, Bytes: s.records * recordBytes},
		Attempts:              spool.RecordCount{Count: s.attempts, Bytes: s.attempts * recordBytes},
		MaxBytes:              b.limits.Load().MaxRecordBytes,
		AttemptRecordsDropped: b.attemptRecordsDropped.Load(),
	}
}
