package spool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// dedupeBytes is what one dedupe record counts toward the budget.
var dedupeBytes = recordSize(len(dedupeKey("r", "evt")), dedupeValueLen)

// TestExpiryBuckets: records count until the minute they expire in is
// over, deletions come off the bucket they were counted in, and a deletion
// from a bucket already dropped changes nothing.
func TestExpiryBuckets(t *testing.T) {
	const t0 = 1_800_000_000 - 1_800_000_000%60 // the start of a minute, Unix seconds
	at := func(sec int64) time.Time { return time.Unix(sec, 0) }
	type step struct {
		name      string
		add       []uint64 // expiry (Unix seconds) of records added, 10 bytes each
		del       []uint64 // of records deleted
		now       int64
		wantN     int64
		wantBytes int64
	}
	for _, tt := range []struct {
		name  string
		steps []step
	}{
		{"expiry drops a minute once it is over", []step{
			{name: "three in one minute, two in a later one", add: []uint64{t0 + 60, t0 + 61, t0 + 119, t0 + 300, t0 + 359}, now: t0, wantN: 5, wantBytes: 50},
			{name: "within the first minute", now: t0 + 119, wantN: 5, wantBytes: 50},
			{name: "the first minute over", now: t0 + 120, wantN: 2, wantBytes: 20},
			{name: "a deletion from the dropped minute", del: []uint64{t0 + 61}, now: t0 + 120, wantN: 2, wantBytes: 20},
			{name: "a deletion from the live minute", del: []uint64{t0 + 300}, now: t0 + 120, wantN: 1, wantBytes: 10},
			{name: "everything expired", now: t0 + 360, wantN: 0, wantBytes: 0},
		}},
		{"a deletion never goes below zero", []step{
			{name: "one record", add: []uint64{t0 + 600}, now: t0, wantN: 1, wantBytes: 10},
			{name: "deleted twice", del: []uint64{t0 + 600, t0 + 600}, now: t0, wantN: 0, wantBytes: 0},
			{name: "added again", add: []uint64{t0 + 600}, now: t0, wantN: 1, wantBytes: 10},
		}},
		{"records without expiry stay", []step{
			{name: "one of each", add: []uint64{0, t0 + 60}, now: t0, wantN: 2, wantBytes: 20},
			{name: "a year on", now: t0 + 365*24*3600, wantN: 1, wantBytes: 10},
		}},
		{"a record already expired when counted goes at the next expiry", []step{
			{name: "the clock at a later minute", now: t0 + 600, wantN: 0, wantBytes: 0},
			{name: "a record of an earlier minute", add: []uint64{t0 + 60}, now: t0 + 600, wantN: 0, wantBytes: 0},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var book recordBook
			for _, st := range tt.steps {
				var d recordDelta
				for _, e := range st.add {
					d.add(kindAttempts, e, 1, 10)
				}
				for _, e := range st.del {
					d.add(kindAttempts, e, -1, -10)
				}
				d.apply(&book, at(st.now), 1<<40)
				got := &book.kinds[kindAttempts]
				got.expire(at(st.now))
				if got.total.n != st.wantN || got.total.bytes != st.wantBytes {
					t.Fatalf("%s: %d records of %d bytes, want %d of %d", st.name, got.total.n, got.total.bytes, st.wantN, st.wantBytes)
				}
				if int64(len(got.buckets)) > got.total.n {
					t.Fatalf("%s: %d buckets for %d records", st.name, len(got.buckets), got.total.n)
				}
			}
		})
	}
}

