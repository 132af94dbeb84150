// Package natsspool is a spool.Backend on NATS JetStream, so that several
// gateways share one queue, one dedupe and one set of dead letters (issue 14,
// docs/proposals/nats-jetstream.md). It has no Caddy imports.
//
// An enqueue is one atomic batch of the event's marker (expected last
// subject sequence 0, TTL = the dedupe window) and its payload; a durable
// pull consumer per route delivers, retried by the route's Policy with
// NakWithDelay; dead letters are copies in their own stream; pause and
// disable live in a KV bucket, so every instance sees them, and so does each
// instance's presence (presence.go): the routes it registers and its
// deliveries in flight, from which the others count in-flight deliveries
// cluster-wide and find the routes no instance registers (removed.go).
package natsspool

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/hookgate/hookgate/spool"
)

// Defaults of Options.
const (
	DefaultPrefix         = "HOOKGATE"
	DefaultReplicas       = 3
	DefaultRequestTimeout = 10 * time.Second
	DefaultLeaseMargin    = 30 * time.Second
	DefaultCloseTimeout   = 10 * time.Second
)

// Options configure a Backend.
type Options struct {
	Servers []string // NATS URLs
	// Connection options: credentials, token, user and password, TLS.
	Connect []nats.Option
	// Prefix names the streams (Prefix, Prefix_DEAD), the KV bucket
	// (Prefix_ROUTES) and the subjects; default HOOKGATE. Letters, digits,
	// '-' and '_'.
	Prefix string
	// Replicas of the streams and the bucket; default 3.
	Replicas int
	// VerifySync are the HTTP monitoring URLs (http://host:8222) of the
	// servers, whose /jsz and /varz show whether they fsync every write.
	VerifySync []string
	// AcceptRisk opens the store although the durability check fails (each
	// failing check is logged as a warning): a single node, or servers that
	// do not fsync before they acknowledge.
	AcceptRisk     bool
	RequestTimeout time.Duration // every NATS request; default 10s
	LeaseMargin    time.Duration // a delivery's ack wait is the route's timeout plus this; default 30s
	CloseTimeout   time.Duration // how long deliveries in flight get at Close; default 10s
	// RouteGrace is how long the items of a route that no live instance
	// registers wait for one before they become dead letters
	// (spool.ReasonRouteRemoved), as spool.Options.RouteGrace; default 10m.
	RouteGrace time.Duration
	Limits     spool.Limits
	Logger     *zap.Logger
	// Observe, if set, is called after every delivery attempt, as
	// spool.Options.Observe.
	Observe func(route string, a spool.Attempt, outcome string)

	presenceEvery time.Duration // how often an instance publishes its presence; default 2s, shorter in tests
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Replicas <= 0 {
		o.Replicas = DefaultReplicas
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.LeaseMargin <= 0 {
		o.LeaseMargin = DefaultLeaseMargin
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = DefaultCloseTimeout
	}
	if o.RouteGrace <= 0 {
		o.RouteGrace = DefaultRouteGrace
	}
	if o.presenceEvery <= 0 {
		o.presenceEvery = defaultPresenceEvery
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	o.Limits = o.Limits.WithDefaults()
	return o
}

// Backend is a spool.Backend on JetStream. Instances opened on the same
// servers and prefix share their store.
type Backend struct {
	opts   Options
	n      names
	log    *zap.Logger
	nc     *nats.Conn
	js     jetstream.JetStream
	queue  jetstream.Stream // stream P
	dead   jetstream.Stream // stream P_DEAD
	kv     jetstream.KeyValue
	limits atomic.Pointer[spool.Limits]

	routes   *routeStates // the KV bucket's route states, kept current by a watcher
	ensured  sync.Map     // route names whose consumer this instance made sure of
	cache    statsCache
	workers  *gate // deliveries in flight over all routes
	loopsMu  sync.Mutex
	loops    map[string]*routeLoop
	inflight sync.WaitGroup // deliveries
	fetching sync.WaitGroup // fetch loops

	stopCtx    context.Context // cancelled by StopDelivering: no new deliveries
	stop       context.CancelFunc
	workCtx    context.Context // cancelled when Close gives up on deliveries
	cancelWork context.CancelFunc
	stopOnce   sync.Once
	closeOnce  sync.Once
	giveUpAt   atomic.Int64 // unix ns
	closed     atomic.Bool
	watchStop  context.CancelFunc
	watchDone  chan struct{}

	id          string // this instance's presence key is i.<id>
	peers       peers
	presence    loop // publishes this instance's presence until Close
	maintenance loop // reconciles pauses and sweeps removed routes until deliveries stop
	stats       loop // reads the stats snapshot when asked (refreshStats)

	attemptRecordsDropped atomic.Int64
	killWarn              warnLimiter // warnings of kills that failed at a step

	// loopsClosed is set under loopsMu by Close before it waits for the
	// loops: RegisterRoute starts none after.
	loopsClosed bool
}

var _ spool.Backend = (*Backend)(nil)

// loop is one background goroutine: stop asks it to end, done is closed
// when it has.
type loop struct {
	stop context.CancelFunc
	done chan struct{}
}

func (l *loop) start(parent context.Context, f func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(parent)
	l.stop, l.done = cancel, make(chan struct{})
	go func() {
		defer close(l.done)
		f(ctx)
	}()
}

// stopAndWait ends the loop; it does nothing if the loop never started.
func (l *loop) stopAndWait() {
	if l.stop != nil {
		l.stop()
		<-l.done
	}
}

// Open connects to the servers, creates the streams, consumers' stream and
// bucket if absent (and refuses to open on existing ones with other
// settings), and checks that an acknowledged enqueue is durable (see
// Options.AcceptRisk).
func Open(ctx context.Context, opts Options) (*Backend, error) {
	opts = opts.withDefaults()
	if len(opts.Servers) == 0 {
		return nil, errors.New("natsspool: no servers")
	}
	if !prefixRE.MatchString(opts.Prefix) {
		return nil, fmt.Errorf("natsspool: prefix %q: use 1 to 32 letters, digits, '-' or '_'", opts.Prefix)
	}
	conn := append([]nats.Option{nats.Name("hookgate"), nats.Timeout(opts.RequestTimeout)}, opts.Connect...)
	nc, err := nats.Connect(strings.Join(opts.Servers, ","), conn...)
	if err != nil {
		return nil, fmt.Errorf("natsspool: connect: %w", err)
	}
	b := &Backend{opts: opts, n: names{prefix: opts.Prefix}, log: opts.Logger, nc: nc, loops: map[string]*routeLoop{},
		workers: newGate(), watchDone: make(chan struct{}), cache: newStatsCache(), id: newInstanceID(), peers: peers{m: map[string]*peer{}}}
	b.limits.Store(&opts.Limits)
	if err := b.setUp(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	b.stopCtx, b.stop = context.WithCancel(context.Background())
	b.workCtx, b.cancelWork = context.WithCancel(context.Background())
	if err := b.watchRoutes(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	b.presence.start(context.Background(), b.presenceLoop)
	// The first snapshot before the first enqueue, whose bounds it checks.
	b.cache.refresh(ctx, b)
	b.stats.start(context.Background(), b.refreshStats)
	b.maintenance.start(b.stopCtx, b.maintenanceLoop)
	return b, nil
}

// setUp creates or checks the streams and the bucket, then the durability.
func (b *Backend) setUp(ctx context.Context) error {
	js, err := jetstream.New(b.nc, jetstream.WithDefaultTimeout(b.opts.RequestTimeout))
	if err != nil {
		return err
	}
	b.js = js
	ctx, cancel := context.WithTimeout(ctx, 3*b.opts.RequestTimeout)
	defer cancel()
	l := b.opts.Limits
	if b.queue, err = ensureStream(ctx, js, b.queueConfig(l)); err != nil {
		return err
	}
	if b.dead, err = ensureStream(ctx, js, b.deadConfig(l)); err != nil {
		return err
	}
	b.kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: b.n.bucket(), History: 1, Storage: jetstream.FileStorage, Replicas: b.opts.Replicas,
	})
	if err != nil {
		return fmt.Errorf("natsspool: bucket %s: %w", b.n.bucket(), err)
	}
	return b.checkDurability(ctx)
}

// queueConfig is stream P: WorkQueue, so an acknowledged payload is gone;
// markers and records, which no consumer's filter matches, stay until
// their TTL. No AllowDirect (dedupe reads go to the leader), no
// SubjectDeleteMarkerTTL (an expired marker must leave its subject empty).
func (b *Backend) queueConfig(l spool.Limits) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:               b.n.stream(),
		Subjects:           []string{b.n.prefix + ".q.*", b.n.prefix + ".id.*.*"},
		Retention:          jetstream.WorkQueuePolicy,
		Storage:            jetstream.FileStorage,
		Replicas:           b.opts.Replicas,
		Discard:            jetstream.DiscardNew,
		MaxMsgs:            -1,
		MaxBytes:           -1, // see deadConfig
		Duplicates:         2 * time.Minute,
		AllowMsgTTL:        true,
		AllowAtomicPublish: true,
	}
}

