// Package spool is Hookgate's durable delivery queue on Badger.
//
// Enqueue stores an item together with its dedupe record in one
// transaction, durable once its message and redo record are synced in a
// segment file (redo.go); concurrent enqueues share commits and syncs
// through a single committer goroutine. A dispatcher leases due items to a bounded worker pool that hands
// them to each route's Deliverer, retries failures with backoff and keeps what
// cannot be delivered as dead letters until they are replayed or purged.
// Messages are kept in segment files beside the database.
//
// The package has no Caddy dependency; the Caddy glue shares one Spool per
// directory across config reloads and registers its routes with RegisterRoute.
// docs/spool.md describes its key schema and guarantees.
package spool

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"go.uber.org/zap"
)

// A Spool is the Badger Backend.
var _ Backend = (*Spool)(nil)

// Errors returned by the spool.
var (
	// ErrFull is matched (errors.Is) by every *FullError.
	ErrFull = errors.New("spool: full")
	// ErrClosed is returned once Close has begun.
	ErrClosed = errors.New("spool: closed")
	// ErrInUse is returned by Open for a directory this process already has open.
	ErrInUse = errors.New("spool: directory already open in this process")
	// ErrNotFound is returned for an unknown event, dead letter or route.
	ErrNotFound = errors.New("spool: not found")
	// ErrTooLarge is returned for an enqueue that cannot fit in one transaction.
	ErrTooLarge = errors.New("spool: entry too large")
)

// FullError says which bound refused an enqueue.
type FullError struct {
	Limit string // "max_items", "max_bytes", "max_record_bytes" or "min_free_disk"
}

func (e *FullError) Error() string        { return "spool: full (" + e.Limit + ")" }
func (e *FullError) Is(target error) bool { return target == ErrFull }

// Options configure a Spool. Zero values take the defaults below. The
// Limits can be changed while it runs, with Reconfigure, and MinFreeDisk
// with SetMinFreeDisk; the rest are fixed at Open.
//
// The Limits' defaults: MaxItems 1,000,000; MaxBytes 1 GiB; MaxRecordBytes
// 4 GiB (see records.go); Workers 64; DeadRetention and AttemptRetention 7
// days.
type Options struct {
	Limits
	Dir          string
	Logger       *zap.Logger
	MinFreeDisk  int64         // free bytes left to others, on top of the reserve for Badger's own work; default 512 MiB
	RouteGrace   time.Duration // how long items wait for a missing route; default 10m
	CloseTimeout time.Duration // how long deliveries in flight get once they stop (Close); default 10s
	MemTableSize int64         // Badger memtable size; default 16 MiB
	segmentSize  int64         // message segment size (see bodies.go); smaller in tests
	segmentMin   int64         // the smallest message put in a segment; 1 in tests of segments
	// Observe, if set, is called after every delivery attempt with its route,
	// record and outcome: "delivered", "retry", "dead" or "released" (cut
	// short by Close). It must be quick and safe for concurrent use.
	Observe func(route string, a Attempt, outcome string)
}

func (o Options) withDefaults() Options {
	o.Limits = o.Limits.WithDefaults()
	orDefault(&o.MinFreeDisk, 512<<20)
	orDefault(&o.MemTableSize, 16<<20)
	orDefault(&o.segmentSize, segmentSize)
	orDefault(&o.segmentMin, segmentMessageMin)
	orDefault(&o.RouteGrace, 10*time.Minute)
	orDefault(&o.CloseTimeout, 10*time.Second)
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o
}

