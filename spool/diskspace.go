package spool

import (
	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// Badger writes its tables, write-ahead logs and value log through shared
// mappings of files it sizes with ftruncate, so their blocks are allocated
// only when a page is first written. On a full file system that write faults
// (SIGBUS) and Go's runtime ends the process: Badger v4.9.6 has no option to
// preallocate or to write with write(2), and the faults happen on Badger's
// own flush and compaction goroutines, out of reach of debug.SetPanicOnFault.
// So the spool keeps free what that background work can need at once, its
// reserve, and refuses new events before the reserve would be touched (see
// batch.admit): MinFreeDisk is what it leaves free for everyone else.
//
// Another process can still fill the disk. Badger faults only when it
// writes, so once less than a memtable is free the spool stops writing: the
// committer refuses every operation (new events get 503, deliveries wait),
// value log GC waits, and Close leaves the database as its write-ahead log
// has it instead of flushing a last table. A flush or compaction already
// running then can still fault; a file system of the spool's own avoids
// all of it.

// diskReserve is the disk space Badger's background work can need at once
// with options o, beyond what the spool has written:
//   - flushes: every memtable not yet flushed (NumMemtables queued, one in the
//     flush, the active one) becomes a level 0 table before its write-ahead
//     log is deleted;
//   - compactions: each of NumCompactors writes all its new tables before it
//     deletes the old ones; the largest routine one merges level 0 at its
//     trigger (NumLevelZeroTables memtable-sized tables) into the base level,
//     whose target is at most BaseLevelSize;
//   - value log GC, which rewrites up to a ValueLogFileSize file before it
//     deletes the old one.
func diskReserve(o badger.Options) int64 {
	flushes := int64(o.NumMemtables+2) * o.MemTableSize
	compactions := int64(o.NumCompactors) * (int64(o.NumLevelZeroTables)*o.MemTableSize + o.BaseLevelSize)
	return flushes + compactions + o.ValueLogFileSize
}

// errDiskFull refuses operations while the disk is full.
var errDiskFull = &FullError{Limit: "min_free_disk"}

// diskFull reports whether free bytes are too few for the next memtable
// flush, which means that another process filled the disk: the spool's own
// writes stop at its reserve. It logs when that starts and when it ends.
func (s *Spool) diskFull(free int64) bool {
	full := free < s.opts.MemTableSize
	if s.full.Swap(full) != full {
		if full {
			s.log.Error("the disk is full: the spool stops writing (new events get 503, deliveries wait) until space is freed",
				zap.String("dir", s.opts.Dir), zap.Int64("free", free))
		} else {
			s.log.Warn("disk space is back: the spool writes again", zap.String("dir", s.opts.Dir), zap.Int64("free", free))
		}
	}
	return full
}

// freeNow returns the free bytes on the spool's file system, or a huge
// number where they are not measured.
func (s *Spool) freeNow() int64 {
	if free, ok := freeDisk(s.opts.Dir); ok {
		return free
	}
	return 1 << 62
}