// deadDuplicates is the dedupe window of dead copies (Nats-Msg-Id
// "dead:<item>"): longer than any redelivery of an item being killed.
const deadDuplicates = time.Hour

func (b *Backend) deadConfig(l spool.Limits) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:      b.n.deadStream(),
		Subjects:  []string{b.n.prefix + ".dead.*.*"},
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
		Replicas:  b.opts.Replicas,
		Discard:   jetstream.DiscardNew,
		MaxMsgs:   l.MaxItems,
		// A stream's MaxBytes is reserved on the servers' max_file_store
		// whether used or not, so the byte bounds are Hookgate's own checks
		// (softFull), and a server out of storage refuses with 10047.
		MaxBytes:   -1,
		MaxAge:     l.DeadRetention,
		Duplicates: deadDuplicates,
	}
}

// ensureStream creates the stream, or checks that an existing one has the
// settings the backend relies on and updates its limits.
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.CreateStream(ctx, want)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil, fmt.Errorf("natsspool: stream %s: %w", want.Name, err)
	}
	s, err = js.Stream(ctx, want.Name)
	if err != nil {
		return nil, fmt.Errorf("natsspool: stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	var diffs []string
	check := func(what string, ok bool) {
		if !ok {
			diffs = append(diffs, what)
		}
	}
	check("subjects", strings.Join(have.Subjects, " ") == strings.Join(want.Subjects, " "))
	check("retention", have.Retention == want.Retention)
	check("storage", have.Storage == want.Storage)
	check("replicas", have.Replicas == want.Replicas)
	check("discard", have.Discard == want.Discard)
	check("allow_msg_ttl", have.AllowMsgTTL == want.AllowMsgTTL)
	check("allow_atomic", have.AllowAtomicPublish == want.AllowAtomicPublish)
	check("allow_direct off", !have.AllowDirect)
	check("subject_delete_marker_ttl off", have.SubjectDeleteMarkerTTL == 0)
	check("persist_mode default", have.PersistMode == jetstream.DefaultPersistMode)
	if len(diffs) > 0 {
		return nil, fmt.Errorf("natsspool: stream %s exists with other settings: %s", want.Name, strings.Join(diffs, ", "))
	}
	have.MaxMsgs, have.MaxBytes, have.MaxAge = want.MaxMsgs, want.MaxBytes, want.MaxAge
	if _, err := js.UpdateStream(ctx, have); err != nil {
		return nil, fmt.Errorf("natsspool: stream %s limits: %w", want.Name, err)
	}
	return s, nil
}

// ctx bounds one NATS call.
func (b *Backend) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, b.opts.RequestTimeout)
}

