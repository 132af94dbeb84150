package spool

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Messages live outside Badger, in append-only segment files under
// <dir>/bodies (NNNNNNNN.seg, numbered in the order they were started), and
// the m/ key of an item holds a small pointer to its record. A record is a
// header (format, message length, CRC-32C of the message) and the encoded
// message. The committer is the only writer: it appends a batch's records
// and, before the commit that points into them, writes them with one
// positioned vectored write (no mapping, no copy into a joined buffer) and
// syncs the segments it wrote to, so that a pointer is never on disk before
// its message. Readers pread the exact record. A record left unreferenced
// (its batch failed, the process died before the commit) is garbage that
// goes with its segment.

// segmentSize is the size from which the committer starts a new segment: a
// record that would take the active segment past it goes to a new one. A
// record is never split, so an empty segment takes any message.
const segmentSize = 64 << 20

// maxMessageSize is the largest encoded message the spool stores.
const maxMessageSize = segmentSize

// segmentMessageMin is the size from which a message goes into a segment:
// every message, since the segments are the redo log of enqueues (redo.go).
// Tests may raise it to store messages whole under their m/ keys, as
// schema versions 2 and before did.
const segmentMessageMin = 1

const (
	segFormat    = 1 // the first byte of a message record
	segRedo      = 2 // the first byte of a redo record (redo.go)
	segHeaderLen = 1 + 4 + 4
	// pointerTag is the first byte of an m/ value that points into a
	// segment. A message stored whole in m/ (schema version 2 and before)
	// starts with recordVersion.
	pointerTag = 0xb0
	pointerLen = 1 + 4 + 4 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errSegmentGone is returned for a pointer into a segment that is not open:
// reclaimed after its messages were deleted or moved, or missing.
var errSegmentGone = errors.New("spool: message segment gone")

// bodyPtr is where a message is: the record at off in segment seg, whose
// message is n bytes long.
type bodyPtr struct {
	seg, off, n uint32
}

func (p bodyPtr) encode() []byte {
	b := make([]byte, 0, pointerLen)
	b = append(b, pointerTag)
	b = binary.BigEndian.AppendUint32(b, p.seg)
	b = binary.BigEndian.AppendUint32(b, p.off)
	return binary.BigEndian.AppendUint32(b, p.n)
}

// decodePointer decodes an m/ value; ok is false for anything but a
// pointer (a message stored whole).
func decodePointer(v []byte) (p bodyPtr, ok bool) {
	if len(v) != pointerLen || v[0] != pointerTag {
		return bodyPtr{}, false
	}
	return bodyPtr{seg: beUint32(v[1:]), off: beUint32(v[5:]), n: beUint32(v[9:])}, true
}

// recordLen is the bytes the record takes in its segment.
func (p bodyPtr) recordLen() int64 { return segHeaderLen + int64(p.n) }

// segment is one open segment file.
type segment struct {
	n   uint32
	f   *os.File
	end atomic.Int64 // where the next record goes; fixed once the segment is sealed
}

// bodyStore is the spool's segment files. Only the committer appends and
// syncs; reads, listing and removal are safe from any goroutine.
type bodyStore struct {
	dir    string
	target int64 // segmentSize, smaller in tests

	mu     sync.RWMutex
	segs   map[uint32]*segment
	active *segment // appended to; nil until the first append after open
	last   uint32   // the highest segment number taken

	// Committer only: the active segment's records not yet written (the
	// header and message parts of each, from queuedAt on), and the segments
	// written to since the last sync.
	queued   [][]byte
	queuedAt int64
	hdrs     []byte // the queued records' headers
	dirty    []*segment
	// beforeRemove, if set, is called before a segment is removed (tests).
	beforeRemove func(n uint32)
}

// openBodyStore opens the segments in dir, creating dir if needed. None is
// active: the first append starts a new segment, so that no record is ever
// written after what a crash may have left torn (see scan).
func openBodyStore(dir string, target int64) (*bodyStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	bs := &bodyStore{dir: dir, target: target, segs: map[uint32]*segment{}}
	for _, e := range entries {
		n, ok := parseSegmentName(e.Name())
		if !ok {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, e.Name()), os.O_RDWR, 0)
		if err == nil {
			var fi os.FileInfo
			if fi, err = f.Stat(); err == nil {
				seg := &segment{n: n, f: f}
				seg.end.Store(fi.Size())
				bs.segs[n] = seg
				bs.last = max(bs.last, n)
				continue
			}
			f.Close()
		}
		bs.close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	return bs, nil
}

func segmentName(n uint32) string { return fmt.Sprintf("%08d.seg", n) }

func parseSegmentName(name string) (uint32, bool) {
	digits, ok := strings.CutSuffix(name, ".seg")
	if !ok || len(digits) < 8 {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 32)
	return uint32(n), err == nil && n > 0
}

// append places a message, the concatenation of parts, as a record at the
// end of the active segment, or of a new one if it would take the active
// one past the target size, and returns where it is. The parts must not
// change until sync, which writes them.
func (bs *bodyStore) append(parts ...[]byte) (bodyPtr, error) {
	return bs.appendRecord(segFormat, parts...)
}

// appendRecord appends a record of the given format, as append does.
func (bs *bodyStore) appendRecord(format byte, parts ...[]byte) (bodyPtr, error) {
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	if size > maxMessageSize {
		return bodyPtr{}, fmt.Errorf("%w: a message of %d bytes", ErrTooLarge, size)
	}
	n := segHeaderLen + int64(size)
	seg := bs.active
	if seg == nil || seg.end.Load() > 0 && seg.end.Load()+n > bs.target {
		if err := bs.flush(); err != nil {
			return bodyPtr{}, err
		}
		var err error
		if seg, err = bs.rotate(); err != nil {
			return bodyPtr{}, err
		}
	}
	off := seg.end.Load()
	if len(bs.queued) == 0 {
		bs.queuedAt = off
	}
	var sum uint32
	for _, p := range parts {
		sum = crc32.Update(sum, castagnoli, p)
	}
	bs.hdrs = append(bs.hdrs, format)
	bs.hdrs = binary.BigEndian.AppendUint32(bs.hdrs, uint32(size))
	bs.hdrs = binary.BigEndian.AppendUint32(bs.hdrs, sum)
	bs.queued = append(bs.queued, bs.hdrs[len(bs.hdrs)-segHeaderLen:])
	for _, p := range parts {
		if len(p) > 0 {
			bs.queued = append(bs.queued, p)
		}
	}
	seg.end.Store(off + n)
	return bodyPtr{seg: seg.n, off: uint32(off), n: uint32(size)}, nil
}

// flush writes the queued records to the active segment. If that fails,
// the segment ends where they began again.
func (bs *bodyStore) flush() error {
	if len(bs.queued) == 0 {
		return nil
	}
	seg := bs.active
	err := writeRecords(seg.f, bs.queuedAt, bs.queued)
	clear(bs.queued) // let the messages go
	bs.queued, bs.hdrs = bs.queued[:0], bs.hdrs[:0]
	if err != nil {
		seg.end.Store(bs.queuedAt)
		return diskError(fmt.Errorf("spool: writing messages to %s: %w", seg.f.Name(), err))
	}
	if !slices.Contains(bs.dirty, seg) {
		bs.dirty = append(bs.dirty, seg)
	}
	return nil
}

// discard drops the queued records of a batch that is not committed.
func (bs *bodyStore) discard() {
	if len(bs.queued) > 0 {
		bs.active.end.Store(bs.queuedAt)
		clear(bs.queued)
		bs.queued, bs.hdrs = bs.queued[:0], bs.hdrs[:0]
	}
}

// diskError makes a full file system a full error (min_free_disk).
func diskError(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", errDiskFull, err)
	}
	return err
}

