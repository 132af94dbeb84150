package spool

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// versions counts every version Badger holds of keys with one of the
// prefixes, deletes included: what was ever written there since the last
// compaction.
func versions(t *testing.T, s *Spool, prefixes ...byte) int {
	t.Helper()
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		for _, p := range prefixes {
			prefix := []byte{p, '/'}
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, AllVersions: true})
			for it.Rewind(); it.Valid(); it.Next() {
				n++
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// liveInSegments is the number of messages the catalog counts in segments.
func liveInSegments(s *Spool) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, sc := range s.cat.segs {
		n += sc.items
	}
	return n
}

// TestAnItemDeliveredAtOnceIsNeverWritten: an item leased by its enqueue
// and delivered writes its dedupe and attempt records, and no queue key or
// message pointer, not even deleted ones; its message is counted out of its
// segment. An item that waits (its route paused) has a q/ key, and no m/:
// its state holds the pointer.
func TestAnItemDeliveredAtOnceIsNeverWritten(t *testing.T) {
	s := openTest(t, Options{})
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec})
	const n = 20
	for i := range n {
		mustEnqueue(t, s, entry("r", fmt.Sprintf("evt_%d", i), "x"))
		rec.next(t, 5*time.Second)
	}
	eventually(t, 5*time.Second, "every message counted out of its segment", func() bool { return liveInSegments(s) == 0 })
	if got := versions(t, s, prefixQueue, prefixMessage); got != 0 {
		t.Fatalf("%d versions of q/ and m/ keys, want none", got)
	}
	if got := versions(t, s, prefixDedupe, prefixAttempt); got != 2*n {
		t.Fatalf("%d dedupe and attempt records, want %d", got, 2*n)
	}
	for i := range n {
		if st, err := s.Lookup(context.Background(), "r", fmt.Sprintf("evt_%d", i)); err != nil || st.State != StateDelivered || len(st.Attempts) != 1 {
			t.Fatalf("evt_%d: %+v, %v; want delivered after one attempt", i, st, err)
		}
	}

	if err := s.Pause(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	mustEnqueue(t, s, entry("r", "evt_waits", "x"))
	if got := versions(t, s, prefixQueue); got != 1 {
		t.Fatalf("%d versions of q/ keys for an item that waits, want 1", got)
	}
	if got := versions(t, s, prefixMessage); got != 0 {
		t.Fatalf("%d versions of m/ keys for an item that waits, want none: its state has the pointer", got)
	}
}

// TestAnUnwrittenItemIsPendingUntilItsOutcome: while an item leased at
// enqueue is delivered, Lookup says pending; a checkpoint writes it before
// it syncs, and its outcome then deletes what it wrote.
func TestAnUnwrittenItemIsPendingUntilItsOutcome(t *testing.T) {
	for _, checkpoint := range []bool{false, true} {
		t.Run(fmt.Sprintf("checkpoint=%v", checkpoint), func(t *testing.T) {
			s := openTest(t, Options{})
			release := make(chan struct{})
			rec := newRecorder(func(*Delivery) Outcome { <-release; return Outcome{StatusCode: 200} })
			s.RegisterRoute("r", Route{Deliverer: rec})
			mustEnqueue(t, s, entry("r", "evt_1", "x"))
			rec.next(t, 5*time.Second)
			pending := func() {
				t.Helper()
				if st, err := s.Lookup(context.Background(), "r", "evt_1"); err != nil || st.State != StatePending {
					t.Fatalf("in flight: %+v, %v; want pending", st, err)
				}
			}
			pending()
			if got := versions(t, s, prefixQueue, prefixMessage); got != 0 {
				t.Fatalf("%d versions of q/ and m/ keys in flight, want none", got)
			}
			if checkpoint {
				s.checkpointNow()
				if got := versions(t, s, prefixQueue, prefixMessage); got != 1 {
					t.Fatalf("%d versions of q/ and m/ keys after a checkpoint, want its q/ key", got)
				}
				if s.unwritten.len() != 0 {
					t.Fatal("the checkpoint left the item unwritten")
				}
				pending()
			}
			close(release)
			eventually(t, 5*time.Second, "the item delivered", func() bool {
				st, err := s.Lookup(context.Background(), "r", "evt_1")
				return err == nil && st.State == StateDelivered
			})
			eventually(t, 5*time.Second, "its message counted out of its segment", func() bool { return liveInSegments(s) == 0 })
			if _, err := firstQueuedKey(s); err == nil {
				t.Fatal("a q/ key is left")
			}
			rec.none(t, 200*time.Millisecond)
		})
	}
}

// firstQueuedKey returns the first q/ key, or an error if there is none.
func firstQueuedKey(s *Spool) ([]byte, error) {
	var key []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixQueue, '/'}})
		defer it.Close()
		if it.Rewind(); !it.Valid() {
			return fmt.Errorf("nothing queued")
		}
		key = it.Item().KeyCopy(nil)
		return nil
	})
	return key, err
}

