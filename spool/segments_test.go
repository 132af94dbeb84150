//go:build linux

package spool

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
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
// reads back byte for byte and is delivered as it was by a replay, in the
// same process or after a restart. Their states still carry the pointers
// they were stored with, into segments now gone (see knownPointer).
func TestCompactionMovesWhatSegmentsPin(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprint("restart=", restart), func(t *testing.T) { testCompactionMovesWhatSegmentsPin(t, restart) })
	}
}

func testCompactionMovesWhatSegmentsPin(t *testing.T, restart bool) {
	opts := Options{Dir: t.TempDir(), segmentSize: 64 << 10, segmentMin: 1}
	s := openTest(t, opts)
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
	if restart {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = openTest(t, opts)
	}

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

// TestMessagesGoToSegments: every message, small or large, is written to a
// segment, after its redo record, and m/ points to it; one stored whole in
// m/ (as schema version 2 stored every message; segmentMin here) is read and
// delivered as before. All are delivered as sent, and once they are, no
// segment counts a live message.
func TestMessagesGoToSegments(t *testing.T) {
	dir := t.TempDir()
	bodies := map[string]string{"evt_small": "s", "evt_1k": strings.Repeat("k", 1024), "evt_large": strings.Repeat("l", 64<<10)}
	// The first open stores messages under 2 KiB whole, the second none.
	whole := openTest(t, Options{Dir: dir, segmentMin: 2 << 10})
	ctx := context.Background()
	if err := whole.Pause(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	ids := map[string]uint64{"evt_whole": mustEnqueue(t, whole, entry("r", "evt_whole", "w")).ID}
	bodies["evt_whole"] = "w"
	if err := whole.Close(); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, Options{Dir: dir})
	for _, id := range []string{"evt_small", "evt_1k", "evt_large"} {
		ids[id] = mustEnqueue(t, s, entry("r", id, bodies[id])).ID
	}
	states := itemStates(t, s)
	for event, id := range ids {
		err := s.db.View(func(txn *badger.Txn) error {
			item, err := getItem(txn, msgKey(id))
			// Whole in m/, or in a segment with the state's own pointer.
			if inSegment := event != "evt_whole"; err == nil && (item == nil) != inSegment {
				t.Errorf("%s: m/ there %v, want %v", event, item != nil, !inSegment)
			}
			if own := states[id].st.Flags&flagOwnPointer != 0; own != (event != "evt_whole") {
				t.Errorf("%s: own pointer %v", event, own)
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
	got := rec.byEvent(t, len(bodies), 5*time.Second)
	for event, body := range bodies {
		if got[event].Body != body {
			t.Errorf("%s: delivered body differs", event)
		}
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

// TestScanEndsASegmentAtATornRecord: scan returns the records from a place
// on, in order, segment after segment; a record cut short or failing its
// checksum ends its segment (reported as format 0), and the next segment is
// read from its start.
func TestScanEndsASegmentAtATornRecord(t *testing.T) {
	dir := t.TempDir()
	const recLen = segHeaderLen + 100
	bs, err := openBodyStore(dir, 3*recLen) // three records per segment
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		format := [...]byte{segRedo, segFormat}[i%2]
		if _, err := bs.appendRecord(format, bytes.Repeat([]byte{byte('a' + i)}, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := bs.sync(); err != nil {
		t.Fatal(err)
	}
	bs.close()
	// Segment 1 loses half its last record; segment 2's second fails its checksum.
	if err := os.Truncate(filepath.Join(dir, segmentName(1)), 2*recLen+50); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, segmentName(2)), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{'!'}, recLen+segHeaderLen+7); err != nil {
		t.Fatal(err)
	}
	f.Close()

	if bs, err = openBodyStore(dir, 3*recLen); err != nil {
		t.Fatal(err)
	}
	defer bs.close()
	for _, c := range []struct {
		from segPos
		want string
	}{
		{segPos{1, 0}, "1:0:a 1:109:b 1:218:torn 2:0:d 2:109:torn"},
		{segPos{1, recLen}, "1:109:b 1:218:torn 2:0:d 2:109:torn"},
		{segPos{2, 0}, "2:0:d 2:109:torn"},
		{segPos{3, 0}, ""},
	} {
		var got []string
		err := bs.scan(c.from, func(p bodyPtr, format byte, data []byte) error {
			if format == 0 {
				got = append(got, fmt.Sprintf("%d:%d:torn", p.seg, p.off))
			} else {
				got = append(got, fmt.Sprintf("%d:%d:%c", p.seg, p.off, data[0]))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if s := strings.Join(got, " "); s != c.want {
			t.Errorf("scan from %v: %s, want %s", c.from, s, c.want)
		}
	}
	// A new append starts a segment of its own, past the torn ones.
	p, err := bs.append([]byte("next"))
	if err != nil {
		t.Fatal(err)
	}
	if p.seg != 3 || p.off != 0 {
		t.Fatalf("first append after open went to segment %d at %d, want a new segment 3", p.seg, p.off)
	}
}

// TestLeasesReadTheirMessagesInRuns: the dispatcher reads the messages of
// the items it leases, which lie one after the other in a segment, in runs;
// each lease gets its own message, and a damaged one is left for its
// worker to read and report, without spoiling the rest of its run.
func TestLeasesReadTheirMessagesInRuns(t *testing.T) {
	s := openTest(t, Options{})
	if err := s.Pause(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	bodies := map[string]string{}
	for i := range 40 {
		id := fmt.Sprint("evt_", i)
		bodies[id] = fmt.Sprintf(`{"n":%d,"pad":%q}`, i, strings.Repeat("x", i*37))
		res := mustEnqueue(t, s, entry("r", id, bodies[id]))
		s.recent.take(res.ID) // as if it had been let go: read from its segment
	}
	var leases []work
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixQueue, '/'}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			st, err := decodeState(v)
			if err != nil {
				return err
			}
			leases = append(leases, work{key: it.Item().KeyCopy(nil), st: st})
		}
		return nil
	})
	if err != nil || len(leases) != len(bodies) {
		t.Fatalf("%d items queued, %v", len(leases), err)
	}

	// Damage the message of the 10th item in id order.
	slices.SortFunc(leases, func(a, b work) int { return cmp.Compare(keyID(a.key), keyID(b.key)) })
	bad := leases[9].st.Ptr
	f, err := os.OpenFile(filepath.Join(s.opts.Dir, "bodies", segmentName(bad.seg)), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{'!'}, int64(bad.off)+int64(bad.n)-2); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s.readLeased(leases)
	for i, w := range leases {
		switch {
		case i == 9 && w.msg != nil:
			t.Fatal("the damaged message was read")
		case i != 9 && (w.msg == nil || w.msg.EventID != fmt.Sprint("evt_", i) || string(w.msg.Body) != bodies[w.msg.EventID]):
			t.Fatalf("lease %d: %+v", i, w.msg)
		}
	}
	if _, err := s.leasedMessage(keyID(leases[9].key), leases[9].key, &leases[9].st); !errors.Is(err, errCorrupt) {
		t.Fatalf("its worker reads the damaged message: %v, want errCorrupt", err)
	}
}

// TestALeasedMessageMovedMeanwhileIsFoundThroughItsPointer: a compaction
// may move a leased item's message and reclaim its segment between the
// check of the state's pointer and the read; the read then goes through
// m/ instead of making the item a corrupt dead letter.
func TestALeasedMessageMovedMeanwhileIsFoundThroughItsPointer(t *testing.T) {
	s := openTest(t, Options{segmentSize: 64 << 10, segmentMin: 1})
	ctx := context.Background()
	s.tendMu.Lock() // no compaction until the test asks for one
	if err := s.Pause(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	const body = `{"kept":true}`
	mustEnqueue(t, s, entry("p", "evt_kept", body))
	s.RegisterRoute("ok", Route{Deliverer: newRecorder(nil)})
	for i := range 40 {
		mustEnqueue(t, s, entry("ok", fmt.Sprint("evt_", i), strings.Repeat("x", 4<<10)))
	}
	eventually(t, 10*time.Second, "the deliveries", func() bool { return routeStats(s, "ok").Bytes == 0 })
	// A live message in the active segment too: the segments are then over
	// twice their live bytes plus one segment, and the first one is sparse.
	mustEnqueue(t, s, entry("p", "evt_later", strings.Repeat("y", 4<<10)))
	key, st := firstQueued(t, s)
	id := keyID(key)
	if _, ok := s.knownPointer(id, &st); !ok {
		t.Fatal("the state's pointer of an item just stored is not sure")
	}
	s.tendMu.Unlock()
	s.tendSegments()
	if s.bodies.segment(st.Ptr.seg) != nil {
		t.Fatalf("segment %d, which held only the paused item's message, is still there", st.Ptr.seg)
	}
	// As if the lease had checked the pointer before the compaction.
	s.movedMu.Lock()
	clear(s.movedFrom)
	s.movedMu.Unlock()
	m, err := s.leasedMessage(id, key, &st)
	if err != nil || string(m.Body) != body {
		t.Fatalf("leasedMessage: %v, %v", m, err)
	}
}
