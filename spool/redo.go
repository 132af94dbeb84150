package spool

import (
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// The segments are the redo log of enqueues.
//
// Syncing Badger costs the committer most of its fixed cost per batch: its
// write-ahead and value logs are written through shared mappings, and
// syncing what was written that way costs three to four times the CPU of a
// pwrite and fdatasync (BenchmarkSyncCost). So a batch whose only ops that
// must be durable are enqueues is made durable by the segments alone: each
// stored message is preceded by a redo record (its dedupe window, its
// fingerprint, whether it ends its op), the segments are synced before the
// commit, and Badger's commit is left in its mapped logs, like a delivery
// outcome's. Every commit that does sync Badger (an operator's change, the
// checkpoint the maintenance loop makes within checkpointInterval of any
// commit left unsynced, a reclaim of segments) stores where the segments
// ended under c/redo.
//
// A crash of the process loses nothing of Badger's: the page cache keeps its
// logs. A power cut can take its commits since the last sync, which Badger
// recovers as a prefix. Open then replays every op whose redo records and
// messages lie past c/redo: an op whose dedupe records the database holds is
// a duplicate and left alone; any other is stored again, pointing to its
// messages where they are, under the item ids their redo records carry
// (new ones for records of older versions). An item whose dedupe record is
// there and says it was left unwritten, with no trace of its end, was in
// flight when the process ended (unwritten.go, lostInFlight): it is stored
// too, its attempts counted from the flight log, and its dedupe record
// rewritten as written with it. The dedupe check makes the replay
// idempotent; an op whose enqueue failed after its segments were synced
// (its commit failed) is stored by the replay too, which at least once
// allows: its sender was answered with an error and retries into a
// duplicate. Ids are never taken twice: the ids a batch took stay taken
// whether it stages and commits or not (burnIDs), since a segment rotation
// may have written its records.

// checkpointInterval is the longest a commit stays out of Badger's synced
// state (and an attempt out of the synced flight log): it bounds what an
// open replays and the outcomes and attempts a power cut can take. A
// variable for tests.
var checkpointInterval = time.Second

// redoLen is the length of a redo record: flags, dedupe window,
// fingerprint, item id. Records of older versions end before the id
// (redoLenNoID).
const (
	redoLen     = 1 + 8 + 8 + 8
	redoLenNoID = 1 + 8 + 8
)

// redoLast marks the redo record of the last entry of its op.
const redoLast = 1

// redoRecord is the redo record of e, stored as item id, which precedes
// its message.
func (e *preparedEntry) redoRecord(last bool, id uint64) []byte {
	r := make([]byte, 1, redoLen)
	if last {
		r[0] = redoLast
	}
	return appendUint64(appendUint64(appendUint64(r, uint64(e.window)), e.hash), id)
}

// replay stores again the enqueues the segments hold past c/redo that the
// database lost. It runs in open, before the committer starts, and ends
// with a synced commit, which moves c/redo past them.
func (s *Spool) replay() error {
	from, found, err := s.redoStart()
	if err != nil {
		return err
	}
	if found { // else a new database, or one of a version that synced Badger for every enqueue
		r := replayer{s: s}
		if err := s.bodies.scan(from, r.record); err != nil {
			return err
		}
		if err := r.flush(); err != nil {
			return err
		}
		if r.stored > 0 {
			s.log.Warn("stored again enqueues that the database lost or left unwritten, from the message segments", zap.Int("events", r.stored))
		}
	}
	s.started = nil
	return s.checkpoint()
}

// redoStart reads c/redo.
func (s *Spool) redoStart() (from segPos, found bool, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := getItem(txn, keyRedo)
		if item == nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if from, found = decodeSegPos(v); !found {
				return fmt.Errorf("%w: c/redo", errCorrupt)
			}
			return nil
		})
	})
	if err != nil {
		return segPos{}, false, fmt.Errorf("spool: reading c/redo: %w", err)
	}
	return from, found, nil
}

// checkpoint makes a synced commit, in the committer's place: open only.
func (s *Spool) checkpoint() error {
	o := &syncOp{done: make(chan struct{})}
	s.commit([]op{o})
	return o.err
}

// replayer collects the ops a scan of the segments finds and stores them,
// a batch at a time.
type replayer struct {
	s       *Spool
	redo    []byte          // the redo record before the next message record
	entries []preparedEntry // the op being read
	ops     []op
	bytes   int // the messages of ops
	stored  int
}

// replayBatchBytes bounds the messages a replay holds in memory at once.
const replayBatchBytes = 64 << 20

func (r *replayer) record(p bodyPtr, format byte, data []byte) error {
	switch {
	case format == segRedo && (len(data) == redoLen || len(data) == redoLenNoID):
		r.redo = data
		return nil
	case format == segFormat && r.redo != nil:
		redo := r.redo
		r.redo = nil
		m, err := decodeMessage(data)
		if err != nil {
			r.entries = r.entries[:0] // its op was never answered: a redo record precedes only sound messages
			return nil
		}
		r.bytes += len(data)
		var id uint64
		if len(redo) == redoLen {
			id = beUint64(redo[redoLenNoID:])
		}
		r.entries = append(r.entries, preparedEntry{
			id:       id,
			route:    m.Route,
			dedupe:   dedupeKey(m.Route, m.EventID),
			hash:     beUint64(redo[9:]),
			msg:      m,
			head:     data[:len(data)-len(m.Body)],
			size:     len(data),
			received: m.ReceivedMs,
			window:   time.Duration(beUint64(redo[1:])),
			at:       &p,
		})
		if redo[0]&redoLast == 0 {
			return nil
		}
		r.ops = append(r.ops, &enqueueOp{entries: r.entries, replay: true, done: make(chan struct{})})
		r.entries = nil
		if len(r.ops) >= maxBatchOps || r.bytes >= replayBatchBytes {
			return r.flush()
		}
		return nil
	default:
		// A torn record, a message moved by compaction or written by an
		// older version: the op being read, if any, was never answered.
		r.redo, r.entries = nil, nil
		return nil
	}
}

// flush stores the ops collected.
func (r *replayer) flush() error {
	if len(r.ops) == 0 {
		return nil
	}
	r.s.commit(r.ops)
	for _, o := range r.ops {
		eo := o.(*enqueueOp)
		if eo.err != nil {
			return fmt.Errorf("spool: storing again enqueues the database lost: %w", eo.err)
		}
		for _, res := range eo.results {
			if res.Status == Accepted {
				r.stored++
			}
		}
	}
	r.ops, r.bytes = r.ops[:0], 0
	return nil
}
