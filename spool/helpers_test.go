package spool

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/hookgate/hookgate/internal/testwait"
)

// openTest opens a spool in a fresh temp dir and closes it at the end.
func openTest(t testing.TB, opts Options) *Spool {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	}
	if opts.MemTableSize == 0 {
		opts.MemTableSize = 16 << 20
	}
	if opts.MinFreeDisk == 0 {
		opts.MinFreeDisk = 1 << 20
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func entry(route, id string, body string) Entry {
	return Entry{Route: route, EventID: id, Body: []byte(body), Header: http.Header{"X-Webhook-Event": {"test.event"}}}
}

func mustEnqueue(t testing.TB, s *Spool, e Entry) Result {
	t.Helper()
	r, err := s.Enqueue(context.Background(), e)
	if err != nil {
		t.Fatalf("Enqueue(%s/%s): %v", e.Route, e.EventID, err)
	}
	return r
}

// recorder is a Deliverer that records attempts and answers from a script.
type recorder struct {
	mu       sync.Mutex
	attempts []attemptRecord
	answer   func(d *Delivery) Outcome // nil: 200
	notify   chan attemptRecord
}

type attemptRecord struct {
	EventID string
	Attempt int
	At      time.Time
	Body    string
	Header  http.Header
}

func newRecorder(answer func(d *Delivery) Outcome) *recorder {
	return &recorder{answer: answer, notify: make(chan attemptRecord, 100000)}
}

func (r *recorder) Deliver(ctx context.Context, d *Delivery) Outcome {
	rec := attemptRecord{EventID: d.EventID, Attempt: d.Attempt, At: time.Now(), Body: string(d.Body), Header: d.Header}
	r.mu.Lock()
	r.attempts = append(r.attempts, rec)
	r.mu.Unlock()
	r.notify <- rec
	if r.answer == nil {
		return Outcome{StatusCode: 200}
	}
	return r.answer(d)
}

func (r *recorder) snapshot() []attemptRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]attemptRecord(nil), r.attempts...)
}

// next waits for the next attempt.
func (r *recorder) next(t testing.TB, within time.Duration) attemptRecord {
	t.Helper()
	return testwait.Recv(t, r.notify, within, "no delivery attempt")
}

// byEvent waits for the next n attempts, each within the timeout, and
// returns them by event id.
func (r *recorder) byEvent(t testing.TB, n int, within time.Duration) map[string]attemptRecord {
	t.Helper()
	got := map[string]attemptRecord{}
	for range n {
		a := r.next(t, within)
		got[a.EventID] = a
	}
	return got
}

// none asserts that no attempt arrives within d.
func (r *recorder) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case a := <-r.notify:
		t.Fatalf("unexpected attempt %+v", a)
	case <-time.After(d):
	}
}

// eventually polls cond until it holds or fails the test after within.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func routeStats(s *Spool, route string) RouteStats {
	for _, rs := range s.Stats() {
		if rs.Route == route {
			return rs
		}
	}
	return RouteStats{}
}

func statsString(rs RouteStats) string {
	return fmt.Sprintf("queued=%d inflight=%d scheduled=%d dead=%d bytes=%d paused=%v",
		rs.Queued, rs.InFlight, rs.Scheduled, rs.Dead, rs.Bytes, rs.Paused)
}

// fastPolicy retries quickly so tests run in milliseconds.
func fastPolicy(attempts int) Policy {
	return Policy{MaxAttempts: attempts, BackoffMin: 10 * time.Millisecond, BackoffMax: 40 * time.Millisecond}
}

// enqueueN enqueues n small entries evt_0… on route, 500 per commit, and
// returns their item ids.
func enqueueN(t testing.TB, s *Spool, route string, n int) []uint64 {
	t.Helper()
	var ids []uint64
	for i := 0; i < n; i += 500 {
		var es []Entry
		for j := i; j < min(i+500, n); j++ {
			es = append(es, entry(route, fmt.Sprintf("evt_%d", j), "x"))
		}
		rs, err := s.EnqueueAll(context.Background(), es)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			ids = append(ids, r.ID)
		}
	}
	return ids
}

// deadN makes n dead letters on route at once: queued on the paused route,
// which is then disabled and resumed.
func deadN(t testing.TB, s *Spool, route string, n int) {
	t.Helper()
	ctx := context.Background()
	s.RegisterRoute(route, Route{Deliverer: newRecorder(nil)})
	if err := s.Pause(ctx, route); err != nil {
		t.Fatal(err)
	}
	enqueueN(t, s, route, n)
	if err := s.Disable(ctx, route, "off"); err != nil {
		t.Fatal(err)
	}
	if err := s.Resume(ctx, route); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "all dead", func() bool { return routeStats(s, route).Dead == int64(n) })
}

// gate is a Deliverer whose attempts wait until released (one per value
// sent on release, all once it is closed) and answer 204. It counts the
// attempts in flight and their peak, and reports each start on started.
type gate struct {
	started        chan string
	release        chan struct{}
	mu             sync.Mutex
	inFlight, peak int
}

func newGate() *gate {
	return &gate{started: make(chan string, 1000), release: make(chan struct{})}
}

func (g *gate) Deliver(ctx context.Context, d *Delivery) Outcome {
	g.mu.Lock()
	g.inFlight++
	g.peak = max(g.peak, g.inFlight)
	g.mu.Unlock()
	g.started <- d.EventID
	select {
	case <-g.release:
	case <-ctx.Done():
	}
	g.mu.Lock()
	g.inFlight--
	g.mu.Unlock()
	return Outcome{StatusCode: 204}
}

// counts returns the attempts in flight and their peak so far.
func (g *gate) counts() (inFlight, peak int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inFlight, g.peak
}

// globBytes returns the bytes of the files matching pattern.
func globBytes(tb testing.TB, pattern string) int64 {
	tb.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		tb.Fatal(err)
	}
	var n int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			tb.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}
