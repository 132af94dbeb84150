package spool

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// BenchmarkEnqueue compares the spool's group commit with one Badger
// transaction per item (same options, same writes: dedupe check, dedupe
// record, message, queue key), both fsynced, 1 KiB bodies.
//
//	go test -run '^$' -bench BenchmarkEnqueue -benchtime 20000x ./spool
func BenchmarkEnqueue(b *testing.B) {
	body := []byte(strings.Repeat("x", 1024))
	for _, producers := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("group/producers=%d", producers), func(b *testing.B) {
			s := openTest(b, Options{Logger: zap.NewNop(), MemTableSize: 32 << 20, Limits: Limits{MaxItems: 1 << 40, MaxBytes: 1 << 40}})
			runProducers(b, producers, func(id string) error {
				_, err := s.Enqueue(context.Background(), Entry{Route: "bench", EventID: id, Body: body})
				return err
			})
		})
		b.Run(fmt.Sprintf("txn-per-item/producers=%d", producers), func(b *testing.B) {
			// Concurrent transactions need conflict detection for the dedupe check.
			db, err := badger.Open(badgerOptions(b.TempDir(), 32<<20, zap.NewNop()).WithDetectConflicts(true))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			seq, err := db.GetSequence(keySeq, 1000)
			if err != nil {
				b.Fatal(err)
			}
			defer seq.Release()
			runProducers(b, producers, func(id string) error {
				return enqueueOneTxn(db, seq, id, body)
			})
		})
	}
}

