//go:build linux

package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// TestLegacyMessagesStillWork: a spool written before segments (schema
// version 2, every message whole in m/: in the value log or, when small,
// in the LSM tree) opens, delivers its items, lists, replays and deletes
// its dead letters, and stores new messages in segments next to them.
func TestLegacyMessagesStillWork(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	type legacy struct {
		id    uint64
		event string
		body  []byte
		dead  bool
	}
	items := []legacy{
		{1, "evt_big", bytes.Repeat([]byte("B"), 64<<10), false},
		{2, "evt_small", []byte("small"), false},
		{3, "evt_dead_big", bytes.Repeat([]byte("D"), 64<<10), true},
		{4, "evt_dead_small", []byte("dead small"), true},
	}
	db, err := badger.Open(badgerOptions(dir, 16<<20, zap.NewNop()))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		set := func(k, v []byte) {
			if err == nil {
				err = txn.Set(k, v)
			}
		}
		set(keySchema, []byte{2})
		set(keySeq, appendUint64(nil, 4))
		set(routeKey("old"), binary.BigEndian.AppendUint32(nil, 1))
		for _, it := range items {
			msg := &message{Route: "old", EventID: it.event, ReceivedMs: now.UnixMilli(), Body: it.body}
			st := state{Route: 1, ReceivedMs: msg.ReceivedMs, Size: int64(len(msg.encode()))}
			set(msgKey(it.id), msg.encode())
			set(dedupeKey("old", it.event), appendUint64(appendUint64(nil, it.id), xxhash.Sum64(it.body)))
			if it.dead {
				st.Attempt, st.DeadMs, st.Reason = 1, now.UnixMilli(), ReasonRejected
				set(deadKey(it.id), st.encode())
				set(diedAtKey(st.DeadMs, it.id), nil)
			} else {
				set(queueKey(1, now.UnixMilli(), it.id), st.encode())
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Once closed, the value log file is truncated to what was written.
	if vlog := globBytes(t, filepath.Join(dir, "*.vlog")); vlog < 128<<10 {
		t.Fatalf("the old messages took %d bytes of value log; the test wants the large ones there", vlog)
	}

	s := openTest(t, Options{Dir: dir})
	ctx := context.Background()
	dead, _, err := s.ListDead(context.Background(), DeadFilter{}, 0, 10)
	if err != nil || len(dead) != 2 || dead[0].EventID != "evt_dead_big" || dead[1].EventID != "evt_dead_small" {
		t.Fatalf("ListDead: %+v, %v", dead, err)
	}
	rec := newRecorder(nil)
	s.RegisterRoute("old", Route{Deliverer: rec})
	got := map[string]string{}
	for id, a := range rec.byEvent(t, 2, 5*time.Second) {
		got[id] = a.Body
	}
	if n, err := s.Replay(ctx, 3); n != 1 || err != nil {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	a := rec.next(t, 5*time.Second)
	got[a.EventID] = a.Body
	for _, it := range items[:3] {
		if got[it.event] != string(it.body) {
			t.Fatalf("%s delivered with %d bytes, want its %d", it.event, len(got[it.event]), len(it.body))
		}
	}
	if n, err := s.DeleteDead(ctx, 4); n != 1 || err != nil {
		t.Fatalf("DeleteDead = %d, %v", n, err)
	}
	mustEnqueue(t, s, entry("old", "evt_new", "a new one"))
	if a := rec.next(t, 5*time.Second); a.EventID != "evt_new" || a.Body != "a new one" {
		t.Fatalf("delivered %s %q", a.EventID, a.Body)
	}
	eventually(t, 5*time.Second, "nothing stored", func() bool { items, _ := s.Usage(); return items == 0 })
	for _, it := range items {
		want := StateDelivered
		if it.id == 4 {
			want = StateDeleted
		}
		if st, err := s.Lookup(context.Background(), "old", it.event); err != nil || st.State != want {
			t.Fatalf("%s: %v, %v; want %v", it.event, st.State, err, want)
		}
	}
	s.mu.Lock()
	left := len(s.cat.segs)
	s.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d segments still count live messages", left)
	}
}

// TestEmptySegmentsAreReclaimedOnceDurable: once every message of a
// segment is delivered, the segment file is deleted, but only after the
// deliveries' deletions, committed without a sync of their own, are on
// disk: a power cut must not bring back a pointer into a deleted segment.
func TestEmptySegmentsAreReclaimedOnceDurable(t *testing.T) {
	s := openTest(t, Options{segmentSize: 64 << 10, segmentMin: 1})
	bodies := filepath.Join(s.opts.Dir, "bodies")
	var mu sync.Mutex
	var removed []uint32
	s.bodies.beforeRemove = func(n uint32) {
		if kb := dirtyKiB(t, s.opts.Dir, ".mem"); kb != 0 {
			t.Errorf("segment %d deleted with %d kB of the write-ahead log not synced", n, kb)
		}
		mu.Lock()
		removed = append(removed, n)
		mu.Unlock()
	}
	ctx := context.Background()
	if err := s.Pause(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		mustEnqueue(t, s, entry("r", fmt.Sprint("evt_", i), strings.Repeat("x", 8<<10)))
	}
	before := segmentFiles(t, bodies)
	if len(before) < 4 {
		t.Fatalf("segments %v, want several", before)
	}

	// Reclaim waits while the deliveries commit.
	s.tendMu.Lock()
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec})
	if err := s.Resume(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "everything delivered", func() bool { items, _ := s.Usage(); return items == 0 })
	if got := segmentFiles(t, bodies); !slices.Equal(got, before) {
		t.Fatalf("segments %v before the deletions were synced, want %v", got, before)
	}
	t.Logf("%d kB of the write-ahead log dirty before the reclaim", dirtyKiB(t, s.opts.Dir, ".mem"))
	s.tendMu.Unlock()

	s.tendSegments() // or the maintenance loop, nudged by the deliveries
	if got := segmentFiles(t, bodies); !slices.Equal(got, before[len(before)-1:]) {
		t.Fatalf("segments %v after everything was delivered, want only the active one %s", got, before[len(before)-1])
	}
	mu.Lock()
	defer mu.Unlock()
	if len(removed) != len(before)-1 {
		t.Fatalf("removed %v", removed)
	}
}

