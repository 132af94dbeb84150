package spool

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// flightLogMax bounds the flight log; past it, the log is rewritten with
// the leases still in flight.
const flightLogMax = 1 << 20

const flightRecordLen = 12 // item id, attempt number

// flightRecord says that an attempt of an item started.
type flightRecord struct {
	id      uint64
	attempt int // the item's state's Attempt once the attempt is counted
}

// flightLog counts the attempts a crash cuts short. Leases are in memory
// (see flight), so without it an attempt that never reported back would not
// count against max_attempts, and a message that crashes the process would
// be retried forever. Before an attempt starts, its item id and attempt
// number are appended to the log (no fsync of their own: the page cache
// survives the process, and the checkpoint syncs the log within
// checkpointInterval, as it does the outcomes, see Spool.write). At
// open, an item still pending whose state counts fewer attempts than the log
// is given the logged count. A clean Close removes the log: attempts it
// interrupted are not counted.
type flightLog struct {
	mu      sync.Mutex
	path    string
	f       *os.File
	size    int64
	buf     []byte
	renamed bool // reset renamed a new log into place since the last sync
}

// readFlightLog returns the attempts a previous process started, by item:
// the highest number of each.
func readFlightLog(dir string) (map[uint64]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "flight.log"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	started := map[uint64]int{}
	for ; len(b) >= flightRecordLen; b = b[flightRecordLen:] { // a torn last record is left out
		id, n := binary.BigEndian.Uint64(b), int(binary.BigEndian.Uint32(b[8:]))
		started[id] = max(started[id], n)
	}
	return started, nil
}

// createFlightLog starts an empty log in dir, replacing what was there.
func createFlightLog(dir string) (*flightLog, error) {
	l := &flightLog{path: filepath.Join(dir, "flight.log")}
	return l, l.reset(nil)
}

// reset replaces the log with one holding recs.
func (l *flightLog) reset(recs []flightRecord) error {
	tmp := l.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(appendFlightRecords(nil, recs)); err != nil {
		f.Close()
		return err
	}
	// Synced before it replaces the log, whose older attempts it keeps.
	if err := syncData(f); err != nil {
		f.Close()
		return err
	}
	if err := os.Rename(tmp, l.path); err != nil {
		f.Close()
		return err
	}
	if l.f != nil {
		l.f.Close()
	}
	l.f, l.size, l.renamed = f, int64(len(recs)*flightRecordLen), true
	return nil
}

// sync makes what the log holds durable (the checkpoint calls it: a power
// cut then loses at most the attempts started since), and its name, if a
// reset renamed a new log into place. It syncs outside the lock, so that
// appends do not wait for the disk; a log that a reset or remove closed
// meanwhile needs no sync (reset syncs the new one).
func (l *flightLog) sync() error {
	l.mu.Lock()
	f, renamed := l.f, l.renamed
	l.renamed = false
	l.mu.Unlock()
	if f == nil {
		return nil
	}
	if renamed {
		if err := syncDir(filepath.Dir(l.path)); err != nil {
			l.mu.Lock()
			l.renamed = true
			l.mu.Unlock()
			return err
		}
	}
	if err := syncData(f); err != nil {
		l.mu.Lock()
		replaced := l.f != f
		l.mu.Unlock()
		if !replaced {
			return err
		}
	}
	return nil
}

func appendFlightRecords(b []byte, recs []flightRecord) []byte {
	for _, r := range recs {
		b = binary.BigEndian.AppendUint64(b, r.id)
		b = binary.BigEndian.AppendUint32(b, uint32(r.attempt))
	}
	return b
}

// started records attempts about to start. Once the log would pass
// flightLogMax, it is rewritten with live(): the attempts in flight.
func (l *flightLog) started(recs []flightRecord, live func() []flightRecord) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return os.ErrClosed
	}
	if l.size+int64(len(recs)*flightRecordLen) > flightLogMax {
		if err := l.reset(live()); err != nil {
			return err
		}
	}
	l.buf = appendFlightRecords(l.buf[:0], recs)
	n, err := l.f.Write(l.buf)
	l.size += int64(n)
	return err
}

// remove ends the log at a clean close.
func (l *flightLog) remove() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if rmErr := os.Remove(l.path); !errors.Is(rmErr, fs.ErrNotExist) {
		err = errors.Join(err, rmErr)
	}
	return err
}