// Spool is a durable delivery queue in one directory. Its methods are safe for
// concurrent use.
type Spool struct {
	opts    Options // as opened; read the changeable fields through live
	live    atomic.Pointer[liveOptions]
	liveMu  sync.Mutex  // serialises changes of live
	reserve int64       // disk space kept for Badger's flushes and compactions
	full    atomic.Bool // the disk is full: nothing is written (see diskFull)
	log     *zap.Logger
	db      *badger.DB
	bodies  *bodyStore // the message segments

	ops      chan op
	unsynced bool        // the committer wrote since its last sync
	syncDue  atomic.Bool // a commit or an attempt was left unsynced: the checkpoint is due (maintenance.go)
	wal      *walFiles   // Badger's write-ahead logs, for the committer
	closers  closers     // the background loops

	wake     chan struct{} // nudges the dispatcher; capacity 1
	trimWake chan struct{} // nudges the trim of attempt records; capacity 1
	segWake  chan struct{} // nudges the reclaim and compaction of segments; capacity 1
	tendMu   sync.Mutex    // one reclaim or compaction at a time
	stopOnce sync.Once
	giveUpAt time.Time    // when deliveries still in flight are cancelled; set before deliveries stop
	slots    slots        // deliveries in flight
	wakeAtMs atomic.Int64 // when the dispatcher plans its next pass
	soon     atomic.Bool  // a nudgeSoon is pending
	passes   atomic.Int64 // dispatch passes made, for tests of idleness

	workCtx    context.Context // cancelled when Close gives up waiting
	cancelWork context.CancelFunc

	routesMu sync.RWMutex
	routes   map[string][]*registration // stacked per name; the last is in force

	mu  sync.Mutex // guards cat
	cat catalog

	rewindMu sync.Mutex
	rewind   map[uint32][]byte // earliest q/ key written behind the dispatcher, per route

	recent *recentMessages // messages of items just stored, for their first delivery
	// storedFrom is the last item id taken before this process stored any,
	// movedFrom the segments compactions moved messages out of since: the
	// pointers states carry are sure for neither (see knownPointer).
	storedFrom uint64
	movedMu    sync.Mutex
	movedFrom  map[uint32]bool // one entry per segment compacted, for the life of the process
	flight     *flight         // the items being delivered: their leases
	unwritten  *unwrittenItems // items leased at enqueue, not yet in Badger
	started    map[uint64]int  // until the replay ends: the attempts the flight log counts, by item
	// flightLog counts the attempts a crash cuts short; flightLogFailing
	// whether its last write failed (logged once until one succeeds).
	flightLog        *flightLog
	flightLogFailing atomic.Bool
	idle             chan work // to a worker waiting for its next delivery (workers.go)

	closeOnce sync.Once
	closeErr  error
}

var (
	openMu   sync.Mutex
	openDirs = map[string]bool{}
	// leftOpen holds the databases that Close left open because the disk
	// was full; Open closes one before it opens its directory again.
	leftOpen = map[string]*badger.DB{}
)

// Open opens or creates the spool in opts.Dir and starts its committer,
// dispatcher and maintenance loops. Items leased by a previous process are due
// at once. A directory can be open once per process: share the handle.
func Open(opts Options) (*Spool, error) {
	opts = opts.withDefaults()
	dir, err := absDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	opts.Dir = dir

	openMu.Lock()
	if openDirs[dir] {
		openMu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrInUse, dir)
	}
	openDirs[dir] = true
	openMu.Unlock()

	s, err := closeLeftOpen(dir, opts)
	if err == nil {
		s, err = open(opts)
	}
	if err != nil {
		openMu.Lock()
		delete(openDirs, dir)
		openMu.Unlock()
		return nil, err
	}
	return s, nil
}

// closeLeftOpen closes the database of dir that a Close on a full disk left
// open, once there is room again to write its last memtable.
func closeLeftOpen(dir string, opts Options) (*Spool, error) {
	openMu.Lock()
	db := leftOpen[dir]
	openMu.Unlock()
	if db == nil {
		return nil, nil
	}
	if free, ok := freeDisk(dir); ok && free < opts.MemTableSize {
		return nil, fmt.Errorf("spool: %s was closed while its disk was full and is still open; free space on it, then open it again", dir)
	}
	err := db.Close()
	openMu.Lock()
	delete(leftOpen, dir)
	openMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("spool: closing %s, left open on a full disk: %w", dir, err)
	}
	return nil, nil
}

