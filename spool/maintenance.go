package spool

import (
	"context"
	"errors"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// purgeInterval is how often dead letters past retention are purged; a
// variable so that tests can shorten it.
var purgeInterval = time.Minute

// gcInterval is how often value log GC runs.
const gcInterval = 5 * time.Minute

// maintenanceLoop purges dead letters past their retention every minute,
// trims attempt records when the records are over their budget, reclaims
// and compacts message segments (reclaim.go), reclaims value log space, and
// syncs Badger and the flight log within checkpointInterval of a commit
// made without a sync (redo.go).
func (s *Spool) maintenanceLoop() {
	defer s.closers.maintenance.exit()
	purge := time.NewTicker(purgeInterval)
	defer purge.Stop()
	gc := time.NewTicker(gcInterval)
	defer gc.Stop()
	checkpoint := time.NewTicker(checkpointInterval)
	defer checkpoint.Stop()
	// Each purge starts where the last one stopped, past the index keys it
	// deleted; once an hour it starts from the beginning again, in case the
	// clock went back.
	var from []byte
	restartAt := time.Now().Add(time.Hour)
	trimmer := &attemptTrimmer{s: s}
	for {
		select {
		case <-s.closers.maintenance.stopping():
			return
		case <-s.trimWake:
			if n, err := trimmer.run(); err != nil && !errors.Is(err, ErrClosed) {
				s.log.Error("trimming attempt records failed", zap.Int("deleted", n), zap.Error(err))
			} else if n > 0 {
				s.log.Info("deleted the oldest attempt records to stay within max_record_bytes", zap.Int("count", n))
			}
		case <-s.segWake:
			s.tendSegments()
		case <-purge.C:
			s.tendSegments() // what deliveries left sparse, without a nudge
			if time.Now().After(restartAt) {
				from, restartAt = nil, time.Now().Add(time.Hour)
			}
			retention := s.live.Load().deadRetention
			n, _, next, err := s.purge(context.Background(), time.Now().Add(-retention).UnixMilli(), from)
			switch {
			case err != nil && !errors.Is(err, ErrClosed):
				// From the same place next time: next may be past the
				// chunk that failed.
				s.log.Error("purging dead letters failed", zap.Error(err))
			case err == nil:
				if n > 0 {
					s.log.Info("purged dead letters past retention", zap.Int("count", n), zap.Duration("retention", retention))
				}
				from = next
			}
		case <-gc.C:
			s.valueLogGC()
		case <-checkpoint.C:
			if s.syncDue.Swap(false) {
				s.checkpointNow()
			}
		}
	}
}

// valueLogGC rewrites value log files until Badger finds none worth it.
func (s *Spool) valueLogGC() {
	for range 16 {
		if s.diskFull(s.freeNow()) { // GC writes before it frees
			return
		}
		select {
		case <-s.closers.maintenance.stopping():
			return
		default:
		}
		if err := s.db.RunValueLogGC(0.5); err != nil {
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				s.log.Warn("value log GC failed", zap.Error(err))
			}
			return
		}
	}
}

// checkpointNow syncs the flight log, then Badger with a synced commit
// through the committer, so that after a power cut both the outcomes and
// the attempts started before it count. A failure leaves the checkpoint due.
func (s *Spool) checkpointNow() {
	if err := s.flightLog.sync(); err != nil {
		if !s.flightLogFailing.Swap(true) {
			s.log.Error("cannot sync the flight log; attempts that a power cut cuts short may not be counted", zap.Error(err))
		}
		s.syncDue.Store(true)
	}
	o := &syncOp{done: make(chan struct{})}
	if err := s.submit(context.Background(), o, o.done); err != nil || o.err != nil {
		s.syncDue.Store(true)
	}
}
