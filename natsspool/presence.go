package natsspool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Presence: every instance publishes, under i.<id> in the bucket, the routes
// it registers and its deliveries in flight per route, every presenceEvery.
// Another instance counts it live while it sees that record refreshed within
// presenceMissed intervals by its own clock (so clocks need not agree); an
// instance that closes deletes its record, and one that crashed is deleted
// by the first instance to see it expire.
const (
	DefaultRouteGrace    = 10 * time.Minute
	defaultPresenceEvery = 2 * time.Second
	presenceMissed       = 5         // intervals without a refresh after which an instance is gone
	purgeEvery           = time.Hour // how often the bucket's old delete markers are purged
)

// presence is an instance's record.
type presence struct {
	Routes []string            `json:"routes,omitempty"` // registered on the instance
	Counts map[string][2]int64 `json:"counts,omitempty"` // per route: deliveries in flight, kills settling
}

// peer is another instance's record as this one last saw it.
type peer struct {
	rev  uint64
	seen time.Time // when this instance saw the record last change (or first saw it)
	p    presence
}

// peers are the other instances' records, kept by the bucket's watcher.
type peers struct {
	mu sync.Mutex
	m  map[string]*peer // by instance id
}

func newInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (b *Backend) presenceKey() string { return "i." + b.id }

// presenceTTL is how long a record lasts without a refresh.
func (b *Backend) presenceTTL() time.Duration { return presenceMissed * b.opts.presenceEvery }

// applyPresence takes in a record from the watcher.
func (b *Backend) applyPresence(id string, e jetstream.KeyValueEntry) {
	if id == b.id {
		return
	}
	b.peers.mu.Lock()
	defer b.peers.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(b.peers.m, id)
		return
	}
	var p presence
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		b.log.Warn("natsspool: bad presence record", zap.String("instance", id), zap.Error(err))
		return
	}
	b.peers.m[id] = &peer{rev: e.Revision(), seen: time.Now(), p: p}
}

// livePeers are the other instances' records refreshed within presenceTTL.
func (b *Backend) livePeers() []presence {
	b.peers.mu.Lock()
	defer b.peers.mu.Unlock()
	var out []presence
	for _, p := range b.peers.m {
		if time.Since(p.seen) < b.presenceTTL() {
			out = append(out, p.p)
		}
	}
	return out
}

// registeredAnywhere are the routes this instance or a live other one
// registers.
func (b *Backend) registeredAnywhere() map[string]bool {
	out := map[string]bool{}
	for _, r := range b.registered() {
		out[r] = true
	}
	for _, p := range b.livePeers() {
		for _, r := range p.Routes {
			out[r] = true
		}
	}
	return out
}

// clusterCounts are, per route, the deliveries in flight and kills settling
// of every live instance: this one's now, the others' as last published.
func (b *Backend) clusterCounts() map[string][2]int64 {
	out := b.localCounts()
	for _, p := range b.livePeers() {
		for r, c := range p.Counts {
			have := out[r]
			out[r] = [2]int64{have[0] + c[0], have[1] + c[1]}
		}
	}
	return out
}

// presenceLoop publishes this instance's record every presenceEvery until
// ctx ends, forgets the records of instances gone, and now and then purges
// the bucket's old delete markers (each instance leaves one).
func (b *Backend) presenceLoop(ctx context.Context) {
	t := time.NewTicker(b.opts.presenceEvery)
	defer t.Stop()
	var purged time.Time
	for {
		b.publishPresence(ctx)
		b.forgetGone(ctx)
		if time.Since(purged) > purgeEvery {
			pctx, cancel := context.WithTimeout(ctx, 3*b.opts.RequestTimeout)
			if err := b.kv.PurgeDeletes(pctx); err != nil && ctx.Err() == nil {
				b.log.Warn("natsspool: old delete markers not purged", zap.Error(err))
			}
			cancel()
			purged = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (b *Backend) publishPresence(ctx context.Context) {
	p := presence{Routes: b.registered(), Counts: map[string][2]int64{}}
	slices.Sort(p.Routes)
	for r, c := range b.localCounts() {
		if c != [2]int64{} {
			p.Counts[r] = c
		}
	}
	v, _ := json.Marshal(p)
	cctx, cancel := b.ctx(ctx)
	defer cancel()
	if _, err := b.kv.Put(cctx, b.presenceKey(), v); err != nil && ctx.Err() == nil {
		b.log.Warn("natsspool: presence not published", zap.Error(err))
	}
}

// forgetGone deletes the records of instances not refreshed for twice
// presenceTTL, unless they were refreshed meanwhile.
func (b *Backend) forgetGone(ctx context.Context) {
	b.peers.mu.Lock()
	gone := map[string]uint64{}
	for id, p := range b.peers.m {
		if time.Since(p.seen) > 2*b.presenceTTL() {
			gone[id] = p.rev
		}
	}
	b.peers.mu.Unlock()
	for id, rev := range gone {
		cctx, cancel := b.ctx(ctx)
		err := b.kv.Delete(cctx, "i."+id, jetstream.LastRevision(rev))
		cancel()
		if err != nil && ctx.Err() == nil && !errors.Is(err, jetstream.ErrKeyExists) && errCode(err) != codeWrongLastSeq {
			b.log.Warn("natsspool: record of a gone instance not deleted", zap.String("instance", id), zap.Error(err))
		}
	}
}

// unpublishPresence deletes this instance's record at Close.
func (b *Backend) unpublishPresence() {
	ctx, cancel := b.ctx(context.Background())
	defer cancel()
	if err := b.kv.Delete(ctx, b.presenceKey()); err != nil {
		b.log.Warn("natsspool: presence not withdrawn; it expires", zap.Error(err))
	}
}

// presenceID is the instance id of a presence key.
func presenceID(key string) (string, bool) {
	id, ok := strings.CutPrefix(key, "i.")
	return id, ok && id != ""
}