// TestCompactionMovesWhatSegmentsPin: dead letters spread over segments
// whose other messages were delivered pin those segments; a compaction
// moves them, the segments go, and every dead letter is still listed,
// reads back byte for byte and is delivered as it was by a replay.
func TestCompactionMovesWhatSegmentsPin(t *testing.T) {
	s := openTest(t, Options{segmentSize: 64 << 10, segmentMin: 1})
	bodies := filepath.Join(s.opts.Dir, "bodies")
	ctx := context.Background()
	s.tendMu.Lock() // no compaction until the test asks for one
	s.RegisterRoute("ok", Route{Deliverer: newRecorder(nil)})
	s.RegisterRoute("dead", Route{Deliverer: newRecorder(func(*Delivery) Outcome { return Outcome{StatusCode: 400} })})
	want := map[string]string{} // dead letters' bodies by event id
	for i := range 160 {
		route, id := "ok", fmt.Sprint("evt_", i)
		body := strings.Repeat(string(rune('a'+i%26)), 4<<10)
		if i%8 == 0 {
			route, body = "dead", fmt.Sprintf("%s-%s", id, body)
			want[id] = body
		}
		mustEnqueue(t, s, entry(route, id, body))
	}
	eventually(t, 10*time.Second, "the deliveries and dead letters", func() bool {
		return routeStats(s, "dead").Dead == int64(len(want)) && routeStats(s, "ok").Bytes == 0
	})
	before := segmentFiles(t, bodies)
	s.tendMu.Unlock()

	s.tendSegments()
	after := segmentFiles(t, bodies)
	if len(after) >= len(before)/2 {
		t.Fatalf("%d segments after the compaction, %d before", len(after), len(before))
	}
	// Within the bound: twice the live bytes plus one segment.
	total, live := globBytes(t, filepath.Join(bodies, "*.seg")), int64(0)
	s.mu.Lock()
	for _, sc := range s.cat.segs {
		live += sc.bytes
	}
	s.mu.Unlock()
	if total > 2*live+s.bodies.target {
		t.Fatalf("segments take %d bytes for %d live", total, live)
	}
	t.Logf("segments: %d before, %d after (%d bytes, %d live)", len(before), len(after), total, live)

	dead, _, err := s.ListDead(context.Background(), DeadFilter{}, 0, 1000)
	if err != nil || len(dead) != len(want) {
		t.Fatalf("ListDead: %d, %v; want %d", len(dead), err, len(want))
	}
	for _, d := range dead {
		m, err := s.message(d.ID)
		if err != nil || string(m.Body) != want[d.EventID] {
			t.Fatalf("dead letter %d (%s): %v, body intact %v", d.ID, d.EventID, err, err == nil && string(m.Body) == want[d.EventID])
		}
	}
	rec := newRecorder(nil)
	s.RegisterRoute("dead", Route{Deliverer: rec}) // in force over the first
	if n, err := s.ReplayMatching(ctx, DeadFilter{Route: "dead"}); n != len(want) || err != nil {
		t.Fatalf("ReplayMatching = %d, %v", n, err)
	}
	for range want {
		a := rec.next(t, 5*time.Second)
		if a.Body != want[a.EventID] {
			t.Fatalf("%s replayed with another body", a.EventID)
		}
	}
	// Replayed and delivered, they leave no message counted in a segment.
	waitNoLiveSegments(t, s)
}

// TestLargeMessagesGoToSegments: a message from segmentMessageMin on is
// written to a segment and m/ points to it; a smaller one is stored whole.
// Both are delivered as sent, and once they are, no segment counts a live
// message.
func TestLargeMessagesGoToSegments(t *testing.T) {
	s := openTest(t, Options{})
	ctx := context.Background()
	if err := s.Pause(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	small, large := strings.Repeat("s", 1024), strings.Repeat("l", segmentMessageMin)
	idSmall := mustEnqueue(t, s, entry("r", "evt_small", small)).ID
	idLarge := mustEnqueue(t, s, entry("r", "evt_large", large)).ID
	for _, c := range []struct {
		id      uint64
		pointer bool
	}{{idSmall, false}, {idLarge, true}} {
		err := s.db.View(func(txn *badger.Txn) error {
			_, found, err := getPointer(txn, msgKey(c.id))
			if err == nil && found != c.pointer {
				t.Errorf("item %d: m/ holds a pointer %v, want %v", c.id, found, c.pointer)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec})
	if err := s.Resume(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	got := rec.byEvent(t, 2, 5*time.Second)
	if got["evt_small"].Body != small || got["evt_large"].Body != large {
		t.Fatalf("delivered bodies differ: small %v, large %v", got["evt_small"].Body == small, got["evt_large"].Body == large)
	}
	waitNoLiveSegments(t, s)
}

// waitNoLiveSegments waits until no segment counts a live message.
func waitNoLiveSegments(t *testing.T, s *Spool) {
	t.Helper()
	eventually(t, 5*time.Second, "no live message in a segment", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, sc := range s.cat.segs {
			if sc.items != 0 {
				return false
			}
		}
		return true
	})
}