// enqueueOneTxn is the baseline: the same writes as the committer's, in a
// transaction of their own.
func enqueueOneTxn(db *badger.DB, seq *badger.Sequence, eventID string, body []byte) error {
	dk := dedupeKey("bench", eventID)
	hash := sha256.Sum256(body)
	msg := (&message{Route: "bench", EventID: eventID, ReceivedMs: nowMs(), Body: body}).encode()
	for {
		err := db.Update(func(txn *badger.Txn) error {
			if _, err := txn.Get(dk); err == nil {
				return nil
			} else if !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
			id, err := seq.Next()
			if err != nil {
				return err
			}
			st := state{Route: 1, ReceivedMs: nowMs(), Size: int64(len(msg))}
			if err := txn.SetEntry(badger.NewEntry(dk, append(appendUint64(nil, id), hash[:]...)).WithTTL(DefaultDedupeWindow)); err != nil {
				return err
			}
			if err := txn.Set(msgKey(id), msg); err != nil {
				return err
			}
			return txn.Set(queueKey(1, nowMs(), id), st.encode())
		})
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
}

// runProducers spreads b.N enqueues over n goroutines and reports items/s.
func runProducers(b *testing.B, n int, enqueue func(id string) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for p := range n {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if err := enqueue(fmt.Sprintf("evt_%d_%d", p, i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "items/s")
}

// BenchmarkDrain queues 100k items of 1 KiB, then times the dispatcher
// delivering them to a deliverer that does nothing, and reports the rate and
// the peak heap while draining.
//
//	go test -run '^$' -bench BenchmarkDrain -benchtime 1x ./spool
func BenchmarkDrain(b *testing.B) {
	const items = 100_000
	body := strings.Repeat("x", 1024)
	for range b.N {
		b.StopTimer()
		s := openTest(b, Options{Logger: zap.NewNop(), MemTableSize: 32 << 20})
		batch := make([]Entry, 0, 500)
		for i := range items {
			batch = append(batch, Entry{Route: "bench", EventID: fmt.Sprintf("evt_%d", i), Body: []byte(body)})
			if len(batch) == cap(batch) {
				if _, err := s.EnqueueAll(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		runtime.GC()
		var delivered atomic.Int64
		done := make(chan struct{})
		var peak uint64
		go func() {
			var ms runtime.MemStats
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
				select {
				case <-done:
					return
				case <-tick.C:
				}
			}
		}()
		finished := make(chan struct{})
		noop := DelivererFunc(func(context.Context, *Delivery) Outcome {
			if delivered.Add(1) == items {
				close(finished)
			}
			return Outcome{StatusCode: 204}
		})
		b.StartTimer()
		start := time.Now()
		s.RegisterRoute("bench", Route{Deliverer: noop, Concurrency: 64})
		<-finished
		for {
			if rs := routeStats(s, "bench"); rs.Queued+rs.InFlight == 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		close(done)
		b.ReportMetric(items/elapsed.Seconds(), "items/s")
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		s.Close()
	}
}

// BenchmarkDispatchPass measures one dispatch pass over a route whose 50k
// items were all delivered (their keys are tombstones at the head of the
// queue), with the dispatcher's cursor and with a scan from the start.
//
//	go test -run '^$' -bench BenchmarkDispatchPass ./spool
func BenchmarkDispatchPass(b *testing.B) {
	const items = 50_000
	s := openTest(b, Options{Logger: zap.NewNop(), MemTableSize: 32 << 20})
	batch := make([]Entry, 0, 500)
	for i := range items {
		batch = append(batch, Entry{Route: "bench", EventID: fmt.Sprintf("evt_%d", i), Body: []byte("x")})
		if len(batch) == cap(batch) {
			if _, err := s.EnqueueAll(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	s.RegisterRoute("bench", Route{Concurrency: 64, Deliverer: DelivererFunc(func(context.Context, *Delivery) Outcome {
		return Outcome{StatusCode: 204}
	})})
	for {
		if rs := routeStats(s, "bench"); rs.Queued+rs.InFlight == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, keep := range []bool{true, false} {
		b.Run(fmt.Sprintf("cursor=%v", keep), func(b *testing.B) {
			d := &dispatcher{s: s, cursors: map[uint32][]byte{}, missing: map[uint32]int64{}}
			if _, err := d.pass(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if !keep {
					clear(d.cursors)
				}
				if _, err := d.pass(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPrepare measures what an enqueue costs before the committer:
// encoding the message and taking its fingerprint.
func BenchmarkPrepare(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		e := entry("r", "evt_bench", strings.Repeat("x", size))
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := prepare([]Entry{e}, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRecordBytes measures what dedupe and attempt records take on
// disk, for the README's sizing rule. In three new spools of 100k events
// each: event ids remembered (dedupe records alone), attempt records alone
// (written as a delivery writes them: a 204 after 1.5 ms), and events of
// 1 KiB enqueued and delivered at once. It reports the bytes of Badger's
// tables per record of the first two, the tables per event of the third
// (whose delivered items leave tombstones until compactions drop them),
// and what the record budget counts per record.
//
//	go test -run '^$' -bench BenchmarkRecordBytes -benchtime 1x ./spool
func BenchmarkRecordBytes(b *testing.B) {
	const events = 100_000
	body := []byte(strings.Repeat("x", 1024))
	for range b.N {
		dedupe := tablesAfter(b, func(s *Spool) {
			enqueueBench(b, s, events, func(e *Entry) { e.DedupeOnly = true })
		})
		attempts := tablesAfter(b, func(s *Spool) {
			a := Attempt{Number: 1, At: time.Now(), Duration: 1500 * time.Microsecond, StatusCode: 204}
			for id := uint64(1); id <= events; id += 1000 {
				err := s.db.Update(func(txn *badger.Txn) error {
					for i := id; i < id+1000; i++ {
						if err := txn.SetEntry(badger.NewEntry(attemptKey(i, 1), a.encode()).WithTTL(7 * 24 * time.Hour)); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		var usage RecordUsage
		delivered := tablesAfter(b, func(s *Spool) {
			s.RegisterRoute("bench", Route{Concurrency: 64, Deliverer: DelivererFunc(func(context.Context, *Delivery) Outcome {
				return Outcome{StatusCode: 204}
			})})
			enqueueBench(b, s, events, func(e *Entry) { e.Body = body })
			for s.Records().Attempts.Count < events {
				time.Sleep(10 * time.Millisecond)
			}
			usage = s.Records()
		})
		b.ReportMetric(float64(dedupe)/events, "dedupe-disk-B/record")
		b.ReportMetric(float64(attempts)/events, "attempt-disk-B/record")
		b.ReportMetric(float64(delivered)/events, "tables-after-delivery-B/event")
		b.ReportMetric(float64(usage.Dedupe.Bytes)/float64(usage.Dedupe.Count), "dedupe-counted-B/record")
		b.ReportMetric(float64(usage.Attempts.Bytes)/float64(usage.Attempts.Count), "attempt-counted-B/record")
	}
}

// enqueueBench enqueues n events on route bench, 500 per commit, each
// changed by set.
func enqueueBench(b *testing.B, s *Spool, n int, set func(*Entry)) {
	b.Helper()
	batch := make([]Entry, 0, 500)
	for i := range n {
		e := Entry{Route: "bench", EventID: fmt.Sprintf("evt_%d", i), Body: []byte("x")}
		set(&e)
		if batch = append(batch, e); len(batch) == cap(batch) || i == n-1 {
			if _, err := s.EnqueueAll(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// tablesAfter runs fill on a new spool, closes it (its memtables go to
// tables) and returns the bytes of its tables.
func tablesAfter(b *testing.B, fill func(*Spool)) int64 {
	b.Helper()
	dir := b.TempDir()
	s, err := Open(Options{Dir: dir, Logger: zap.NewNop(), MemTableSize: 32 << 20, MinFreeDisk: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	fill(s)
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return globBytes(b, filepath.Join(dir, "*.sst"))
}
