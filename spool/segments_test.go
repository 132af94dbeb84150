//go:build linux

package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"path/filepath"
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
	dead, _, err := s.ListDead(DeadFilter{}, 0, 10)
	if err != nil || len(dead) != 2 || dead[0].EventID != "evt_dead_big" || dead[1].EventID != "evt_dead_small" {
		t.Fatalf("ListDead: %+v, %v", dead, err)
	}
	rec := newRecorder(nil)
	s.RegisterRoute("old", Route{Deliverer: rec})
	got := map[string]string{}
	for range 2 {
		a := rec.next(t, 5*time.Second)
		got[a.EventID] = a.Body
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
		if st, err := s.Lookup("old", it.event); err != nil || st.State != want {
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