func open(opts Options) (*Spool, error) {
	log := opts.Logger.Named("spool")
	bopts := badgerOptions(opts.Dir, opts.MemTableSize, log)
	// Badger replays its logs into tables and may compact as soon as it
	// opens, so it needs its reserve then too. Only the reserve: a spool that
	// stopped accepting at min_free_disk can still start and drain.
	reserve := diskReserve(bopts)
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil { // as Badger would, but measured first
		return nil, fmt.Errorf("spool: %w", err)
	}
	if free, ok := freeDisk(opts.Dir); ok && free < reserve {
		return nil, fmt.Errorf("spool: %d bytes free in %s, need %d to open", free, opts.Dir, reserve)
	}
	db, err := badger.Open(bopts)
	if err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", opts.Dir, err)
	}
	// After Badger, whose lock keeps other processes out of the directory.
	bodies, err := openBodyStore(filepath.Join(opts.Dir, "bodies"), opts.segmentSize)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Spool{
		opts:       opts,
		reserve:    reserve,
		log:        log,
		db:         db,
		bodies:     bodies,
		ops:        make(chan op, 4096),
		closers:    newClosers(),
		wake:       make(chan struct{}, 1),
		trimWake:   make(chan struct{}, 1),
		segWake:    make(chan struct{}, 1),
		routes:     map[string][]*registration{},
		rewind:     map[uint32][]byte{},
		movedFrom:  map[uint32]bool{},
		storedFrom: math.MaxUint64, // until the replay: no state's pointer is sure
		recent:     newRecentMessages(recentBytes),
		idle:       make(chan work),
		flight:     newFlight(),
		unwritten:  newUnwrittenItems(),
	}
	s.live.Store(liveOf(opts))
	s.workCtx, s.cancelWork = context.WithCancel(context.Background())
	fail := func(err error) (*Spool, error) {
		db.Close()
		bodies.close()
		return nil, err
	}
	if s.wal, err = newWALFiles(opts.Dir); err != nil {
		return fail(fmt.Errorf("spool: %w", err))
	}
	if err := s.load(); err != nil {
		return fail(err)
	}
	if err := s.loadRecords(); err != nil {
		return fail(fmt.Errorf("spool: counting records: %w", err))
	}
	if err := s.loadSegments(); err != nil {
		return fail(err)
	}
	// Before the empty segments go: a lost enqueue's segment looks empty.
	if err := s.replay(); err != nil {
		return fail(err)
	}
	// After the replay, which stored the items it restored with the
	// attempts the old log counts: until then an open that fails must find
	// it again.
	if s.flightLog, err = createFlightLog(opts.Dir); err != nil {
		return fail(fmt.Errorf("spool: %w", err))
	}
	s.storedFrom = s.cat.nextID // no lock: nothing else runs yet
	// Empty segments go now (none is active before the first append):
	// load and replay ended with a sync.
	for _, n := range s.emptySegments() {
		if err := bodies.remove(n); err != nil {
			return fail(fmt.Errorf("spool: %w", err))
		}
	}
	s.nudgeTrim() // the budget may be lower than at the last start
	go s.commitLoop()
	go s.dispatchLoop()
	go s.maintenanceLoop()
	return s, nil
}

// badgerOptions tunes Badger for a durable queue on a small machine: no sync
// of its own (the committer syncs what must be durable), only small
// records (states, dedupe and attempt records, message pointers) in the LSM
// tree, no compression and no block cache. Conflict detection is off: the
// committer is the only writer, so transactions cannot conflict, and
// tracking their reads costs CPU on every commit.
//
// Messages are kept out of the LSM tree: a backlog of them there costs
// anonymous memory in proportion to its size (every memtable flush and
// compaction copies them through table builders whose buffers Badger
// pools). They go to the spool's segment files (bodies.go), m/ holding a
// pointer: the value log copies each one twice on its way to a mapped
// file, faulting its pages in, costs three times the CPU to sync
// (BenchmarkSyncCost) and rewrites live ones in its GC. Older versions put
// messages under 8 KiB there (valueThreshold), where they are still read.
func badgerOptions(dir string, memTableSize int64, log *zap.Logger) badger.Options {
	o := badger.DefaultOptions(dir).
		WithSyncWrites(false). // the committer syncs what must be durable (Spool.write)
		WithLogger(badgerLogger{log.Named("badger").Sugar()}).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(valueLogFileSize).
		WithMemTableSize(memTableSize).
		WithNumMemtables(3).
		WithNumCompactors(2).
		WithBaseTableSize(baseTableSize).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithDetectConflicts(false).
		WithNumVersionsToKeep(1)
	o.TableSizeMultiplier = 1 // see baseTableSize
	return o
}

// baseTableSize is the size of the tables Badger builds, at every level
// (its default is 2 MiB, doubled at each level below the first). A
// compaction builds each table in memory, with a buffer of twice its size
// that Badger pools (up to eight) and frees only after seconds without a
// compaction, so after a drain of a large backlog these buffers were most
// of the heap: 72 MB live two minutes after the drain of 1M items, and
// 38 MB of the heap with 1M queued while the fill's compactions ran into
// the deeper levels. Tables of 1 MiB at every level bound each buffer to
// 2 MiB; the levels' target sizes are unchanged.
const baseTableSize = 1 << 20