// recordsAfterRoutine makes dedupe records, attempt records and markers of
// deleted dead letters: events delivered at once, events that die and are
// deleted, and event ids remembered without an item.
func recordsAfterRoutine(t *testing.T, s *Spool) {
	t.Helper()
	ctx := context.Background()
	ok := newRecorder(nil)
	s.RegisterRoute("ok", Route{Deliverer: ok})
	killAll(t, s, "bad")
	for i := range 20 {
		mustEnqueue(t, s, entry("ok", fmt.Sprint("evt_ok_", i), "x"))
		deadAt(t, s, "bad", fmt.Sprint("evt_bad_", i))
		if _, err := s.Remember(ctx, entry("seen", fmt.Sprint("evt_seen_", i), "x")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "all delivered", func() bool { return routeStats(s, "ok").Queued+routeStats(s, "ok").InFlight == 0 })
	dead, _, err := s.ListDead(context.Background(), DeadFilter{Route: "bad"}, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dead[:10] {
		if n, err := s.DeleteDead(ctx, d.ID); n != 1 || err != nil {
			t.Fatalf("DeleteDead(%d) = %d, %v", d.ID, n, err)
		}
	}
	// Every outcome is committed once each event's attempt is on record.
	eventually(t, 10*time.Second, "the attempt records", func() bool { return s.Records().Attempts.Count == 20+20+10 })
}

// TestRecordsCounted: the record usage counts each dedupe record, attempt
// record and marker at commit, and Open counts the same again.
func TestRecordsCounted(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, Options{Dir: dir})
	recordsAfterRoutine(t, s)
	before := s.Records()
	if before.Dedupe.Count != 60 || before.Dedupe.Bytes != 60*dedupeBytes {
		t.Fatalf("dedupe records %+v, want 60 of %d bytes", before.Dedupe, dedupeBytes)
	}
	// Each attempt record is its key, an encoded attempt and the overhead;
	// each marker its key and the overhead.
	if min, max := 50*recordSize(2+8, 0), 50*recordSize(2+8+4, 32); before.Attempts.Bytes < min || before.Attempts.Bytes > max {
		t.Fatalf("attempt records %+v, want %d to %d bytes", before.Attempts, min, max)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, Options{Dir: dir})
	if after := s.Records(); after != before {
		t.Fatalf("records at open %+v, before close %+v", after, before)
	}
}

// TestRecordBudgetRefusesNewEvents: once the dedupe records fill the
// budget, new events and new remembered ids are refused, and nothing of
// them is written, while duplicates and conflicts are still answered.
func TestRecordBudgetRefusesNewEvents(t *testing.T) {
	const stored = 10
	s := openTest(t, Options{Limits: Limits{MaxRecordBytes: stored * dedupeBytes}})
	ctx := context.Background()
	for i := range stored {
		mustEnqueue(t, s, entry("r", fmt.Sprint("evt_", i), "x")) // no route: no attempts
	}
	if err := s.CanRemember(); !isRecordFull(err) {
		t.Fatalf("CanRemember with the budget used up: %v", err)
	}
	items, msgBytes := s.Usage()
	records := s.Records()
	for _, tt := range []struct {
		name string
		do   func() ([]Result, error)
		want Status // 0: refused for the record budget
	}{
		{"a new event", func() ([]Result, error) { return s.EnqueueAll(ctx, []Entry{entry("r", "evt_new", "x")}) }, 0},
		{"a new event with a duplicate", func() ([]Result, error) {
			return s.EnqueueAll(ctx, []Entry{entry("r", "evt_0", "x"), entry("other", "evt_0", "x")})
		}, 0},
		{"a new id remembered", func() ([]Result, error) {
			r, err := s.Remember(ctx, entry("r", "evt_new", "x"))
			return []Result{r}, err
		}, 0},
		{"a duplicate", func() ([]Result, error) { return s.EnqueueAll(ctx, []Entry{entry("r", "evt_1", "x")}) }, Duplicate},
		{"a conflict", func() ([]Result, error) { return s.EnqueueAll(ctx, []Entry{entry("r", "evt_2", "y")}) }, Conflict},
		{"a seen id remembered", func() ([]Result, error) { r, err := s.Remember(ctx, entry("r", "evt_3", "x")); return []Result{r}, err }, Duplicate},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, err := tt.do()
			switch {
			case tt.want == 0 && !isRecordFull(err):
				t.Fatalf("got %+v, %v; want a max_record_bytes full error", res, err)
			case tt.want != 0 && (err != nil || res[0].Status != tt.want):
				t.Fatalf("got %+v, %v; want %v", res, err, tt.want)
			}
			if i, b := s.Usage(); i != items || b != msgBytes {
				t.Fatalf("usage %d items, %d bytes; was %d, %d", i, b, items, msgBytes)
			}
			if r := s.Records(); r != records {
				t.Fatalf("records %+v; were %+v", r, records)
			}
		})
	}
	// The budget raised: room again.
	s.Reconfigure(Limits{MaxRecordBytes: (stored + 1) * dedupeBytes})
	if err := s.CanRemember(); err != nil {
		t.Fatalf("CanRemember with room: %v", err)
	}
	if r := mustEnqueue(t, s, entry("r", "evt_new", "x")); r.Status != Accepted {
		t.Fatalf("with room: %v", r.Status)
	}
}

func isRecordFull(err error) bool {
	var full *FullError
	return errors.As(err, &full) && full.Limit == "max_record_bytes" && errors.Is(err, ErrFull)
}