// rotate starts the next segment and makes it the active one. The file's
// directory entry is synced before any pointer into it can be.
func (bs *bodyStore) rotate() (*segment, error) {
	n := bs.last + 1
	path := filepath.Join(bs.dir, segmentName(n))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, diskError(fmt.Errorf("spool: %w", err))
	}
	if err := syncDir(bs.dir); err != nil {
		f.Close()
		os.Remove(path)
		return nil, diskError(fmt.Errorf("spool: %w", err))
	}
	seg := &segment{n: n, f: f}
	bs.mu.Lock()
	bs.segs[n] = seg
	bs.active, bs.last = seg, n
	bs.mu.Unlock()
	return seg, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// sync writes what was appended since the last sync and makes it durable.
func (bs *bodyStore) sync() error {
	if err := bs.flush(); err != nil {
		return err
	}
	for _, seg := range bs.dirty {
		// A segment removed meanwhile holds only garbage: a failed
		// batch's records, which nothing points to.
		if err := syncData(seg.f); err != nil && !errors.Is(err, os.ErrClosed) {
			return fmt.Errorf("spool: syncing %s: %w", seg.f.Name(), err)
		}
	}
	bs.dirty = bs.dirty[:0]
	return nil
}

// pending reports whether records were appended since the last sync.
func (bs *bodyStore) pending() bool { return len(bs.queued) > 0 || len(bs.dirty) > 0 }