// liveOptions are the Options that Reconfigure and SetMinFreeDisk change.
type liveOptions struct {
	maxItems, maxBytes, minFreeDisk int64
	maxRecordBytes                  int64
	workers                         int
	deadRetention, attemptRetention time.Duration
}

func liveOf(o Options) *liveOptions {
	o = o.withDefaults()
	return &liveOptions{maxItems: o.MaxItems, maxBytes: o.MaxBytes, minFreeDisk: o.MinFreeDisk, maxRecordBytes: o.MaxRecordBytes,
		workers: o.Workers, deadRetention: o.DeadRetention, attemptRetention: o.AttemptRetention}
}

// Reconfigure applies l to the running spool, defaults included; MinFreeDisk
// stays as it is. Items already stored stay even if they are now over a
// bound; new ones are refused until there is room. Attempt records over a
// lower MaxRecordBytes are trimmed.
func (s *Spool) Reconfigure(l Limits) {
	s.setLive(func(o *Options) { o.Limits = l })
	s.nudge() // more workers may be allowed
	s.nudgeTrim()
}

// SetMinFreeDisk changes the running spool's MinFreeDisk (0: the default),
// which Reconfigure leaves alone: the one bound of Badger's that the Backend
// contract does not know.
func (s *Spool) SetMinFreeDisk(n int64) {
	s.setLive(func(o *Options) { o.MinFreeDisk = n })
}

// setLive changes the live options, one change at a time.
func (s *Spool) setLive(change func(*Options)) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	l := s.live.Load()
	o := Options{MinFreeDisk: l.minFreeDisk, Limits: Limits{MaxItems: l.maxItems, MaxBytes: l.maxBytes, MaxRecordBytes: l.maxRecordBytes,
		Workers: l.workers, DeadRetention: l.deadRetention, AttemptRetention: l.attemptRetention}}
	change(&o)
	s.live.Store(liveOf(o))
}

// StopDelivering starts no more deliveries and gives those in flight until
// within from now to finish; Close cancels the ones still running then. Writes
// (Enqueue, dead-letter operations) keep working until Close. A process that
// is shutting down calls it as early as it can, so that deliveries wind down
// in parallel with its other work; Close calls it with CloseTimeout. Only the
// first call has an effect.
func (s *Spool) StopDelivering(within time.Duration) {
	s.stopOnce.Do(func() {
		s.slots.stop() // first: no delivery starts after Close waits for them
		s.giveUpAt = time.Now().Add(within)
		s.closers.dispatch.signal()
		s.closers.maintenance.signal()
	})
}

// Close stops dispatching, waits for deliveries in flight until CloseTimeout
// has passed since deliveries stopped (see StopDelivering), then cancels the
// rest (their leases are released so they are due at the next start), commits
// what is pending and closes the database. It is safe to call more than once;
// later calls return the first result.
func (s *Spool) Close() error {
	s.closeOnce.Do(func() {
		s.StopDelivering(s.opts.CloseTimeout)
		<-s.closers.dispatch.done()
		done := make(chan struct{})
		go func() { s.slots.wait(); close(done) }()
		if !waitUntil(done, s.giveUpAt) {
			s.log.Warn("deliveries still in flight at close; cancelling them")
			s.cancelWork()
			if !waitUntil(done, time.Now().Add(5*time.Second)) {
				s.log.Error("deliveries ignored cancellation; their leases will expire")
			}
		}
		s.cancelWork()
		<-s.closers.maintenance.done() // it writes through the committer
		s.closers.commit.signalAndWait()
		if err := s.flightLog.remove(); err != nil {
			s.log.Warn("cannot remove the flight log; the next start counts the attempts it lists", zap.Error(err))
		}
		if s.diskFull(s.freeNow()) {
			// Closing writes the last memtable to a new table, which would
			// fault; the write-ahead log has every commit for the next Open.
			s.closeErr = fmt.Errorf("spool: disk full: %s left open, as its write-ahead log has it", s.opts.Dir)
			openMu.Lock()
			leftOpen[s.opts.Dir] = s.db
			openMu.Unlock()
		} else {
			s.closeErr = s.db.Close()
		}
		s.bodies.close()
		openMu.Lock()
		delete(openDirs, s.opts.Dir)
		openMu.Unlock()
	})
	return s.closeErr
}

