package spool

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// TestMaxAgeNeverBeforeTheFirstAttempt: an event held longer than max_age
// (a gateway that was down) still gets its first attempt.
func TestMaxAgeNeverBeforeTheFirstAttempt(t *testing.T) {
	s := openTest(t, Options{})
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec, Policy: Policy{MaxAge: time.Hour}})
	e := entry("r", "evt_old", "x")
	e.ReceivedAt = time.Now().Add(-2 * time.Hour)
	mustEnqueue(t, s, e)
	if a := rec.next(t, 5*time.Second); a.EventID != "evt_old" || a.Attempt != 1 {
		t.Fatalf("attempt %+v, want the first attempt of evt_old", a)
	}
	eventually(t, 5*time.Second, "delivered", func() bool {
		st, _ := s.Lookup(context.Background(), "r", "evt_old")
		return st.State == StateDelivered
	})
}

// TestPauseDoesNotCountTowardMaxAge: an item that failed once waits out a
// pause longer than max_age and is attempted again after the resume.
func TestPauseDoesNotCountTowardMaxAge(t *testing.T) {
	const maxAge = 3 * time.Second
	s := openTest(t, Options{})
	ctx := context.Background()
	rec := newRecorder(func(d *Delivery) Outcome {
		if d.Attempt == 1 {
			// Paused before this attempt's outcome is recorded, so the
			// retry is held by the pause.
			if err := s.Pause(ctx, "r"); err != nil {
				t.Error(err)
			}
			return Outcome{StatusCode: 503}
		}
		return Outcome{StatusCode: 200}
	})
	pol := Policy{MaxAttempts: 5, MaxAge: maxAge, BackoffMin: 10 * time.Millisecond, BackoffMax: 10 * time.Millisecond}
	s.RegisterRoute("r", Route{Deliverer: rec, Policy: pol})
	mustEnqueue(t, s, entry("r", "evt_1", "x"))
	rec.next(t, 5*time.Second)
	eventually(t, 5*time.Second, "the retry scheduled", func() bool { return routeStats(s, "r").Scheduled == 1 })
	time.Sleep(maxAge + time.Second) // paused for longer than max_age
	if err := s.Resume(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if a := rec.next(t, 5*time.Second); a.Attempt != 2 {
		t.Fatalf("after resume: attempt %d, want 2", a.Attempt)
	}
	eventually(t, 5*time.Second, "delivered", func() bool { st, _ := s.Lookup(context.Background(), "r", "evt_1"); return st.State == StateDelivered })
	if d, _, _ := s.ListDead(context.Background(), DeadFilter{}, 0, 10); len(d) != 0 {
		t.Fatalf("dead letters %+v", d)
	}
}

// TestPausedTimeSurvivesRestart: the time a route spent paused is kept
// across a restart, and a pause that outlives the process keeps counting
// from its start.
func TestPausedTimeSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openTest(t, Options{Dir: dir})
	if err := s.Pause(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := s.Resume(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if err := s.Pause(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, Options{Dir: dir})
	rid := s.cat.ridByName["r"]
	s.mu.Lock()
	total := s.cat.pauses[rid]
	since, paused := s.cat.paused[rid]
	s.mu.Unlock()
	if total < 200 || !paused || since > nowMs() || since < nowMs()-60_000 {
		t.Fatalf("after reopen: paused %v since %d, %d ms paused before; want paused, >= 200 ms", paused, since, total)
	}
}

// TestDuplicatesAnsweredWhenFull: a sender's retry of an accepted event is
// a duplicate, not a refusal, whatever bound is reached; so is a dedupe
// record of a verify-only route.
func TestDuplicatesAnsweredWhenFull(t *testing.T) {
	s := openTest(t, Options{Limits: Limits{MaxItems: 1}})
	ctx := context.Background()
	mustEnqueue(t, s, entry("r", "evt_a", "a"))
	if _, err := s.Enqueue(ctx, entry("r", "evt_b", "b")); !errors.Is(err, ErrFull) {
		t.Fatalf("second item: %v, want ErrFull", err)
	}
	if r, err := s.Enqueue(ctx, entry("r", "evt_a", "a")); err != nil || r.Status != Duplicate {
		t.Fatalf("retry at max_items: %v, %v; want a duplicate", r.Status, err)
	}
	// Below the free-disk floor.
	s.Reconfigure(Limits{MaxItems: 100})
	s.SetMinFreeDisk(1 << 60)
	if _, err := s.Enqueue(ctx, entry("r", "evt_c", "c")); !errors.Is(err, ErrFull) {
		t.Fatalf("new item below the floor: %v, want ErrFull", err)
	}
	if r, err := s.Enqueue(ctx, entry("r", "evt_a", "a")); err != nil || r.Status != Duplicate {
		t.Fatalf("retry below the floor: %v, %v; want a duplicate", r.Status, err)
	}
	if r, err := s.Enqueue(ctx, entry("r", "evt_a", "other")); err != nil || r.Status != Conflict {
		t.Fatalf("other body below the floor: %v, %v; want a conflict", r.Status, err)
	}
	if r, err := s.Remember(ctx, entry("v", "evt_v", "v")); err != nil || r.Status != Accepted {
		t.Fatalf("Remember below the floor: %v, %v", r.Status, err)
	}
	if st, err := s.Seen(context.Background(), "v", "evt_v", []byte("v")); err != nil || st != Duplicate {
		t.Fatalf("Seen after Remember: %v, %v", st, err)
	}
}

// failingOp stages a write and then fails, as a corrupt record or a
// Badger error would.
type failingOp struct {
	sideEffect func()
	err        error
	done       chan struct{}
}

func (o *failingOp) stage(b *batch) error {
	if err := b.txn.Set([]byte("t/failing"), []byte("half-written")); err != nil {
		return err
	}
	if o.sideEffect != nil {
		o.sideEffect()
	}
	return errors.New("staging failed")
}
func (o *failingOp) size() int        { return 64 }
func (o *failingOp) durable() bool    { return true }
func (o *failingOp) finish(err error) { o.err = err; close(o.done) }

func prepared(t *testing.T, s *Spool, e Entry) *enqueueOp {
	t.Helper()
	o, err := prepare([]Entry{e}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestOneFailingOpDoesNotFailItsBatch: the ops committed with a failing
// one are stored; the failing one's writes are not.
func TestOneFailingOpDoesNotFailItsBatch(t *testing.T) {
	s := openTest(t, Options{})
	a, b := prepared(t, s, entry("r", "evt_a", "a")), prepared(t, s, entry("r", "evt_b", "b"))
	bad := &failingOp{done: make(chan struct{})}
	s.commit([]op{a, bad, b})
	if bad.err == nil {
		t.Fatal("the failing op reported no error")
	}
	for _, o := range []*enqueueOp{a, b} {
		if o.err != nil || len(o.results) != 1 || o.results[0].Status != Accepted {
			t.Fatalf("an op batched with a failing one: %+v, %v", o.results, o.err)
		}
	}
	for _, id := range []string{"evt_a", "evt_b"} {
		if st, err := s.Lookup(context.Background(), "r", id); err != nil || st.State != StatePending {
			t.Fatalf("%s: %v, %v", id, st.State, err)
		}
	}
	err := s.db.View(func(txn *badger.Txn) error { _, err := txn.Get([]byte("t/failing")); return err })
	if !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatalf("the failing op's write: %v, want none", err)
	}
}

// TestAnOutcomeThatFailsToCommitLeavesItsItemDue: when the outcome of an
// attempt cannot be committed, its item is left as it was, no longer in
// flight, and the dispatcher, pointed back at it, delivers it again.
func TestAnOutcomeThatFailsToCommitLeavesItsItemDue(t *testing.T) {
	s, key, st := pausedWithOneItem(t)
	id := keyID(key)
	s.flight.add(id, &st)
	o := &finishOp{s: s, key: key, leased: &st, to: toDelivered, attempt: &Attempt{Number: 1}}
	s.commit([]op{o, &failingOp{done: make(chan struct{})}}) // committed without the failing op
	if leased(s, id) {
		t.Fatal("still in flight after its outcome was committed")
	}

	mustEnqueue(t, s, entry("r", "evt_2", "x"))
	key, st = firstQueued(t, s)
	id = keyID(key)
	// A dispatcher pass (the enqueue nudged one) takes the rewind it finds,
	// so a try that a pass may have met is tried again.
	rewound := false
	for try := 0; try < 20 && !rewound; try++ {
		s.flight.add(id, &st)
		(&finishOp{s: s, key: key, leased: &st, to: toDelivered}).finish(errors.New("disk on fire"))
		if leased(s, id) {
			t.Fatal("still in flight after its outcome failed to commit")
		}
		s.rewindMu.Lock()
		rewound = bytes.Equal(s.rewind[st.Route], key)
		s.rewindMu.Unlock()
	}
	if !rewound {
		t.Fatal("the dispatcher is not pointed back at the item")
	}
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec})
	if err := s.Resume(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	if a := rec.next(t, 10*time.Second); a.EventID != "evt_2" || a.Attempt != 1 {
		t.Fatalf("delivered %s attempt %d, want evt_2 attempt 1", a.EventID, a.Attempt)
	}
	rec.none(t, 200*time.Millisecond)
}

// leased reports whether item id's lease is still open. A dispatcher pass
// that is running keeps an ended lease in flight until it ends (see
// flight.done), so flight.has would race with it.
func leased(s *Spool, id uint64) bool {
	s.flight.mu.Lock()
	defer s.flight.mu.Unlock()
	it, ok := s.flight.items[id]
	return ok && !it.done
}

// pausedWithOneItem opens a spool holding one item, queued on route "r",
// which is paused so that the dispatcher leaves it to the test.
func pausedWithOneItem(t *testing.T) (*Spool, []byte, state) {
	t.Helper()
	s := openTest(t, Options{})
	if err := s.Pause(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	mustEnqueue(t, s, entry("r", "evt_1", "x"))
	key, st := firstQueued(t, s)
	return s, key, st
}

// firstQueued returns the first q/ key and its state.
func firstQueued(t *testing.T, s *Spool) (key []byte, st state) {
	t.Helper()
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixQueue, '/'}})
		defer it.Close()
		it.Rewind()
		if !it.Valid() {
			return errors.New("nothing queued")
		}
		key = it.Item().KeyCopy(nil)
		return it.Item().Value(func(v []byte) (err error) { st, err = decodeState(v); return err })
	})
	if err != nil {
		t.Fatal(err)
	}
	return key, st
}