// TestAnUnwrittenItemThatFailsIsWritten: a retry or a dead letter writes an
// item leased at enqueue, so that the dispatcher and the dead-letter
// operations find it.
func TestAnUnwrittenItemThatFailsIsWritten(t *testing.T) {
	s := openTest(t, Options{})
	rec := newRecorder(func(d *Delivery) Outcome {
		if d.Attempt == 1 {
			return Outcome{StatusCode: 503}
		}
		return Outcome{StatusCode: 400}
	})
	s.RegisterRoute("r", Route{Deliverer: rec, Policy: Policy{MaxAttempts: 3, BackoffMin: time.Millisecond, BackoffMax: time.Millisecond}})
	mustEnqueue(t, s, entry("r", "evt_1", "body"))
	var dead []DeadLetter
	eventually(t, 5*time.Second, "a dead letter", func() bool {
		dead, _, _ = s.ListDead(context.Background(), DeadFilter{}, 0, 10)
		return len(dead) == 1
	})
	if got := len(rec.snapshot()); got != 2 {
		t.Fatalf("%d attempts, want 2 (a retry, then a 400)", got)
	}
	if m, err := s.message(dead[0].ID); err != nil || string(m.Body) != "body" {
		t.Fatalf("the dead letter's message: %v, %v", m, err)
	}
	if n := liveInSegments(s); n != 1 {
		t.Fatalf("%d messages counted in segments, want the dead letter's", n)
	}
	if n, err := s.DeleteDead(context.Background(), dead[0].ID); err != nil || n != 1 {
		t.Fatalf("DeleteDead: %d, %v", n, err)
	}
	eventually(t, 5*time.Second, "the message counted out", func() bool { return liveInSegments(s) == 0 })
}

// TestReplayReadsRedoRecordsOfBothLengths: a redo record carries the item
// id since items leased at enqueue stay unwritten; one written before, 8
// bytes shorter, is still read, and its item gets a new id.
func TestReplayReadsRedoRecordsOfBothLengths(t *testing.T) {
	msg := (&message{Route: "r", EventID: "evt_1", ReceivedMs: 1, Body: []byte("x")}).encode()
	e := preparedEntry{window: time.Hour, hash: 7}
	for _, tc := range []struct {
		redo   []byte
		wantID uint64
	}{
		{e.redoRecord(true, 42), 42},
		{e.redoRecord(true, 42)[:redoLenNoID], 0},
	} {
		r := replayer{s: &Spool{}}
		if err := r.record(bodyPtr{}, segRedo, tc.redo); err != nil {
			t.Fatal(err)
		}
		if err := r.record(bodyPtr{}, segFormat, msg); err != nil {
			t.Fatal(err)
		}
		if len(r.ops) != 1 {
			t.Fatalf("redo record of %d bytes: %d ops, want 1", len(tc.redo), len(r.ops))
		}
		got := r.ops[0].(*enqueueOp).entries[0]
		if got.id != tc.wantID || got.hash != 7 || got.window != time.Hour {
			t.Fatalf("redo record of %d bytes: id %d hash %d window %v", len(tc.redo), got.id, got.hash, got.window)
		}
	}
}

