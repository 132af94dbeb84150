package spool

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// class is an item's place in the statistics.
type class int

const (
	classQueued    class = iota // waiting for its first attempt
	classScheduled              // waiting for a retry
	classInFlight               // leased to a worker
	classDead                   // a dead letter
	numClasses
)

// routeCounts are one route's statistics, kept in memory and rebuilt at open.
type routeCounts struct {
	n     [numClasses]int64
	bytes int64
	// pending maps each pending item's id to its receive time (ms), for the
	// oldest pending age. minID caches the oldest while minOK.
	pending map[uint64]int64
	minID   uint64
	minOK   bool
}

// oldestMs returns the receive time of the oldest pending item, 0 if none.
func (rc *routeCounts) oldestMs() int64 {
	if len(rc.pending) == 0 {
		return 0
	}
	if !rc.minOK {
		first := true
		for id := range rc.pending {
			if first || id < rc.minID {
				rc.minID, first = id, false
			}
		}
		rc.minOK = true
	}
	return rc.pending[rc.minID]
}

// catalog is the spool's in-memory view of what the database holds: route
// ids, paused routes and per-route counters. Only the committer changes it
// (after a commit), under Spool.mu.
type catalog struct {
	ridByName map[string]uint32
	names     map[uint32]string
	nextRid   uint32
	paused    map[uint32]bool
	disabled  map[uint32]string // route id -> why
	counts    map[uint32]*routeCounts
	items     int64 // stored messages, dead letters included
	bytes     int64
}

func newCatalog() catalog {
	return catalog{
		ridByName: map[string]uint32{},
		names:     map[uint32]string{},
		nextRid:   1,
		paused:    map[uint32]bool{},
		disabled:  map[uint32]string{},
		counts:    map[uint32]*routeCounts{},
	}
}

func (c *catalog) addRoute(name string, rid uint32) {
	c.ridByName[name] = rid
	c.names[rid] = name
	c.nextRid = max(c.nextRid, rid+1)
}

func (c *catalog) route(rid uint32) *routeCounts {
	rc := c.counts[rid]
	if rc == nil {
		rc = &routeCounts{pending: map[uint64]int64{}}
		c.counts[rid] = rc
	}
	return rc
}

// apply records an item's change of state: from nil means the item was
// stored, to nil means its message was deleted.
func (c *catalog) apply(id uint64, from, to *state) {
	var rc *routeCounts
	if from != nil {
		rc = c.route(from.Route)
		rc.n[from.class()]--
		if from.class() != classDead && (to == nil || to.class() == classDead) {
			delete(rc.pending, id)
			if rc.minOK && rc.minID == id {
				rc.minOK = false
			}
		}
	}
	if to != nil {
		rc = c.route(to.Route)
		rc.n[to.class()]++
		if to.class() != classDead && (from == nil || from.class() == classDead) {
			rc.pending[id] = to.ReceivedMs
			if rc.minOK && id < rc.minID {
				rc.minID = id
			}
		}
	}
	switch {
	case from == nil && to != nil:
		c.items++
		c.bytes += to.Size
		rc.bytes += to.Size
	case from != nil && to == nil:
		c.items--
		c.bytes -= from.Size
		rc.bytes -= from.Size
	}
}

// load builds the catalog from the database and makes every item leased by a
// previous process due now.
func (s *Spool) load() error {
	s.cat = newCatalog()
	var stale []leasedItem // leased by the previous process
	err := s.db.View(func(txn *badger.Txn) error {
		if item, err := txn.Get(keySchema); err == nil {
			v, _ := item.ValueCopy(nil)
			if len(v) != 1 || v[0] != recordVersion {
				return fmt.Errorf("spool: unknown schema version %v in %s", v, s.opts.Dir)
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for _, p := range []byte{prefixRoute, prefixPaused, prefixOff, prefixQueue, prefixDead} {
			prefix := []byte{p, '/'}
			for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
				item := it.Item()
				k := item.Key()
				v, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				switch p {
				case prefixRoute:
					if len(v) == 4 {
						s.cat.addRoute(string(k[2:]), beUint32(v))
					}
				case prefixPaused:
					if len(k) == 6 {
						s.cat.paused[beUint32(k[2:])] = true
					}
				case prefixOff:
					if len(k) == 6 {
						s.cat.disabled[beUint32(k[2:])] = string(v)
					}
				case prefixQueue, prefixDead:
					st, err := decodeState(v)
					if err != nil {
						s.log.Error("skipping a corrupt item state", zap.ByteString("key", k))
						continue
					}
					id, ok := idOfKey(k)
					if !ok {
						continue
					}
					if st.leased() {
						st.Flags &^= flagLeased
						stale = append(stale, leasedItem{item.KeyCopy(nil), st})
					}
					s.cat.apply(id, nil, &st)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(keySchema, []byte{recordVersion}) }); err != nil {
		return err
	}
	return s.recoverLeases(stale)
}

type leasedItem struct {
	key []byte
	st  state // with the lease flag cleared
}

// recoverLeases rewrites items leased by a previous process as due now. The
// attempt they were leased for keeps counting against max_attempts.
func (s *Spool) recoverLeases(items []leasedItem) error {
	if len(items) > 0 {
		s.log.Info("redelivering items leased by the previous process", zap.Int("items", len(items)))
	}
	now := nowMs()
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, it := range items {
		rid, _, id, _ := parseQueueKey(it.key)
		if err := wb.Delete(it.key); err != nil {
			return err
		}
		if err := wb.Set(queueKey(rid, now, id), it.st.encode()); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// idOfKey returns the item id at the end of a q/ or z/ key.
func idOfKey(k []byte) (uint64, bool) {
	if _, _, id, ok := parseQueueKey(k); ok {
		return id, true
	}
	if len(k) > 0 && k[0] == prefixDead {
		return parseIDKey(k)
	}
	return 0, false
}
