package spool

import (
	"encoding/binary"
	"errors"
	"net/http"
	"time"
)

// errCorrupt reports a record that cannot be decoded.
var errCorrupt = errors.New("spool: corrupt record")

// recordVersion is the first byte of every message, state and attempt record.
const recordVersion = 1

// message is the immutable part of an item, stored once under m/<id>.
type message struct {
	Route      string
	EventID    string
	ReceivedMs int64
	Header     http.Header
	Body       []byte
}

// encode gives the message as one record: its head, then its body.
func (m *message) encode() []byte {
	return append(m.encodeHead(len(m.Body)), m.Body...)
}

// encodeHead gives the record's head, everything before the body, with
// room for extra bytes more. A segment takes the head and the body as two
// buffers, so that a large body is not copied before it is written.
func (m *message) encodeHead(extra int) []byte {
	n := 32 + len(m.Route) + len(m.EventID)
	for k, vs := range m.Header {
		n += len(k) + 8
		for _, v := range vs {
			n += len(v) + 4
		}
	}
	b := make([]byte, 0, n+extra)
	b = append(b, recordVersion)
	b = appendString(b, m.Route)
	b = appendString(b, m.EventID)
	b = binary.AppendVarint(b, m.ReceivedMs)
	b = binary.AppendUvarint(b, uint64(len(m.Header)))
	for k, vs := range m.Header {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	return b
}

func decodeMessage(b []byte) (*message, error) {
	r := reader{b: b}
	if r.byte() != recordVersion {
		return nil, errCorrupt
	}
	m := &message{Route: r.string(), EventID: r.string(), ReceivedMs: r.varint()}
	if n := r.uvarint(); n > 0 && r.err == nil {
		if n > uint64(len(b)) {
			return nil, errCorrupt
		}
		m.Header = make(http.Header, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			k := r.string()
			nv := r.uvarint()
			if nv > uint64(len(b)) {
				return nil, errCorrupt
			}
			vs := make([]string, 0, nv)
			for j := uint64(0); j < nv && r.err == nil; j++ {
				vs = append(vs, r.string())
			}
			m.Header[k] = vs
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	m.Body = r.b
	return m, nil
}

// state flags.
const (
	flagLeased     = 1 << iota // written by older versions: in flight, the key's due time the lease's end
	flagSegment                // the message is in a segment (else stored whole in m/)
	flagPointer                // Ptr holds the pointer the message was stored with (schema 4)
	flagOwnPointer             // Ptr is the message's only pointer: no m/ (schema 6)
)

// state is the small mutable part of an item: the value of its q/ key while
// pending and of its z/ key once dead.
type state struct {
	Flags      uint8
	Route      uint32
	Attempt    int   // attempts of the current run: since it was received, or last replayed
	ReceivedMs int64 // when the message was received; a replay keeps it
	Size       int64 // message bytes, for accounting
	LastStatus int
	LastError  string
	DeadMs     int64
	Reason     string
	// The age clock: MaxAge counts from ClockMs (0: ReceivedMs), less the
	// time its route spent paused since then; PausedMs is the route's
	// total paused time at ClockMs (see catalog.pausedMs).
	ClockMs  int64
	PausedMs int64
	// Earlier is the number of attempts made in earlier runs, so that the
	// attempt records of a replayed item follow those of its earlier runs.
	Earlier int
	// Ptr is where the message was stored (flagPointer). With
	// flagOwnPointer it is where the message is, and a compaction that
	// moves the message rewrites the state; else m/ is the authority, and
	// a compaction rewrites only m/ (see Spool.knownPointer).
	Ptr bodyPtr
}

func (s *state) leased() bool { return s.Flags&flagLeased != 0 }

// class is the item's state for the statistics.
func (s *state) class() class {
	switch {
	case s.DeadMs != 0:
		return classDead
	case s.Attempt > 0:
		return classScheduled
	default:
		return classQueued
	}
}

const maxErrorLen = 256

func (s *state) encode() []byte {
	b := make([]byte, 0, 64+len(s.LastError)+len(s.Reason))
	b = append(b, recordVersion, s.Flags)
	b = binary.BigEndian.AppendUint32(b, s.Route)
	b = binary.AppendUvarint(b, uint64(s.Attempt))
	b = binary.AppendVarint(b, s.ReceivedMs)
	b = binary.AppendVarint(b, s.Size)
	b = binary.AppendUvarint(b, uint64(s.LastStatus))
	b = appendString(b, truncate(s.LastError, maxErrorLen))
	b = binary.AppendVarint(b, s.DeadMs)
	b = appendString(b, s.Reason)
	b = binary.AppendVarint(b, s.ClockMs)
	b = binary.AppendVarint(b, s.PausedMs)
	b = binary.AppendUvarint(b, uint64(s.Earlier))
	if s.Flags&flagPointer != 0 {
		b = binary.BigEndian.AppendUint32(b, s.Ptr.seg)
		b = binary.BigEndian.AppendUint32(b, s.Ptr.off)
		b = binary.BigEndian.AppendUint32(b, s.Ptr.n)
	}
	return b
}

func decodeState(b []byte) (state, error) {
	r := reader{b: b}
	if r.byte() != recordVersion {
		return state{}, errCorrupt
	}
	s := state{Flags: r.byte(), Route: r.uint32()}
	s.Attempt = int(r.uvarint())
	s.ReceivedMs = r.varint()
	s.Size = r.varint()
	s.LastStatus = int(r.uvarint())
	s.LastError = r.string()
	s.DeadMs = r.varint()
	s.Reason = r.string()
	if len(r.b) > 0 { // absent in records written before they existed
		s.ClockMs = r.varint()
		s.PausedMs = r.varint()
		s.Earlier = int(r.uvarint())
	}
	if s.Flags&flagPointer != 0 {
		s.Ptr = bodyPtr{seg: r.uint32(), off: r.uint32(), n: r.uint32()}
	}
	if r.err == nil && len(r.b) > 0 {
		return state{}, errCorrupt
	}
	return s, r.err
}

// clockMs is when the item's MaxAge clock started.
func (s *state) clockMs() int64 {
	if s.ClockMs != 0 {
		return s.ClockMs
	}
	return s.ReceivedMs
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// reader decodes a record; the first error sticks and later reads return zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() { r.err, r.b = errCorrupt, nil }

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uint32() uint32 {
	if len(r.b) < 4 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	r.skipVarint(n)
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	r.skipVarint(n)
	return v
}

// skipVarint consumes the n bytes a varint took. The decoders report an
// error as n <= 0 with a value of 0, which is what a failed read returns.
func (r *reader) skipVarint(n int) {
	if n <= 0 {
		r.fail()
		return
	}
	r.b = r.b[n:]
}

func (r *reader) string() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// Attempt is the record of one delivery attempt.
type Attempt struct {
	Number     int           // 1-based
	At         time.Time     // when it started
	Duration   time.Duration // until the outcome
	StatusCode int           // 0 when there was no response
	Error      string        // the transport error, if any
}

func (a *Attempt) encode() []byte {
	b := make([]byte, 0, 24+len(a.Error))
	b = append(b, recordVersion)
	b = binary.AppendVarint(b, a.At.UnixMilli())
	b = binary.AppendVarint(b, int64(a.Duration/time.Microsecond))
	b = binary.AppendUvarint(b, uint64(a.StatusCode))
	return appendString(b, truncate(a.Error, maxErrorLen))
}

func decodeAttempt(number int, b []byte) (Attempt, error) {
	r := reader{b: b}
	if r.byte() != recordVersion {
		return Attempt{}, errCorrupt
	}
	a := Attempt{Number: number, At: time.UnixMilli(r.varint())}
	a.Duration = time.Duration(r.varint()) * time.Microsecond
	a.StatusCode = int(r.uvarint())
	a.Error = r.string()
	return a, r.err
}