// TestIDsOfABatchThatFailedAreNotTakenAgain: records a batch appended may
// be on disk whatever becomes of it, and the replay restores items under
// the ids their redo records carry, so a batch that fails to stage does
// not give its ids to the next one.
func TestIDsOfABatchThatFailedAreNotTakenAgain(t *testing.T) {
	s := openTest(t, Options{})
	first := mustEnqueue(t, s, entry("r", "evt_1", "x")).ID
	o, err := prepare([]Entry{entry("r", "evt_2", "x")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s.commit([]op{o, &failingOp{done: make(chan struct{})}}) // staged twice: with the failing op, then without
	if o.err != nil || len(o.results) != 1 || o.results[0].Status != Accepted {
		t.Fatalf("enqueue beside a failing op: %+v, %v", o.results, o.err)
	}
	if got := o.results[0].ID; got != first+2 {
		t.Fatalf("id %d after a batch that failed to stage with id %d, want %d", got, first+1, first+2)
	}
}

// TestUnwrittenItemsAreBounded: past what one synced commit can write, an
// item leased at enqueue is written as it is stored.
func TestUnwrittenItemsAreBounded(t *testing.T) {
	s := openTest(t, Options{MemTableSize: 1 << 20, Limits: Limits{Workers: 1000}})
	max := s.batchBudget() / unwrittenPerBudget
	release := make(chan struct{})
	defer close(release)
	rec := newRecorder(func(*Delivery) Outcome { <-release; return Outcome{StatusCode: 200} })
	s.RegisterRoute("r", Route{Deliverer: rec, Concurrency: 1000})
	n := max + 20
	for i := range n {
		mustEnqueue(t, s, entry("r", fmt.Sprintf("evt_%d", i), "x"))
	}
	eventually(t, 5*time.Second, "every item in flight", func() bool { return len(rec.snapshot()) == n })
	if got := s.unwritten.len(); got != max {
		t.Fatalf("%d items unwritten, want %d", got, max)
	}
	if got := versions(t, s, prefixQueue, prefixMessage); got != 20 {
		t.Fatalf("%d versions of q/ and m/ keys, want the q/ keys of the %d items past the bound", got, 20)
	}
}

// TestARestoredItemIsNotRestoredTwice: the replay stores an item its
// enqueue left unwritten, found by its dedupe record, and rewrites that
// record as written with the item, so that a replay after a crash before
// the open's checkpoint does not store it once more.
func TestARestoredItemIsNotRestoredTwice(t *testing.T) {
	s := openTest(t, Options{CloseTimeout: 100 * time.Millisecond})
	rec := newRecorder(func(*Delivery) Outcome { return Outcome{} })
	rec.answer = nil
	s.RegisterRoute("r", Route{Deliverer: DelivererFunc(func(ctx context.Context, d *Delivery) Outcome {
		rec.Deliver(ctx, d)
		<-ctx.Done()
		return Outcome{Err: ctx.Err()}
	})})
	id := mustEnqueue(t, s, entry("r", "evt_1", "x")).ID
	rec.next(t, 5*time.Second)
	it, ok := s.unwritten.get(id)
	if !ok {
		t.Fatal("the item leased at enqueue is not unwritten")
	}
	replay := func() Result {
		t.Helper()
		o, err := prepare([]Entry{entry("r", "evt_1", "x")}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		o.replay, o.entries[0].id, o.entries[0].at = true, id, &it.st.Ptr
		s.commit([]op{o})
		if o.err != nil || len(o.results) != 1 {
			t.Fatalf("replay: %+v, %v", o.results, o.err)
		}
		return o.results[0]
	}
	if r := replay(); r.Status != Accepted || r.ID != id {
		t.Fatalf("first replay: %+v, want the item stored again as %d", r, id)
	}
	if r := replay(); r.Status != Duplicate {
		t.Fatalf("second replay: %+v, want a duplicate", r)
	}
	// Besides the key the checkpoint may have written for the unwritten
	// item (which a real replay never meets: that checkpoint moved c/redo).
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		it2 := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixQueue, '/'}, AllVersions: true})
		defer it2.Close()
		for it2.Rewind(); it2.Valid(); it2.Next() {
			if !bytes.Equal(it2.Item().Key(), it.key) {
				n++
			}
		}
		return nil
	})
	if err != nil || n != 1 {
		t.Fatalf("%d versions of q/ keys the replays wrote (%v), want the first one's", n, err)
	}
}

// TestARetriedUnwrittenItemIsNotStoredTwice: the retry of an unwritten
// item writes its q/ key and points its dedupe record there, as written,
// so that the replay of the next open, which reads the item's redo record
// past c/redo, does not take it for lost in flight, whatever became of its
// attempt record (the trim deletes it here).
func TestARetriedUnwrittenItemIsNotStoredTwice(t *testing.T) {
	// Restored after the spools' cleanup has stopped their loops, which read it.
	d := checkpointInterval
	t.Cleanup(func() { checkpointInterval = d })
	checkpointInterval = time.Hour // the item's redo record stays past c/redo
	dir := t.TempDir()
	s := openTest(t, Options{Dir: filepath.Join(dir, "running")})
	rec := newRecorder(func(*Delivery) Outcome { return Outcome{StatusCode: 503} })
	s.RegisterRoute("r", Route{Deliverer: rec, Policy: Policy{MaxAttempts: 5, BackoffMin: time.Hour, BackoffMax: time.Hour}})
	id := mustEnqueue(t, s, entry("r", "evt_1", "x")).ID
	rec.next(t, 5*time.Second)
	eventually(t, 5*time.Second, "the retry's attempt record", func() bool { return s.Records().Attempts.Count == 1 })
	s.Reconfigure(Limits{MaxRecordBytes: s.Records().Dedupe.Bytes}) // no room for it
	eventually(t, 5*time.Second, "the trim", func() bool { return s.Records().Attempts.Count == 0 })
	if got := versions(t, s, prefixQueue); got != 1 {
		t.Fatalf("%d versions of q/ keys, want the retry's", got)
	}

	// What kill -9 would leave now: Badger's logs as the page cache holds
	// them, the segments, the flight log.
	crashed := filepath.Join(dir, "crashed")
	copyFiles(t, s.opts.Dir, crashed)
	copyFiles(t, filepath.Join(s.opts.Dir, "bodies"), filepath.Join(crashed, "bodies"))
	c := openTest(t, Options{Dir: crashed})
	if items, _ := c.Usage(); items != 1 {
		t.Fatalf("%d items after the replay, want the one retried", items)
	}
	if got := versions(t, c, prefixQueue); got != 1 {
		t.Fatalf("%d versions of q/ keys after the replay, want the retry's", got)
	}
	if st, err := c.Lookup(context.Background(), "r", "evt_1"); err != nil || st.ID != id || st.State != StatePending {
		t.Fatalf("after the replay: %+v, %v; want item %d pending", st, err, id)
	}
}