func (bs *bodyStore) segment(n uint32) *segment {
	bs.mu.RLock()
	defer bs.mu.RUnlock()
	return bs.segs[n]
}

// read returns the message p points to, after checking its record.
func (bs *bodyStore) read(p bodyPtr) ([]byte, error) {
	buf, err := bs.readAt(p, p.recordLen())
	if err != nil {
		return nil, err
	}
	return checkSum(p, buf)
}

// checkSum returns the message of record buf, p's, if its CRC matches.
func checkSum(p bodyPtr, buf []byte) ([]byte, error) {
	if crc32.Checksum(buf[segHeaderLen:], castagnoli) != beUint32(buf[5:]) {
		return nil, fmt.Errorf("%w: message in %s at %d fails its checksum", errCorrupt, segmentName(p.seg), p.off)
	}
	return buf[segHeaderLen:], nil
}

// Bounds of a run that readRun reads at once: its bytes, and the bytes
// between two of its records (a redo record lies before each message).
const (
	maxRunBytes = 1 << 20
	maxRunGap   = 4 << 10
)

// inRun reports whether the record q points to may be read in one run
// with the records from first to last, the one before q.
func inRun(first, last, q bodyPtr) bool {
	end := int64(last.off) + last.recordLen()
	return q.seg == first.seg && int64(q.off) >= end && int64(q.off)-end <= maxRunGap &&
		int64(q.off)+q.recordLen()-int64(first.off) <= maxRunBytes
}

// readRun reads the messages of a run of records (see inRun) with one
// pread, and returns each one's, nil for a record that fails its checks
// (its reader reads it alone, and reports it). Each message is copied out
// of the run's buffer: a slow delivery must not hold a whole run.
func (bs *bodyStore) readRun(ps []bodyPtr) [][]byte {
	first, last := ps[0], ps[len(ps)-1]
	buf, err := bs.pread(first, int64(last.off)+last.recordLen()-int64(first.off))
	out := make([][]byte, len(ps))
	if err != nil {
		return out
	}
	for i, p := range ps {
		rec := buf[p.off-first.off:][:p.recordLen()]
		if checkHeader(p, rec) != nil {
			continue
		}
		if msg, err := checkSum(p, rec); err == nil {
			out[i] = bytes.Clone(msg)
		}
	}
	return out
}

// readHead returns up to max bytes from the start of the message p points
// to, unchecked by the CRC, which covers the whole message.
func (bs *bodyStore) readHead(p bodyPtr, max int) ([]byte, error) {
	buf, err := bs.readAt(p, segHeaderLen+min(int64(p.n), int64(max)))
	if err != nil {
		return nil, err
	}
	return buf[segHeaderLen:], nil
}