// TestCorruptDeadLettersCanBeDeletedAndPurged: a dead letter whose record
// cannot be read is still deleted by id and by the purge, and it fails no
// other op of its batch.
func TestCorruptDeadLettersCanBeDeletedAndPurged(t *testing.T) {
	s := openTest(t, Options{})
	ctx := context.Background()
	s.RegisterRoute("r", Route{Deliverer: newRecorder(func(*Delivery) Outcome { return Outcome{StatusCode: 400} })})
	for i := range 3 {
		mustEnqueue(t, s, entry("r", fmt.Sprintf("evt_%d", i), "x"))
	}
	eventually(t, 5*time.Second, "3 dead letters", func() bool { return routeStats(s, "r").Dead == 3 })
	dead, _, _ := s.ListDead(context.Background(), DeadFilter{}, 0, 10)
	for _, d := range dead[:2] {
		if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(deadKey(d.ID), []byte{0xff}) }); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.DeleteDead(ctx, dead[0].ID, dead[2].ID); n != 2 || err != nil {
		t.Fatalf("DeleteDead of a corrupt and a sound one = %d, %v", n, err)
	}
	if n, err := s.PurgeDead(ctx, time.Now().Add(time.Minute)); n != 1 || err != nil {
		t.Fatalf("PurgeDead of the other corrupt one = %d, %v", n, err)
	}
	err := s.db.View(func(txn *badger.Txn) error {
		for _, d := range dead {
			for _, k := range [][]byte{deadKey(d.ID), msgKey(d.ID)} {
				if _, err := txn.Get(k); !errors.Is(err, badger.ErrKeyNotFound) {
					return fmt.Errorf("key %q of dead letter %d: %v", k, d.ID, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTooLargeBodyRefused: a body over MaxBodySize is refused before it
// reaches a batch.
func TestTooLargeBodyRefused(t *testing.T) {
	s := openTest(t, Options{})
	e := entry("r", "evt_big", "")
	e.Body = make([]byte, MaxBodySize+1)
	if _, err := s.Enqueue(context.Background(), e); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Enqueue of %d bytes: %v, want ErrTooLarge", len(e.Body), err)
	}
	e.Body = e.Body[:64<<10]
	if r, err := s.Enqueue(context.Background(), e); err != nil || r.Status != Accepted {
		t.Fatalf("Enqueue of 64 KiB: %v, %v", r.Status, err)
	}
}

// TestOldestPendingIsTheOldestReceiveTime: a replayed dead letter keeps its
// receive time, and no younger item hides an older one.
func TestOldestPendingIsTheOldestReceiveTime(t *testing.T) {
	s := openTest(t, Options{})
	ctx := context.Background()
	s.RegisterRoute("r", Route{Deliverer: newRecorder(func(*Delivery) Outcome { return Outcome{StatusCode: 400} })})
	now := time.Now()
	old := entry("r", "evt_old", "x")
	old.ReceivedAt = now.Add(-2 * time.Hour)
	res := mustEnqueue(t, s, old)
	eventually(t, 5*time.Second, "a dead letter", func() bool { return routeStats(s, "r").Dead == 1 })
	if err := s.Pause(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	stalled := entry("r", "evt_stalled", "y")
	stalled.ReceivedAt = now.Add(-time.Hour)
	mustEnqueue(t, s, stalled)
	if got := routeStats(s, "r").Oldest; !got.Equal(stalled.ReceivedAt.Truncate(time.Second)) {
		t.Fatalf("oldest %v, want the stalled item's %v", got, stalled.ReceivedAt)
	}
	if n, err := s.Replay(ctx, res.ID); n != 1 || err != nil {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	if got := routeStats(s, "r").Oldest; !got.Equal(old.ReceivedAt.Truncate(time.Second)) {
		t.Fatalf("oldest after the replay %v, want the replayed item's receive time %v", got, old.ReceivedAt)
	}
}

// TestLeaseRecoveryIsAtomicPerItem: every item leased by a previous process
// moves to its new key in the transaction that deletes its old one, even
// when the recovery takes many transactions.
func TestLeaseRecoveryIsAtomicPerItem(t *testing.T) {
	dir := t.TempDir()
	const n = 3000
	s := openTest(t, Options{Dir: dir, MemTableSize: 1 << 20})
	enqueueN(t, s, "r", n)
	s.Close()
	// Lease every item, as a process that died mid-delivery leaves them;
	// errors of various lengths make the transactions split at odd places.
	db, err := badger.Open(badgerOptions(dir, 1<<20, s.log))
	if err != nil {
		t.Fatal(err)
	}
	prefix := []byte{prefixQueue, '/'}
	for done := false; !done; {
		err := db.Update(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			defer it.Close()
			count := 0
			for it.Rewind(); it.Valid(); it.Next() {
				st, err := decodeState(mustValue(t, it.Item()))
				if err != nil {
					return err
				}
				if st.leased() {
					continue
				}
				st.Flags |= flagLeased
				st.Attempt = 1
				st.LastError = strings.Repeat("e", int(count*37%250))
				if err := txn.Set(it.Item().KeyCopy(nil), st.encode()); err != nil {
					return err
				}
				if count++; count == 200 {
					return nil
				}
			}
			done = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s = openTest(t, Options{Dir: dir, MemTableSize: 1 << 20})
	type versions struct{ deleted, set uint64 }
	byID := map[uint64]*versions{}
	s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, AllVersions: true})
		defer it.Close()
		var last []byte
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if bytes.Equal(item.Key(), last) {
				continue // only the newest version of each key
			}
			last = item.KeyCopy(last[:0])
			_, _, id, _ := parseQueueKey(item.Key())
			v := byID[id]
			if v == nil {
				v = &versions{}
				byID[id] = v
			}
			if item.IsDeletedOrExpired() {
				v.deleted = item.Version()
			} else {
				v.set = item.Version()
			}
		}
		return nil
	})
	if len(byID) != n {
		t.Fatalf("%d items after recovery, want %d", len(byID), n)
	}
	for id, v := range byID {
		if v.deleted == 0 || v.deleted != v.set {
			t.Fatalf("item %d: old key deleted at version %d, new key written at %d", id, v.deleted, v.set)
		}
	}
	if rs := routeStats(s, "r"); rs.Scheduled != n {
		t.Fatalf("after recovery: %s, want %d scheduled", statsString(rs), n)
	}
}

func mustValue(t *testing.T, item *badger.Item) []byte {
	v, err := item.ValueCopy(nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestReplayKeepsAttemptHistory: the attempts of a replayed item follow
// those of its earlier run instead of overwriting them.
func TestReplayKeepsAttemptHistory(t *testing.T) {
	s := openTest(t, Options{})
	var calls atomic.Int32
	s.RegisterRoute("r", Route{Deliverer: DelivererFunc(func(context.Context, *Delivery) Outcome {
		if calls.Add(1) == 1 {
			return Outcome{StatusCode: 400}
		}
		return Outcome{StatusCode: 204}
	})})
	res := mustEnqueue(t, s, entry("r", "evt_1", "x"))
	eventually(t, 5*time.Second, "a dead letter", func() bool { return routeStats(s, "r").Dead == 1 })
	if n, err := s.Replay(context.Background(), res.ID); n != 1 || err != nil {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	var st ItemStatus
	eventually(t, 5*time.Second, "delivered", func() bool { st, _ = s.Lookup(context.Background(), "r", "evt_1"); return st.State == StateDelivered })
	if len(st.Attempts) != 2 || st.Attempts[0].StatusCode != 400 || st.Attempts[1].StatusCode != 204 ||
		st.Attempts[0].Number != 1 || st.Attempts[1].Number != 2 {
		t.Fatalf("attempts %+v, want 400 then 204, numbered 1 and 2", st.Attempts)
	}
}

// TestPurgeReadsWhatExpires: a purge reads the dead letters that expire,
// not every dead letter; one stored by schema version 1 is indexed at open.
func TestPurgeReadsWhatExpires(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	ctx := context.Background()
	const n = 1000
	deadN(t, s, "r", n)
	if got, read, _, err := s.purge(ctx, time.Now().Add(-time.Hour).UnixMilli(), nil); got != 0 || read != 0 || err != nil {
		t.Fatalf("a purge with nothing to expire deleted %d and read %d index keys (%v)", got, read, err)
	}

	// As version 1 left them: no y/ index; and one dead letter is corrupt.
	dead, _, _ := s.ListDead(context.Background(), DeadFilter{}, 0, 1)
	s.Close()
	db, err := badger.Open(badgerOptions(dir, 16<<20, s.log))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.DropPrefix([]byte{prefixDiedAt, '/'}); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(deadKey(dead[0].ID), []byte{0xff}); err != nil {
			return err
		}
		return txn.Set(keySchema, []byte{1})
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s = openTest(t, Options{Dir: dir})
	got, read, _, err := s.purge(ctx, time.Now().Add(time.Minute).UnixMilli(), nil)
	if got != n || read != n || err != nil {
		t.Fatalf("purge deleted %d and read %d, want %d (%v)", got, read, n, err)
	}
	if items, _ := s.Usage(); items != 0 {
		t.Fatalf("%d items left", items)
	}
	if err := s.db.View(func(txn *badger.Txn) error { _, err := txn.Get(msgKey(dead[0].ID)); return err }); !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatalf("the corrupt dead letter's message: %v, want it purged", err)
	}
}

// TestStatesStayInTheLSMTree: the largest state record is under the value
// threshold, so that nothing but the messages of older versions is in the
// value log.
func TestStatesStayInTheLSMTree(t *testing.T) {
	st := state{Flags: 0xff, Route: 1<<32 - 1, Attempt: 1 << 30, ReceivedMs: 1 << 62, Size: 1 << 62, LastStatus: 999,
		LastError: strings.Repeat("e", 2*maxErrorLen), DeadMs: 1 << 62, Reason: strings.Repeat("r", 64),
		ClockMs: 1 << 62, PausedMs: 1 << 62, Earlier: 1 << 30}
	if n := len(st.encode()); n >= valueThreshold {
		t.Fatalf("a state of %d bytes would go to the value log (threshold %d)", n, valueThreshold)
	}
}

// TestDueAfterNeverEarly: a retry's due time, kept in whole milliseconds,
// never falls before its delay has passed, and at most 2 ms after.
func TestDueAfterNeverEarly(t *testing.T) {
	for _, d := range []time.Duration{0, time.Microsecond, 999 * time.Microsecond, time.Millisecond, 50 * time.Millisecond, 50*time.Millisecond + 1} {
		for _, frac := range []int64{0, 1, 500_000, 999_999} { // ns past nowMs
			nowNs := int64(1_700_000_000_000)*1e6 + frac
			due := dueAfter(nowNs/1e6, d)
			if d > 0 && due*1e6 < nowNs+int64(d) {
				t.Fatalf("delay %v at +%dns: due %d ms is before %d ns", d, frac, due, nowNs+int64(d))
			}
			if d > 0 && due*1e6 > nowNs+int64(d)+2e6 {
				t.Fatalf("delay %v at +%dns: due %d ms is over 2 ms late", d, frac, due)
			}
		}
	}
}

// TestSHA256FingerprintsStillMatch: a dedupe record written with a SHA-256
// fingerprint (before xxhash) still tells a duplicate from a conflict.
func TestSHA256FingerprintsStillMatch(t *testing.T) {
	s := openTest(t, Options{})
	ctx := context.Background()
	body := []byte(`{"eventId":"evt_old"}`)
	sum := sha256.Sum256(body)
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(dedupeKey("r", "evt_old"), append(appendUint64(nil, 7), sum[:]...))
	}); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Enqueue(ctx, Entry{Route: "r", EventID: "evt_old", Body: body}); err != nil || r.Status != Duplicate || r.ID != 7 {
		t.Fatalf("same body: %+v, %v; want a duplicate of item 7", r, err)
	}
	if r, err := s.Enqueue(ctx, Entry{Route: "r", EventID: "evt_old", Body: []byte(`{}`)}); err != nil || r.Status != Conflict {
		t.Fatalf("other body: %+v, %v; want a conflict", r, err)
	}
	if st, err := s.Seen(context.Background(), "r", "evt_old", body); err != nil || st != Duplicate {
		t.Fatalf("Seen: %v, %v", st, err)
	}
}

// TestPauseFromSchema1KeepsItsStart: a route paused by schema version 1
// (no start recorded) counts its pause from the first open after the
// upgrade, and keeps that start across later restarts.
func TestPauseFromSchema1KeepsItsStart(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	if err := s.Pause(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	rid := s.cat.ridByName["r"]
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(pausedKey(rid), nil) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	since := func() int64 {
		s = openTest(t, Options{Dir: dir})
		defer s.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.cat.paused[rid]
	}
	first := since()
	time.Sleep(20 * time.Millisecond)
	if again := since(); again != first || first == 0 {
		t.Fatalf("pause start %d at the first open after the upgrade, %d at the next", first, again)
	}
}

// TestItemIDsNeverRepeat: ids go on from the last one taken across a
// restart, and from the lease of the Badger Sequence that older versions
// kept under the same key.
func TestItemIDsNeverRepeat(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	first := mustEnqueue(t, s, entry("r", "evt_1", "x")).ID
	s.Close()
	s = openTest(t, Options{Dir: dir})
	if id := mustEnqueue(t, s, entry("r", "evt_2", "x")).ID; id <= first {
		t.Fatalf("id %d after a restart, not past %d", id, first)
	}
	// As an older version left it: ids up to 1000 leased by a Sequence.
	seq, err := s.db.GetSequence(keySeq, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seq.Next(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, Options{Dir: dir})
	if id := mustEnqueue(t, s, entry("r", "evt_3", "x")).ID; id <= 1000 {
		t.Fatalf("id %d, within the range an older version leased", id)
	}
}

// TestADeadLetterBeingMadeIsNotLeased: an item the dispatcher is making a
// dead letter of stays in flight until that commits, so that a later pass,
// whose snapshot may still show it and whose route may have been enabled
// meanwhile, does not also deliver it.
func TestADeadLetterBeingMadeIsNotLeased(t *testing.T) {
	s, key, st := pausedWithOneItem(t)
	id := keyID(key)

	hold, held := make(chan struct{}), make(chan struct{})
	blocker := &failingOp{done: make(chan struct{}), sideEffect: func() { close(held); <-hold }}
	s.send(blocker)
	<-held // the committer is busy: what the dispatcher sends waits
	release := sync.OnceFunc(func() { close(hold) })
	defer release() // on a failure too, so that the spool can close
	d := &dispatcher{s: s, cursors: map[uint32][]byte{}, missing: map[uint32]int64{}}
	d.start([]candidate{{key: key, st: st, name: "r", disabled: "gone"}}, nowMs()) // holds no slot
	if !s.flight.has(id) {
		t.Fatal("an item being made a dead letter is not held in flight")
	}
	if rs := routeStats(s, "r"); rs.InFlight != 0 || rs.Queued != 1 {
		t.Fatalf("stats %+v while held, want it queued, not an attempt in flight", rs)
	}
	if live := s.flight.live(); len(live) != 0 {
		t.Fatalf("held item logged as an attempt: %v", live)
	}
	release()
	<-blocker.done
	eventually(t, 5*time.Second, "the dead letter committed", func() bool { return !s.flight.has(id) })
	if rs := routeStats(s, "r"); rs.Dead != 1 || rs.Queued != 0 {
		t.Fatalf("stats %+v, want one dead letter", rs)
	}
}