// waitUntil waits for done to close until deadline and reports whether it
// did; a deadline already past still counts a done channel as closed.
func waitUntil(done <-chan struct{}, deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// Name identifies the spool: "badger:" and its absolute directory, with
// symbolic links resolved (see NameOf).
func (s *Spool) Name() string { return namePrefix + s.opts.Dir }

// namePrefix begins every Spool's Name.
const namePrefix = "badger:"

// NameOf is the Name of the spool that Open would open in dir, known
// before it is opened: the key to share one open spool by.
func NameOf(dir string) (string, error) {
	abs, err := absDir(dir)
	if err != nil {
		return "", err
	}
	return namePrefix + abs, nil
}

// absDir is dir made absolute, with the symbolic links of its longest
// existing part resolved: Open creates the rest as plain directories, so
// the result stays the same once they exist.
func absDir(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("spool: no directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for p, rest := abs, ""; filepath.Dir(p) != p; p, rest = filepath.Dir(p), filepath.Join(filepath.Base(p), rest) {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(real, rest), nil
		}
	}
	return abs, nil
}

// slotPause is how long the dispatcher, waiting for a slot, lets slots free
// up after the first before it looks for due items again: a saturated
// route then gets one pass per few dozen deliveries, not one per delivery
// (each pass reads the queue through a new Badger iterator).
const slotPause = time.Millisecond

// nudgeSoon wakes the dispatcher after slotPause.
func (s *Spool) nudgeSoon() {
	if s.soon.CompareAndSwap(false, true) {
		time.AfterFunc(slotPause, func() {
			s.soon.Store(false)
			s.nudge()
		})
	}
}