// Name is "nats:<prefix>@<servers>".
func (b *Backend) Name() string { return b.opts.Name() }

// Name is the Name of the store these options open, known before it is
// opened: "nats:<prefix>@<servers>", the prefix defaulted.
func (o Options) Name() string {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	return "nats:" + o.Prefix + "@" + strings.Join(o.Servers, ",")
}

// Reconfigure applies new limits: the local checks and worker bound at once,
// the streams' hard limits by an update (with several instances, the last
// writer wins).
func (b *Backend) Reconfigure(l spool.Limits) {
	l = l.WithDefaults()
	b.limits.Store(&l)
	b.workers.wake()
	ctx, cancel := b.ctx(context.Background())
	defer cancel()
	for _, c := range []jetstream.StreamConfig{b.queueConfig(l), b.deadConfig(l)} {
		if _, err := ensureStream(ctx, b.js, c); err != nil {
			b.log.Error("natsspool: limits not applied", zap.Error(err))
		}
	}
	b.cache.invalidate()
}

// StopDelivering starts no more deliveries and gives those in flight until
// within from now to finish; Close cancels the ones still running then.
// Writes keep working until Close. Only the first call has an effect.
func (b *Backend) StopDelivering(within time.Duration) {
	b.stopOnce.Do(func() {
		b.giveUpAt.Store(time.Now().Add(within).UnixNano())
		b.stop()
	})
}

// Close stops delivering (see StopDelivering, with CloseTimeout), waits for
// deliveries in flight until then, cancels the rest (released with a Nak,
// so another instance or the next start delivers them), and closes the
// connection. Later calls do nothing.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.StopDelivering(b.opts.CloseTimeout)
		b.closed.Store(true)
		b.loopsMu.Lock()
		b.loopsClosed = true
		b.loopsMu.Unlock()
		b.fetching.Wait()
		done := make(chan struct{})
		go func() { b.inflight.Wait(); close(done) }()
		t := time.NewTimer(time.Until(time.Unix(0, b.giveUpAt.Load())))
		select {
		case <-done:
		case <-t.C:
			b.log.Warn("natsspool: deliveries still in flight at close; cancelling them")
			b.cancelWork()
			if !waitFor(done, 5*time.Second) {
				b.log.Error("natsspool: deliveries ignored cancellation; their ack wait will end")
			}
		}
		t.Stop()
		b.cancelWork()
		b.maintenance.stopAndWait()
		b.presence.stopAndWait()
		b.unpublishPresence()
		b.watchStop()
		<-b.watchDone
		b.stats.stopAndWait()
		if err := b.nc.Drain(); err != nil {
			b.nc.Close()
		}
	})
	return nil
}

// waitFor waits for done up to d and reports whether it closed.
func waitFor(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