// readAt reads n bytes of p's record and checks its header.
func (bs *bodyStore) readAt(p bodyPtr, n int64) ([]byte, error) {
	buf, err := bs.pread(p, n)
	if err != nil {
		return nil, err
	}
	if err := checkHeader(p, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// pread reads n bytes from where p points.
func (bs *bodyStore) pread(p bodyPtr, n int64) ([]byte, error) {
	seg := bs.segment(p.seg)
	if seg == nil {
		return nil, fmt.Errorf("%w: %s", errSegmentGone, segmentName(p.seg))
	}
	buf := make([]byte, n)
	if _, err := seg.f.ReadAt(buf, int64(p.off)); err != nil {
		switch {
		case errors.Is(err, os.ErrClosed):
			return nil, fmt.Errorf("%w: %s", errSegmentGone, segmentName(p.seg))
		case errors.Is(err, io.EOF):
			return nil, fmt.Errorf("%w: message in %s at %d is past its end", errCorrupt, segmentName(p.seg), p.off)
		}
		return nil, fmt.Errorf("spool: reading %s: %w", seg.f.Name(), err)
	}
	return buf, nil
}

// checkHeader checks that buf starts with the header of p's record.
func checkHeader(p bodyPtr, buf []byte) error {
	if buf[0] != segFormat || beUint32(buf[1:]) != p.n {
		return fmt.Errorf("%w: no message of %d bytes in %s at %d", errCorrupt, p.n, segmentName(p.seg), p.off)
	}
	return nil
}

// segmentInfo describes one segment for the maintenance loop.
type segmentInfo struct {
	n      uint32
	size   int64
	active bool
}

// segments lists the open segments.
func (bs *bodyStore) segments() []segmentInfo {
	bs.mu.RLock()
	defer bs.mu.RUnlock()
	out := make([]segmentInfo, 0, len(bs.segs))
	for n, seg := range bs.segs {
		out = append(out, segmentInfo{n: n, size: seg.end.Load(), active: seg == bs.active})
	}
	return out
}

// remove closes and deletes segment n, unless it is the active one. A read
// of it that is under way completes; later ones get errSegmentGone.
func (bs *bodyStore) remove(n uint32) error {
	bs.mu.Lock()
	seg := bs.segs[n]
	if seg == nil || seg == bs.active {
		bs.mu.Unlock()
		return nil
	}
	delete(bs.segs, n)
	bs.mu.Unlock()
	if bs.beforeRemove != nil {
		bs.beforeRemove(n)
	}
	seg.f.Close()
	return os.Remove(seg.f.Name())
}

// close closes every segment.
func (bs *bodyStore) close() {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	for _, seg := range bs.segs {
		seg.f.Close()
	}
}

// segPos is a place in the segments: a segment number and an offset in it.
type segPos struct {
	seg uint32
	off int64
}

func (p segPos) encode() []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(nil, p.seg), uint64(p.off))
}

func decodeSegPos(v []byte) (segPos, bool) {
	if len(v) != 4+8 {
		return segPos{}, false
	}
	return segPos{seg: beUint32(v), off: int64(beUint64(v[4:]))}, true
}

// end is where the next record goes, the records appended so far included.
// Committer only.
func (bs *bodyStore) end() segPos {
	if bs.active == nil {
		return segPos{seg: bs.last + 1}
	}
	return segPos{seg: bs.active.n, off: bs.active.end.Load()}
}

// scan calls fn with every record from the place from on, in the order they
// were appended, segment after segment. A record that is cut short or fails
// its checksum ends its segment: what a crash left torn, written by a batch
// that was never answered; fn learns of it with format 0. Nothing is written
// after such a record, since a segment is never appended to after an open.
// scan runs before the committer starts.
func (bs *bodyStore) scan(from segPos, fn func(p bodyPtr, format byte, data []byte) error) error {
	bs.mu.RLock()
	var ns []uint32
	for n := range bs.segs {
		if n >= from.seg {
			ns = append(ns, n)
		}
	}
	bs.mu.RUnlock()
	slices.Sort(ns)
	for _, n := range ns {
		seg := bs.segment(n)
		off := int64(0)
		if n == from.seg {
			off = from.off
		}
		size := seg.end.Load()
		r := bufio.NewReaderSize(io.NewSectionReader(seg.f, off, max(size-off, 0)), 1<<20)
		hdr := make([]byte, segHeaderLen)
		for off < size {
			format, data, err := readRecord(r, hdr, size-off)
			if err != nil {
				return fmt.Errorf("spool: reading %s: %w", seg.f.Name(), err)
			}
			if format == 0 {
				if err := fn(bodyPtr{seg: n, off: uint32(off)}, 0, nil); err != nil {
					return err
				}
				break
			}
			if err := fn(bodyPtr{seg: n, off: uint32(off), n: uint32(len(data))}, format, data); err != nil {
				return err
			}
			off += segHeaderLen + int64(len(data))
		}
	}
	return nil
}

// readRecord reads the next record from r, at most left bytes long. A torn
// record (cut short, an unknown format, a failed checksum) reads as format 0.
func readRecord(r *bufio.Reader, hdr []byte, left int64) (format byte, data []byte, err error) {
	if left < segHeaderLen {
		return 0, nil, nil
	}
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, nil, err
	}
	n := int64(beUint32(hdr[1:]))
	if hdr[0] != segFormat && hdr[0] != segRedo || n > left-segHeaderLen || n > maxMessageSize {
		return 0, nil, nil
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return 0, nil, err
	}
	if crc32.Checksum(data, castagnoli) != beUint32(hdr[5:]) {
		return 0, nil, nil
	}
	return hdr[0], data, nil
}