// nudge wakes the dispatcher without blocking.
func (s *Spool) nudge() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Entry is an item to enqueue. A store may keep its Header and Body (the
// Badger spool delivers the first attempt with them, a NATS backend
// publishes the body as it is), so they must not change once given, even
// after an Enqueue that returned early with its context's error.
type Entry struct {
	Route        string
	EventID      string
	Header       http.Header // the headers to deliver with the body
	Body         []byte
	ReceivedAt   time.Time     // zero: now
	DedupeWindow time.Duration // how long the event id is remembered; default 72h
	// Fingerprint is what tells a duplicate (same fingerprint) from a
	// conflict (another one) for the same event id. Default: the body. A
	// publisher that stamps each attempt to publish with a new timestamp
	// passes the request it was given instead.
	Fingerprint []byte
	// DedupeOnly records the event id as seen without storing an item.
	DedupeOnly bool
}

// MaxBodySize is the largest Entry.Body the spool stores; a larger one is
// refused with ErrTooLarge, as is a message over maxMessageSize with its
// headers.
const MaxBodySize = 32 << 20

// valueLogFileSize is the size of Badger's value log files.
const valueLogFileSize = 64 << 20

// valueThreshold is the size from which a value goes to the value log: above
// the largest state record (a 256-byte error, its reason and numbers), so
// that only the messages of older versions are there.
const valueThreshold = 512

// DefaultDedupeWindow is used for entries without a DedupeWindow.
const DefaultDedupeWindow = 72 * time.Hour

// Status is the outcome of an enqueue.
type Status int

// Enqueue outcomes.
const (
	Accepted  Status = iota + 1 // stored as a new item
	Duplicate                   // the route already has this event id with the same body
	Conflict                    // the route already has this event id with a different body
	Aborted                     // not stored: another entry of the same EnqueueAll conflicted
)

func (s Status) String() string {
	switch s {
	case Accepted:
		return "accepted"
	case Duplicate:
		return "duplicate"
	case Conflict:
		return "conflict"
	case Aborted:
		return "aborted"
	}
	return "unknown"
}

// Result is the outcome of one entry's enqueue.
type Result struct {
	Status Status
	ID     uint64 // the new item, or the one already stored for the event id
}

// Enqueue stores e and its dedupe record durably (fsync) before it returns.
// Concurrent calls share commits. It fails with a *FullError (ErrFull) when a
// bound is reached, ErrClosed after Close, or ctx's error; after a ctx error
// the entry may still have been stored, and the sender's retry is then
// answered as a duplicate.
func (s *Spool) Enqueue(ctx context.Context, e Entry) (Result, error) {
	res, err := s.EnqueueAll(ctx, []Entry{e})
	if err != nil {
		return Result{}, err
	}
	return res[0], nil
}

// EnqueueAll stores several entries in one transaction, each deduplicated on
// its own route and event id. They stand or fall together: on an error
// none is written, and if one conflicts none is stored (the others report
// Aborted, or Duplicate).
func (s *Spool) EnqueueAll(ctx context.Context, entries []Entry) ([]Result, error) {
	return s.enqueue(ctx, entries)
}

// Remember records e's event id as seen on its route, durably, without
// storing an item: for routes that hand verified requests on instead of
// spooling them. The result is Accepted when the id was new.
func (s *Spool) Remember(ctx context.Context, e Entry) (Result, error) {
	e.DedupeOnly = true
	res, err := s.enqueue(ctx, []Entry{e})
	if err != nil {
		return Result{}, err
	}
	return res[0], nil
}

// Seen reports without writing whether a route already has an event id:
// Duplicate (same body), Conflict (another body) or Accepted (not seen).
// ctx is not used: the answer is read from the local database.
func (s *Spool) Seen(_ context.Context, route, eventID string, body []byte) (Status, error) {
	o := &enqueueOp{entries: []preparedEntry{{dedupe: dedupeKey(route, eventID), hash: xxhash.Sum64(body), source: body}}}
	var res Result
	err := s.db.View(func(txn *badger.Txn) (err error) {
		res, _, err = o.lookup(txn, 0)
		return err
	})
	return res.Status, err
}

func (s *Spool) enqueue(ctx context.Context, entries []Entry) ([]Result, error) {
	o, err := prepare(entries, time.Now())
	if err != nil {
		return nil, err
	}
	if err := s.submit(ctx, o, o.done); err != nil {
		return nil, err
	}
	return o.results, o.err
}

// prepare encodes entries for the committer, outside of it.
func prepare(entries []Entry, now time.Time) (*enqueueOp, error) {
	o := &enqueueOp{entries: make([]preparedEntry, len(entries)), done: make(chan struct{})}
	for i, e := range entries {
		if e.Route == "" || e.EventID == "" {
			return nil, errors.New("spool: entry needs a route and an event id")
		}
		received := e.ReceivedAt
		if received.IsZero() {
			received = now
		}
		window := e.DedupeWindow
		if window <= 0 {
			window = DefaultDedupeWindow
		}
		source := fingerprintSource(e)
		msg := &message{Route: e.Route, EventID: e.EventID, ReceivedMs: received.UnixMilli(), Header: e.Header, Body: e.Body}
		o.entries[i] = preparedEntry{
			dedupeOnly: e.DedupeOnly,
			route:      e.Route,
			dedupe:     dedupeKey(e.Route, e.EventID),
			hash:       xxhash.Sum64(source),
			source:     source,
			received:   msg.ReceivedMs,
			window:     window,
		}
		if !e.DedupeOnly {
			if len(e.Body) > MaxBodySize {
				return nil, fmt.Errorf("%w: a body of %d bytes is over %d", ErrTooLarge, len(e.Body), MaxBodySize)
			}
			pe := &o.entries[i]
			pe.msg, pe.head = msg, msg.encodeHead(0)
			if pe.size = len(pe.head) + len(msg.Body); pe.size > maxMessageSize {
				return nil, fmt.Errorf("%w: a message of %d bytes", ErrTooLarge, pe.size)
			}
		}
	}
	return o, nil
}

// fingerprintSource is what an entry's fingerprint is taken of.
func fingerprintSource(e Entry) []byte {
	if e.Fingerprint != nil {
		return e.Fingerprint
	}
	return e.Body
}

// submit hands an op to the committer and waits for its commit.
func (s *Spool) submit(ctx context.Context, o op, done chan struct{}) error {
	select {
	case s.ops <- o:
	case <-s.closers.commit.done():
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closers.commit.done():
		select {
		case <-done:
			return nil
		default:
			return ErrClosed
		}
	}
}

// badgerLogger routes Badger's log lines to zap; its info lines are debug here.
type badgerLogger struct{ l *zap.SugaredLogger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Errorf(f, a...) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warnf(f, a...) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debugf(f, a...) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.l.Debugf(f, a...) }
