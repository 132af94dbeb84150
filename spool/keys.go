package spool

import (
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// schemaVersion is the layout of the database, kept under v/schema. Version
// 2 added the y/ index of dead letters, built when a version 1 spool opens.
// Version 3 stores new messages from 8 KiB on in segment files, m/ holding
// a pointer; messages stored whole in m/ by older versions stay there and
// are read as before. An older version refuses to open a version 3 spool, whose
// pointers it would take for corrupt messages. Version 4 states may carry
// their message's pointer too (flagPointer), which older versions would take
// for corrupt states. Version 5 keeps an item leased at enqueue out of
// Badger until it must be written (unwritten.go), its redo record carrying
// its id: an older version would replay none of those records and call such
// an item delivered. Version 6 writes no m/ for a message in a segment: the
// item's state holds the only pointer (flagOwnPointer), and its dedupe
// record the due time of its q/ key, for Lookup.
const schemaVersion = 6

// Key schema. All integers are big-endian so that byte order is numeric order.
//
//	v/schema                       format version
//	s/item                         the last item id taken (a Badger Sequence before: its lease)
//	c/redo                         where the segments stood at the last synced commit: the replay of
//	                               enqueues starts there (redo.go)
//	r/<route name>                 route id (uint32)
//	p/<rid:4>                      present while the route is paused: since when (ms)
//	t/<rid:4>                      the route's total paused time (ms) in pauses that ended
//	x/<rid:4>                      the reason, while the route is disabled
//	m/<id:8>                       before schema 6: the immutable message (route, event id, headers,
//	                               body), or a pointer to it in a segment file (bodies.go); from schema 6
//	                               the item's state holds the pointer, and m/ only a message stored whole
//	q/<rid:4><due ms:8><id:8>      one time-ordered index per route: queued, leased and scheduled items
//	                               (an item leased at enqueue has no q/ nor m/ until it must be
//	                               written, unwritten.go)
//	z/<id:8>                       dead letter state (its message is kept until it is replayed, purged or deleted)
//	y/<dead ms:8><id:8>            one per dead letter, in the order they died: what the purge walks
//	d/<sha256(route 0 eventId)[:16]> dedupe record: id, the fingerprint's xxhash (a SHA-256 in records
//	                               written before), and from schema 6 the due time of the item's
//	                               q/ key (as enqueued, or as its last retry wrote it) and whether
//	                               the item is still as its enqueue left it, unwritten (a byte);
//	                               expires with the dedupe window
//	a/<id:8><attempt:4>            one delivery attempt's record, expires after the attempt retention
//	e/<id:8>                       present once a dead letter was deleted or purged; expires like a/
const (
	prefixRoute    = 'r'
	prefixPaused   = 'p'
	prefixPauses   = 't'
	prefixDisabled = 'x'
	prefixMessage  = 'm'
	prefixQueue    = 'q'
	prefixDead     = 'z'
	prefixDiedAt   = 'y'
	prefixDedupe   = 'd'
	prefixAttempt  = 'a'
	prefixErased   = 'e'
)

var (
	keySchema = []byte("v/schema")
	keySeq    = []byte("s/item")
	keyRedo   = []byte("c/redo")
)

const (
	queueKeyLen  = 2 + 4 + 8 + 8
	msgKeyLen    = 2 + 8
	dedupeKeyLen = 2 + 16
)

func routeKey(name string) []byte { return append([]byte{prefixRoute, '/'}, name...) }

func pausedKey(rid uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{prefixPaused, '/'}, rid)
}

func pausesKey(rid uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{prefixPauses, '/'}, rid)
}

func disabledKey(rid uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{prefixDisabled, '/'}, rid)
}

func msgKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixMessage, '/'}, id)
}

func deadKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixDead, '/'}, id)
}

// diedAtKey indexes a dead letter by the time it died.
func diedAtKey(deadMs int64, id uint64) []byte {
	k := binary.BigEndian.AppendUint64([]byte{prefixDiedAt, '/'}, uint64(max(deadMs, 0)))
	return binary.BigEndian.AppendUint64(k, id)
}

// parseDiedAtKey splits a y/ key; ok is false for anything else.
func parseDiedAtKey(k []byte) (deadMs int64, id uint64, ok bool) {
	if len(k) != 2+8+8 || k[0] != prefixDiedAt || k[1] != '/' {
		return 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(k[2:])), binary.BigEndian.Uint64(k[10:]), true
}

func erasedKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixErased, '/'}, id)
}

// attemptPrefix is the start of an item's attempt records.
func attemptPrefix(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixAttempt, '/'}, id)
}

func attemptKey(id uint64, attempt int) []byte {
	return binary.BigEndian.AppendUint32(attemptPrefix(id), uint32(attempt))
}

// queuePrefix is the start of one route's queue index.
func queuePrefix(rid uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{prefixQueue, '/'}, rid)
}

func queueKey(rid uint32, dueMs int64, id uint64) []byte {
	k := make([]byte, 0, queueKeyLen)
	k = append(k, prefixQueue, '/')
	k = binary.BigEndian.AppendUint32(k, rid)
	k = binary.BigEndian.AppendUint64(k, uint64(max(dueMs, 0)))
	return binary.BigEndian.AppendUint64(k, id)
}

// parseQueueKey splits a q/ key; ok is false for anything else.
func parseQueueKey(k []byte) (rid uint32, dueMs int64, id uint64, ok bool) {
	if len(k) != queueKeyLen || k[0] != prefixQueue || k[1] != '/' {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(k[2:]), int64(binary.BigEndian.Uint64(k[6:])), binary.BigEndian.Uint64(k[14:]), true
}

// keyID is the item id of a q/ key.
func keyID(k []byte) uint64 {
	_, _, id, _ := parseQueueKey(k)
	return id
}

func parseIDKey(k []byte) (uint64, bool) {
	if len(k) != msgKeyLen {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[2:]), true
}

// dedupeKey scopes an event id to its route. Hashing bounds the key length
// and keeps route names with separators from colliding.
func dedupeKey(route, eventID string) []byte {
	h := sha256.New()
	h.Write([]byte(route))
	h.Write([]byte{0})
	h.Write([]byte(eventID))
	return h.Sum([]byte{prefixDedupe, '/'})[:dedupeKeyLen]
}

func beUint32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

func nowMs() int64 { return time.Now().UnixMilli() }

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func appendUint64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
