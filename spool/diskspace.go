package spool

import "github.com/dgraph-io/badger/v4"

// Badger writes its tables, write-ahead logs and value log through shared
// mappings of files it sizes with ftruncate, so their blocks are allocated
// only when a page is first written. On a full file system that write faults
// (SIGBUS) and Go's runtime ends the process: Badger v4.9.6 has no option to
// preallocate or to write with write(2), and the faults happen on Badger's
// own flush and compaction goroutines, out of reach of debug.SetPanicOnFault.
// So the spool keeps free what that background work can need at once, its
// reserve, and refuses new events before the reserve would be touched (see
// batch.admit): MinFreeDisk is what it leaves free for everyone else.

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
