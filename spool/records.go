package spool

import (
	"bytes"
	"context"
	"math"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The record budget. Dedupe records (d/, kept for their route's dedupe
// window) and attempt records (a/, and the e/ markers of deleted dead
// letters, kept for the attempt retention) outlive the items they describe,
// so they are bounded on their own by MaxRecordBytes:
//   - a new event whose dedupe record would take the dedupe records over the
//     budget is refused (max_record_bytes); a dedupe record inside its window
//     is never deleted to make room;
//   - attempt records are the first to go: once dedupe and attempt records
//     together are over the budget, the maintenance loop deletes the oldest
//     attempt records (by item id) until the records are at most 90% of it,
//     and meanwhile a new attempt record that finds no room is not written
//     (the delivery itself goes on).
//
// The spool keeps no memory per record: a recordBook counts records and
// bytes per kind in buckets by the minute they expire in, rebuilt at Open by
// a key-only scan and changed only when a batch commits.

// recordKind is the part of the budget a record counts toward.
type recordKind int

const (
	kindDedupe   recordKind = iota // d/
	kindAttempts                   // a/ and e/
	numRecordKinds
)

// recordOverhead is what Badger stores for a record in its tables beyond
// the key and value: the entry header (4 bytes), the key's version (8),
// the value's meta, user meta and expiry (about 7), the entry's offset in
// its block (4) and its share of the bloom filter (about 1). Measured
// (BenchmarkRecordBytes): 55.9 bytes per dedupe record (34 of key and
// value) in the tables, 41.8 per attempt record (about 26), less than
// counted as attempt keys share prefixes. Tombstones and the logs are not
// counted: compactions drop the first, the second have fixed sizes.
const recordOverhead = 24

// dedupeValueLen is the length of a dedupe record's value: item id,
// fingerprint, the due time (ms) of the item's q/ key (pointDedupe) and
// whether the item is as its enqueue left it, unwritten (schema 6; older
// records end after the fingerprint).
const dedupeValueLen = 8 + 8 + 8 + 1

// dedupeUnwritten marks the dedupe record of an item its enqueue left
// unwritten (unwritten.go): the replay looks for such an item.
const dedupeUnwritten = 1

// dedupeRecord is the value of a dedupe record.
func dedupeRecord(id, hash uint64, dueMs int64, unwritten bool) []byte {
	rec := appendUint64(appendUint64(appendUint64(make([]byte, 0, dedupeValueLen), id), hash), uint64(dueMs))
	if unwritten {
		return append(rec, dedupeUnwritten)
	}
	return append(rec, 0)
}

// recordSize is what a record counts toward the budget.
func recordSize(keyLen, valueLen int) int64 {
	return int64(keyLen+valueLen) + recordOverhead
}

// trimTarget is the share of the budget, in tenths, that a trim brings the
// records down to, so that it does not run again at once.
const trimTarget = 9

// trimChunk is how many attempt records one commit of a trim deletes.
const trimChunk = 256

// tally counts records and their bytes.
type tally struct{ n, bytes int64 }

func (t tally) count() RecordCount { return RecordCount{Count: t.n, Bytes: t.bytes} }

// neverMinute is the bucket of records without an expiry.
const neverMinute = math.MaxInt64

// minuteOf is the expiry bucket of a record that expires at expiresAt
// (Unix seconds, as Badger keeps it; 0: never).
func minuteOf(expiresAt uint64) int64 {
	if expiresAt == 0 || expiresAt/60 > math.MaxInt64 {
		return neverMinute
	}
	return int64(expiresAt / 60)
}

// expiryBuckets counts one kind of record by the minute its records expire
// in. A bucket is dropped once its minute is over, so a record stops
// counting at most a minute after it expired, and the memory follows the
// longest TTL in minutes, not the records.
type expiryBuckets struct {
	buckets map[int64]tally
	next    int64 // the buckets of the minutes before next are dropped
	total   tally
}

// add counts count records of bytes (negative: deleted ones) expiring in
// minute. A deletion from a bucket already dropped changes nothing.
func (e *expiryBuckets) add(minute, count, bytes int64) {
	t, ok := e.buckets[minute]
	if count < 0 || bytes < 0 {
		if !ok {
			return
		}
		count, bytes = max(count, -t.n), max(bytes, -t.bytes)
	}
	t.n += count
	t.bytes += bytes
	e.total.n += count
	e.total.bytes += bytes
	if t.n <= 0 {
		e.total.bytes -= t.bytes // rounding left over, if any
		delete(e.buckets, minute)
		return
	}
	if e.buckets == nil {
		e.buckets = map[int64]tally{}
	}
	e.buckets[minute] = t
	if minute < e.next {
		e.next = minute // expired already (the clock went back): dropped at the next expire
	}
}

// expire drops the buckets of the minutes before now's.
func (e *expiryBuckets) expire(now time.Time) {
	nm := now.Unix() / 60
	if nm <= e.next {
		return
	}
	drop := func(m int64) {
		if t, ok := e.buckets[m]; ok {
			e.total.n -= t.n
			e.total.bytes -= t.bytes
			delete(e.buckets, m)
		}
	}
	if nm-e.next > int64(len(e.buckets)) {
		for m := range e.buckets {
			if m < nm {
				drop(m)
			}
		}
	} else {
		for m := e.next; m < nm; m++ {
			drop(m)
		}
	}
	e.next = nm
}

// recordBook is the account of the spool's dedupe and attempt records,
// kept in the catalog.
type recordBook struct {
	kinds   [numRecordKinds]expiryBuckets
	dropped int64 // attempt records not written for want of room
}

// bytesAt returns the bytes of each kind at now, dropping what expired.
func (r *recordBook) bytesAt(now time.Time) (b [numRecordKinds]int64) {
	for k := range r.kinds {
		r.kinds[k].expire(now)
		b[k] = r.kinds[k].total.bytes
	}
	return b
}

// recordChange is a change of one expiry bucket.
type recordChange struct {
	kind                  recordKind
	minute, count, nbytes int64
}

// recordDelta is what a batch changes in the record book, applied when it
// commits.
type recordDelta struct {
	changes []recordChange
	staged  [numRecordKinds]int64 // bytes added, less those deleted
	dropped int64
	base    *[numRecordKinds]int64 // the book's bytes when the batch first needed them
}

// add notes count records of nbytes expiring at expiresAt (negative:
// deleted).
func (d *recordDelta) add(kind recordKind, expiresAt uint64, count, nbytes int64) {
	m := minuteOf(expiresAt)
	d.staged[kind] += nbytes
	if n := len(d.changes); n > 0 && d.changes[n-1].kind == kind && d.changes[n-1].minute == m && (d.changes[n-1].count < 0) == (count < 0) {
		d.changes[n-1].count += count
		d.changes[n-1].nbytes += nbytes
		return
	}
	d.changes = append(d.changes, recordChange{kind, m, count, nbytes})
}

// apply adds the delta to the book and reports whether the records are
// over maxBytes, or an attempt record found no room: time to trim.
func (d *recordDelta) apply(r *recordBook, now time.Time, maxBytes int64) (trim bool) {
	for _, c := range d.changes {
		r.kinds[c.kind].add(c.minute, c.count, c.nbytes)
	}
	r.dropped += d.dropped
	if len(d.changes) == 0 && d.dropped == 0 {
		return false
	}
	b := r.bytesAt(now)
	return d.dropped > 0 || b[kindDedupe]+b[kindAttempts] > maxBytes
}

// recordBytes returns the bytes of each kind of record with what the batch
// staged so far. The book changes only when a batch commits (or its
// records expire), so it is read once per batch.
func (b *batch) recordBytes() [numRecordKinds]int64 {
	if b.recs.base == nil {
		b.s.mu.Lock()
		base := b.s.cat.records.bytesAt(time.UnixMilli(b.nowMs))
		b.s.mu.Unlock()
		b.recs.base = &base
	}
	out := *b.recs.base
	for k := range out {
		out[k] += b.recs.staged[k]
	}
	return out
}

// admitRecords checks the budget for new dedupe records of size bytes.
// Attempt records do not count: they make room.
func (b *batch) admitRecords(size int64) error {
	if size == 0 {
		return nil
	}
	if b.recordBytes()[kindDedupe]+size > b.s.live.Load().maxRecordBytes {
		return &FullError{Limit: "max_record_bytes"}
	}
	return nil
}

// rewriteRecord replaces the value of the record under key, which the
// budget counts already, with update's of its value, keeping its expiry.
// Nothing is written if the record is gone or update returns nil; update
// must not keep its argument.
func (b *batch) rewriteRecord(key []byte, update func(old []byte) []byte) error {
	item, err := getItem(b.txn, key)
	if item == nil {
		return err
	}
	var value []byte
	if err := item.Value(func(old []byte) error { value = update(old); return nil }); err != nil || value == nil {
		return err
	}
	e := badger.NewEntry(key, value)
	e.ExpiresAt = item.ExpiresAt()
	return b.txn.SetEntry(e)
}

// pointDedupe rewrites the dedupe record under key, if it is item id's, as
// of an item written under a q/ key due at dueMs: Lookup finds the item
// there, and the replay of a later open knows it was not lost in flight
// (unwritten.go).
func (b *batch) pointDedupe(key []byte, id uint64, dueMs int64) error {
	return b.rewriteRecord(key, func(rec []byte) []byte {
		if len(rec) != dedupeValueLen || beUint64(rec) != id {
			return nil // of a version before 6, or of a later event with the same id
		}
		return dedupeRecord(id, beUint64(rec[8:]), dueMs, false)
	})
}

// setRecord stages a dedupe or attempt record with its TTL, counted when
// the batch commits. An attempt record that would take the records over
// the budget is not written, only counted as dropped.
func (b *batch) setRecord(kind recordKind, e *badger.Entry) error {
	size := recordSize(len(e.Key), len(e.Value))
	if kind == kindAttempts {
		if r := b.recordBytes(); r[kindDedupe]+r[kindAttempts]+size > b.s.live.Load().maxRecordBytes {
			b.recs.dropped++
			return nil
		}
	}
	if err := b.txn.SetEntry(e); err != nil {
		return err
	}
	b.recs.add(kind, e.ExpiresAt, 1, size)
	return nil
}

// loadRecords counts the dedupe and attempt records at open, by a scan of
// their keys without their values.
func (s *Spool) loadRecords() error {
	now := time.Now()
	var book recordBook
	for k := range book.kinds {
		book.kinds[k].next = now.Unix() / 60
	}
	err := s.db.View(func(txn *badger.Txn) error {
		for _, p := range []struct {
			prefix byte
			kind   recordKind
		}{{prefixDedupe, kindDedupe}, {prefixAttempt, kindAttempts}, {prefixErased, kindAttempts}} {
			prefix := []byte{p.prefix, '/'}
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			var d recordDelta
			for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
				item := it.Item()
				d.add(p.kind, item.ExpiresAt(), 1, recordSize(int(item.KeySize()), int(item.ValueSize())))
				if len(d.changes) > 1024 {
					d.apply(&book, now, math.MaxInt64)
					d.changes = d.changes[:0]
				}
			}
			it.Close()
			d.apply(&book, now, math.MaxInt64)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cat.records = book
	s.mu.Unlock()
	return nil
}

// RecordCount is how many records of a kind are stored and the bytes they
// count toward the record budget.
type RecordCount struct {
	Count int64
	Bytes int64
}

// RecordUsage is what the dedupe and attempt records hold against their
// budget, MaxRecordBytes.
type RecordUsage struct {
	Dedupe   RecordCount // one per event id within its dedupe window
	Attempts RecordCount // attempt records, and markers of deleted dead letters
	MaxBytes int64
	// AttemptRecordsDropped counts the attempt records (and markers) not
	// written since Open because the records had no room for them.
	AttemptRecordsDropped int64
}

// Records returns the record usage.
func (s *Spool) Records() RecordUsage {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &s.cat.records
	r.bytesAt(time.Now())
	return RecordUsage{
		Dedupe:                r.kinds[kindDedupe].total.count(),
		Attempts:              r.kinds[kindAttempts].total.count(),
		MaxBytes:              s.live.Load().maxRecordBytes,
		AttemptRecordsDropped: r.dropped,
	}
}

// CanRemember returns a *FullError (max_record_bytes) when a new event id
// would be refused now for want of room in the record budget, and nil
// otherwise. A caller that acts on an event before it records it (Remember)
// checks first; the record is checked again when it is written.
func (s *Spool) CanRemember() error {
	s.mu.Lock()
	b := s.cat.records.bytesAt(time.Now())
	s.mu.Unlock()
	if b[kindDedupe]+recordSize(dedupeKeyLen, dedupeValueLen) > s.live.Load().maxRecordBytes {
		return &FullError{Limit: "max_record_bytes"}
	}
	return nil
}

// nudgeTrim wakes the maintenance loop to trim attempt records.
func (s *Spool) nudgeTrim() {
	select {
	case s.trimWake <- struct{}{}:
	default:
	}
}

// trimExcess returns how many bytes of attempt records must go for the
// records to be at most limit.
func (s *Spool) trimExcess(limit int64) int64 {
	s.mu.Lock()
	b := s.cat.records.bytesAt(time.Now())
	s.mu.Unlock()
	return min(b[kindDedupe]+b[kindAttempts]-limit, b[kindAttempts])
}

// recordKey is an attempt record or marker found by a trim.
type recordKey struct {
	key       []byte
	id        uint64
	expiresAt uint64
	size      int64
}

// attemptTrimmer deletes the oldest attempt records. It keeps where it
// stopped in each prefix, so that it does not walk the tombstones of what
// it deleted before; records written behind it (a retry or a replay of an
// old item) wait until it starts from the beginning again, which it does
// when it finds nothing past where it stopped, and once an hour.
type attemptTrimmer struct {
	s         *Spool
	from      [2][]byte // a/ and e/; nil: the prefix's start
	restartAt time.Time
}

var trimPrefixes = [2][]byte{{prefixAttempt, '/'}, {prefixErased, '/'}}

// run trims the oldest attempt records until the records are at most
// trimTarget tenths of the budget, and returns how many it deleted.
func (t *attemptTrimmer) run() (int, error) {
	s := t.s
	deleted := 0
	restarted := false
	if now := time.Now(); now.After(t.restartAt) {
		t.from, t.restartAt = [2][]byte{}, now.Add(time.Hour)
	}
	for {
		select {
		case <-s.closers.maintenance.stopping():
			return deleted, nil
		default:
		}
		need := s.trimExcess(s.live.Load().maxRecordBytes / 10 * trimTarget)
		if need <= 0 {
			return deleted, nil
		}
		keys, err := t.oldest(need)
		if err != nil {
			return deleted, err
		}
		if len(keys) == 0 {
			if restarted || t.from[0] == nil && t.from[1] == nil {
				return deleted, nil // nothing left to trim: what is counted expires
			}
			t.from, restarted = [2][]byte{}, true
			continue
		}
		o := &trimOp{keys: keys, done: make(chan struct{})}
		if err := s.submit(context.Background(), o, o.done); err != nil {
			return deleted, err
		}
		if o.err != nil {
			return deleted, o.err
		}
		deleted += len(keys)
	}
}

// oldest returns up to trimChunk attempt records and markers, lowest item
// id first, from where the trimmer stopped, with at least need bytes if
// there are that many, and moves past them.
func (t *attemptTrimmer) oldest(need int64) ([]recordKey, error) {
	var found [2][]recordKey
	err := t.s.db.View(func(txn *badger.Txn) error {
		for i, prefix := range trimPrefixes {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			from := t.from[i]
			if from == nil {
				from = prefix
			}
			for it.Seek(from); it.ValidForPrefix(prefix) && len(found[i]) < trimChunk; it.Next() {
				item := it.Item()
				k := item.KeyCopy(nil)
				if len(k) < 2+8 {
					continue
				}
				found[i] = append(found[i], recordKey{key: k, id: beUint64(k[2:]), expiresAt: item.ExpiresAt(),
					size: recordSize(len(k), int(item.ValueSize()))})
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Merge the two by item id, up to the chunk or need.
	var out []recordKey
	var sum int64
	a, e := found[0], found[1]
	for len(out) < trimChunk && sum < need && (len(a) > 0 || len(e) > 0) {
		i := 0
		if len(a) == 0 || len(e) > 0 && e[0].id < a[0].id {
			i = 1
		}
		var k recordKey
		if i == 0 {
			k, a = a[0], a[1:]
		} else {
			k, e = e[0], e[1:]
		}
		out = append(out, k)
		sum += k.size
		t.from[i] = append(bytes.Clone(k.key), 0) // the next key after it
	}
	return out, nil
}

// trimOp deletes attempt records and markers found by a trim.
type trimOp struct {
	keys []recordKey
	err  error
	done chan struct{}
}

func (o *trimOp) size() int        { return len(o.keys) * 64 }
func (o *trimOp) durable() bool    { return false } // a trim lost to a power cut is made again
func (o *trimOp) finish(err error) { o.err = err; close(o.done) }

func (o *trimOp) stage(b *batch) error {
	for _, k := range o.keys {
		if err := b.txn.Delete(k.key); err != nil {
			return err
		}
		b.recs.add(kindAttempts, k.expiresAt, -1, -k.size)
	}
	return nil
}