// TestTrimDeletesOldestAttemptRecords lowers the budget under what the
// records hold: the oldest attempt records and markers (by item id) are
// deleted until the records are at most 90% of the budget, and no dedupe
// record is.
func TestTrimDeletesOldestAttemptRecords(t *testing.T) {
	for _, tt := range []struct {
		name   string
		budget func(r RecordUsage) int64
	}{
		{"half the attempt records", func(r RecordUsage) int64 { return (r.Dedupe.Bytes + r.Attempts.Bytes/2) * 10 / 9 }},
		{"no room for any", func(r RecordUsage) int64 { return r.Dedupe.Bytes / 2 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, Options{})
			recordsAfterRoutine(t, s)
			before := s.Records()
			budget := tt.budget(before)
			s.Reconfigure(Limits{MaxRecordBytes: budget})
			eventually(t, 10*time.Second, "the trim", func() bool {
				r := s.Records()
				return r.Dedupe.Bytes+r.Attempts.Bytes <= budget/10*9 || r.Attempts.Count == 0
			})
			after := s.Records()
			if after.Dedupe != before.Dedupe {
				t.Fatalf("dedupe records %+v after the trim, %+v before", after.Dedupe, before.Dedupe)
			}
			if after.Attempts.Count == before.Attempts.Count {
				t.Fatalf("no attempt record trimmed: %+v", after)
			}
			if after.Dedupe.Bytes < budget && after.Attempts.Count == 0 {
				t.Fatalf("every attempt record trimmed though %d of %d bytes would do", after.Dedupe.Bytes, budget)
			}
			// In item id order, an attempt record before its item's
			// marker: what was trimmed comes before what is left.
			type rec struct {
				id   uint64
				kind string
			}
			var kept, gone []rec
			for _, route := range []string{"ok", "bad", "seen"} {
				for i := range 20 {
					st, err := s.Lookup(context.Background(), route, fmt.Sprint("evt_", route, "_", i))
					if err != nil {
						t.Fatalf("%s evt_%d: %v (a dedupe record lost)", route, i, err)
					}
					if route == "seen" {
						continue
					}
					put := func(present bool, kind string) {
						if present {
							kept = append(kept, rec{st.ID, kind})
						} else {
							gone = append(gone, rec{st.ID, kind})
						}
					}
					put(len(st.Attempts) == 1, "a")
					if route == "bad" && i < 10 { // deleted: a marker
						put(st.State == StateDeleted, "e")
					}
				}
			}
			if len(kept)+len(gone) != int(before.Attempts.Count) || int64(len(kept)) != after.Attempts.Count {
				t.Fatalf("%d records kept and %d gone, counted %d before and %d after", len(kept), len(gone), before.Attempts.Count, after.Attempts.Count)
			}
			order := func(a, b rec) int {
				if a.id != b.id {
					return int(a.id) - int(b.id)
				}
				return int(a.kind[0]) - int(b.kind[0])
			}
			slices.SortFunc(kept, order)
			slices.SortFunc(gone, order)
			if len(kept) > 0 && len(gone) > 0 && order(gone[len(gone)-1], kept[0]) > 0 {
				t.Fatalf("trimmed %v, kept %v: not the oldest first", gone, kept)
			}
			// A new event still takes its dedupe record in the budget,
			// attempt records or not.
			_, err := s.Enqueue(context.Background(), entry("ok", "evt_after", "x"))
			if after.Dedupe.Bytes+dedupeBytes > budget && !isRecordFull(err) || after.Dedupe.Bytes+dedupeBytes <= budget && err != nil {
				t.Fatalf("a new event with %d of %d bytes of dedupe records: %v", after.Dedupe.Bytes, budget, err)
			}
		})
	}
}

// TestAttemptRecordsDroppedWithoutRoom: while the dedupe records leave no
// room, deliveries go on and their attempt records are not written, but
// counted as dropped.
func TestAttemptRecordsDroppedWithoutRoom(t *testing.T) {
	const events = 3
	s := openTest(t, Options{Limits: Limits{MaxRecordBytes: events*dedupeBytes + recordOverhead}})
	for i := range events {
		mustEnqueue(t, s, entry("r", fmt.Sprint("evt_", i), "x"))
	}
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec})
	for range events {
		rec.next(t, 5*time.Second)
	}
	eventually(t, 10*time.Second, "the outcomes committed", func() bool { return s.Records().AttemptRecordsDropped == events })
	for i := range events {
		if st, err := s.Lookup(context.Background(), "r", fmt.Sprint("evt_", i)); err != nil || st.State != StateDelivered || len(st.Attempts) != 0 {
			t.Fatalf("evt_%d: %+v, %v; want delivered without attempt records", i, st, err)
		}
	}
	if r := s.Records(); r.Attempts.Count != 0 || r.Dedupe.Count != events {
		t.Fatalf("records %+v", r)
	}
}
