package spool

import (
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// class is an item's place in the statistics.
type class int

const (
	classQueued    class = iota // waiting for its first attempt
	classScheduled              // waiting for a retry
	classDead                   // a dead letter
	numClasses
)

// routeCounts are one route's statistics, kept in memory and rebuilt at open.
type routeCounts struct {
	n       [numClasses]int64
	bytes   int64
	pending receiveSeconds // for the oldest pending age
}

// catalog is the spool's in-memory view of what the database holds: route
// ids, paused routes and per-route counters. Only the committer changes it
// (after a commit), under Spool.mu.
type catalog struct {
	ridByName map[string]uint32
	names     map[uint32]string
	nextRid   uint32
	paused    map[uint32]int64  // route id -> since when it is paused (ms)
	pauses    map[uint32]int64  // route id -> paused time (ms) in pauses that ended
	disabled  map[uint32]string // route id -> why
	counts    map[uint32]*routeCounts
	items     int64 // stored messages, dead letters included
	bytes     int64
	nextID    uint64     // the last item id taken (s/item)
	records   recordBook // dedupe and attempt records
	segs      map[uint32]*segCount
}

// segCount is what a segment holds that is live: the messages that m/
// pointers point to. Its id range covers every item ever added to it (a
// deletion does not narrow it), so that a compaction finds the segment's
// items between its ends.
type segCount struct {
	items, bytes int64 // bytes: the records' (header and message)
	minID, maxID uint64
}

// add adds d (a batch's change of one segment) to c.
func (c *segCount) add(d *segCount) {
	c.items += d.items
	c.bytes += d.bytes
	if d.minID != 0 && (c.minID == 0 || d.minID < c.minID) {
		c.minID = d.minID
	}
	c.maxID = max(c.maxID, d.maxID)
}

// addSegments applies a batch's changes of segments and reports whether
// one of them was left without a live message.
func (c *catalog) addSegments(deltas map[uint32]*segCount) (emptied bool) {
	for n, d := range deltas {
		sc := c.segs[n]
		if sc == nil {
			sc = &segCount{}
			c.segs[n] = sc
		}
		sc.add(d)
		if sc.items <= 0 {
			delete(c.segs, n)
			emptied = true
		}
	}
	return emptied
}

func newCatalog() catalog {
	return catalog{
		ridByName: map[string]uint32{},
		names:     map[uint32]string{},
		nextRid:   1,
		paused:    map[uint32]int64{},
		pauses:    map[uint32]int64{},
		disabled:  map[uint32]string{},
		counts:    map[uint32]*routeCounts{},
		segs:      map[uint32]*segCount{},
	}
}

func (c *catalog) addRoute(name string, rid uint32) {
	c.ridByName[name] = rid
	c.names[rid] = name
	c.nextRid = max(c.nextRid, rid+1)
}

// pausedMs is how long route rid has been paused in all, up to nowMs.
func (c *catalog) pausedMs(rid uint32, nowMs int64) int64 {
	t := c.pauses[rid]
	if since, ok := c.paused[rid]; ok {
		t += max(nowMs-since, 0)
	}
	return t
}

// ageMs is how long item st has waited by its MaxAge clock at nowMs: since
// it was received or replayed, less the time its route was paused.
func (c *catalog) ageMs(st *state, nowMs int64) int64 {
	return nowMs - st.clockMs() - (c.pausedMs(st.Route, nowMs) - st.PausedMs)
}

func (c *catalog) route(rid uint32) *routeCounts {
	rc := c.counts[rid]
	if rc == nil {
		rc = &routeCounts{}
		c.counts[rid] = rc
	}
	return rc
}

// apply records an item's change of state: from nil means the item was
// stored, to nil means its message was deleted.
func (c *catalog) apply(from, to *state) {
	var rc *routeCounts
	if from != nil {
		rc = c.route(from.Route)
		rc.n[from.class()]--
		if from.class() != classDead && (to == nil || to.class() == classDead) {
			rc.pending.remove(from.ReceivedMs)
		}
	}
	if to != nil {
		rc = c.route(to.Route)
		rc.n[to.class()]++
		if to.class() != classDead && (from == nil || from.class() == classDead) {
			rc.pending.add(to.ReceivedMs)
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

// load builds the catalog from the database, brings its schema up to date
// and makes every item leased by a previous process due now, counting the
// attempts the flight log says it started.
func (s *Spool) load() error {
	s.cat = newCatalog()
	var stale []leasedItem // leased by the previous process
	started, err := readFlightLog(s.opts.Dir)
	if err != nil {
		return fmt.Errorf("spool: reading the flight log: %w", err)
	}
	s.started = started      // for the items the replay stores (unwritten.go)
	var dead []diedAt        // every dead letter, while the y/ index is missing
	var pauseStarts []uint32 // routes paused without a recorded start
	loadedMs := nowMs()
	version := byte(schemaVersion)
	err = s.db.View(func(txn *badger.Txn) error {
		if item, err := txn.Get(keySchema); err == nil {
			v, _ := item.ValueCopy(nil)
			if len(v) != 1 || v[0] < 1 || v[0] > schemaVersion {
				return fmt.Errorf("spool: unknown schema version %v in %s", v, s.opts.Dir)
			}
			version = v[0]
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		// Item ids: s/item holds the next one's base (1 less than the id),
		// written with every batch that takes ids; older versions kept a
		// Badger Sequence there, whose stored lease is such a base too.
		if item, err := txn.Get(keySeq); err == nil {
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(v) != 8 {
				return fmt.Errorf("spool: corrupt item sequence in %s", s.opts.Dir)
			}
			s.cat.nextID = beUint64(v)
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for _, p := range []byte{prefixRoute, prefixPaused, prefixPauses, prefixDisabled, prefixQueue, prefixDead} {
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
						var since int64
						if len(v) == 8 {
							since = int64(beUint64(v))
						} else {
							// Paused by schema version 1, which kept no
							// start: the pause counts from now on.
							since = loadedMs
							pauseStarts = append(pauseStarts, beUint32(k[2:]))
						}
						s.cat.paused[beUint32(k[2:])] = since
					}
				case prefixPauses:
					if len(k) == 6 && len(v) == 8 {
						s.cat.pauses[beUint32(k[2:])] = int64(beUint64(v))
					}
				case prefixDisabled:
					if len(k) == 6 {
						s.cat.disabled[beUint32(k[2:])] = string(v)
					}
				case prefixQueue, prefixDead:
					id, ok := idOfKey(k)
					if !ok {
						continue
					}
					st, err := decodeState(v)
					if err != nil {
						s.log.Error("skipping a corrupt item state", zap.ByteString("key", k))
						if p == prefixDead && version < 2 {
							dead = append(dead, diedAt{id, 0}) // for the purge to remove
						}
						continue
					}
					if p == prefixQueue && started[id] > st.Attempt {
						// An attempt the previous process started and
						// never reported back: it counts.
						st.Attempt = started[id]
						st.Flags |= flagLeased
					}
					if st.leased() {
						st.Flags &^= flagLeased
						stale = append(stale, leasedItem{item.KeyCopy(nil), st})
					}
					if p == prefixDead && version < 2 {
						dead = append(dead, diedAt{id, st.DeadMs})
					}
					s.cat.apply(nil, &st)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.indexDead(dead); err != nil {
		return err
	}
	if err := s.db.Update(func(txn *badger.Txn) error {
		for _, rid := range pauseStarts {
			if err := txn.Set(pausedKey(rid), appendUint64(nil, uint64(loadedMs))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(keySchema, []byte{schemaVersion}) }); err != nil {
		return err
	}
	if err := s.recoverLeases(stale); err != nil {
		return err
	}
	// Badger does not sync every commit (see Spool.write); these must be
	// durable before anything is written on top of them, in whichever log.
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := s.wal.syncRotated(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// diedAt is a dead letter's place in the y/ index.
type diedAt struct {
	id     uint64
	deadMs int64
}

// indexDead writes the y/ index of dead letters stored by schema version 1.
func (s *Spool) indexDead(dead []diedAt) error {
	for chunk := range slices.Chunk(dead, loadChunk) {
		err := s.db.Update(func(txn *badger.Txn) error {
			for _, d := range chunk {
				if err := txn.Set(diedAtKey(d.deadMs, d.id), nil); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("spool: indexing dead letters: %w", err)
		}
	}
	return nil
}

// loadChunk is how many items one transaction at open rewrites.
const loadChunk = 256

type leasedItem struct {
	key []byte
	st  state // with the lease flag cleared
}

// recoverLeases rewrites items leased by a previous process as due now,
// the attempt they were leased for counted against max_attempts: those in
// the flight log, and those an older version leased on disk. Each
// item moves in one transaction, so a crash cannot leave it under both keys
// or under none.
func (s *Spool) recoverLeases(items []leasedItem) error {
	if len(items) > 0 {
		s.log.Info("redelivering items leased by the previous process", zap.Int("items", len(items)))
	}
	now := nowMs()
	for len(items) > 0 {
		n := 0
		err := s.db.Update(func(txn *badger.Txn) error {
			for size := 0; n < len(items) && size < s.batchBudget(); n++ {
				it := items[n]
				rid, _, id, _ := parseQueueKey(it.key)
				v := it.st.encode()
				if err := txn.Delete(it.key); err != nil {
					return err
				}
				if err := txn.Set(queueKey(rid, now, id), v); err != nil {
					return err
				}
				size += 2*(queueKeyLen+16) + len(v)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("spool: recovering leases: %w", err)
		}
		items = items[n:]
	}
	return nil
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
