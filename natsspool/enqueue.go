package natsspool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookgate/hookgate/spool"
)

// Headers of Hookgate's messages.
const (
	hdrKind        = "Hg-Kind"         // a record's kind (see kind*)
	hdrFp          = "Hg-Fp"           // the event's fingerprint, on every record
	hdrOnly        = "Hg-Only"         // "1": a marker without a payload (Remember, DedupeOnly)
	hdrItem        = "Hg-Item"         // the payload a record is about
	hdrRoute       = "Hg-Route"        // the route's name
	hdrEventID     = "Hg-Event-Id"     // the event id
	hdrReceived    = "Hg-Received"     // receive time, unix ms
	hdrWindow      = "Hg-Window"       // the dedupe window, seconds
	hdrAgeStart    = "Hg-Age-Start"    // max_age counts from here (receipt or replay), unix ms
	hdrAttemptBase = "Hg-Attempt-Base" // attempts of earlier runs (replays)
	hdrPausedBase  = "Hg-Paused-Base"  // the route's paused total at Hg-Age-Start, ms
	hdrHeader      = "Hg-Header"       // the headers to deliver, JSON
)

// Record kinds on an event's subject, in the order they can come.
const (
	kindMarker     = "marker"
	kindAttempt    = "attempt"
	kindDeadIntent = "dead-intent"
	kindDead       = "dead"
	kindReplayed   = "replayed"
	kindDeleted    = "deleted"
)

// maxBatch is the most messages in one atomic batch (the server's default).
const maxBatch = 1000

// prepared is an entry ready to publish.
type prepared struct {
	e        spool.Entry
	subject  string // the event's marker subject
	fp       string
	received int64
	window   time.Duration
	header   string // JSON of e.Header
	primary  int    // the first entry of the batch with the same subject, or itself
}

// marker is what a read of an event's subject found.
type marker struct {
	seq   uint64
	fp    string
	batch string
	item  uint64
}

func (b *Backend) prepare(entries []spool.Entry) ([]prepared, error) {
	now := time.Now()
	msgs := 0
	out := make([]prepared, len(entries))
	for i, e := range entries {
		if e.Route == "" || e.EventID == "" {
			return nil, errors.New("natsspool: entry needs a route and an event id")
		}
		p := prepared{e: e, subject: b.n.ids(e.Route, e.EventID), window: e.DedupeWindow, primary: i}
		src := e.Fingerprint
		if src == nil {
			src = e.Body
		}
		p.fp = strconv.FormatUint(xxhash.Sum64(src), 16)
		p.received = e.ReceivedAt.UnixMilli()
		if e.ReceivedAt.IsZero() {
			p.received = now.UnixMilli()
		}
		if p.window <= 0 {
			p.window = spool.DefaultDedupeWindow
		}
		for j := range i {
			if out[j].subject == p.subject {
				p.primary = out[j].primary
				break
			}
		}
		msgs++
		if !e.DedupeOnly {
			msgs++
			if len(e.Body) > spool.MaxBodySize {
				return nil, fmt.Errorf("%w: a body of %d bytes is over %d", spool.ErrTooLarge, len(e.Body), spool.MaxBodySize)
			}
			h, err := json.Marshal(e.Header)
			if err != nil {
				return nil, err
			}
			p.header = string(h)
			if size := len(e.Body) + len(h) + 512; int64(size) > b.nc.MaxPayload() {
				return nil, fmt.Errorf("%w: a message of %d bytes is over the servers' max_payload of %d", spool.ErrTooLarge, size, b.nc.MaxPayload())
			}
		}
		out[i] = p
	}
	if msgs > maxBatch {
		return nil, fmt.Errorf("%w: %d messages in one batch, at most %d", spool.ErrTooLarge, msgs, maxBatch)
	}
	return out, nil
}

// ttlSeconds is a TTL for Nats-TTL: whole seconds, rounded up, at least 1.
func ttlSeconds(d time.Duration) string {
	return strconv.FormatInt(max(int64((d+time.Second-1)/time.Second), 1), 10)
}

// messages are the batch of ps: each event's marker, then its payload.
func (b *Backend) messages(ps []*prepared, pausedBase func(string) int64) []*nats.Msg {
	var out []*nats.Msg
	for _, p := range ps {
		m := nats.NewMsg(p.subject)
		m.Header.Set(hdrExpectLast, "0")
		m.Header.Set(hdrTTL, ttlSeconds(p.window))
		m.Header.Set(hdrKind, kindMarker)
		m.Header.Set(hdrFp, p.fp)
		m.Header.Set(hdrRoute, p.e.Route)
		m.Header.Set(hdrEventID, p.e.EventID)
		m.Header.Set(hdrReceived, strconv.FormatInt(p.received, 10))
		m.Header.Set(hdrWindow, ttlSeconds(p.window))
		if p.e.DedupeOnly {
			m.Header.Set(hdrOnly, "1")
			out = append(out, m)
			continue
		}
		out = append(out, m)
		q := nats.NewMsg(b.n.queue(p.e.Route))
		q.Header.Set(hdrRoute, p.e.Route)
		q.Header.Set(hdrEventID, p.e.EventID)
		q.Header.Set(hdrFp, p.fp)
		q.Header.Set(hdrReceived, strconv.FormatInt(p.received, 10))
		q.Header.Set(hdrWindow, ttlSeconds(p.window))
		q.Header.Set(hdrAgeStart, strconv.FormatInt(p.received, 10))
		q.Header.Set(hdrAttemptBase, "0")
		q.Header.Set(hdrPausedBase, strconv.FormatInt(pausedBase(p.e.Route), 10))
		q.Header.Set(hdrHeader, p.header)
		q.Data = p.e.Body
		out = append(out, q)
	}
	return out
}

// Enqueue stores e and its marker in one atomic batch; it returns once the
// stream's leader acknowledged it (stored on a quorum, fsynced where the
// servers sync always). See EnqueueAll.
func (b *Backend) Enqueue(ctx context.Context, e spool.Entry) (spool.Result, error) {
	res, err := b.EnqueueAll(ctx, []spool.Entry{e})
	if err != nil {
		return spool.Result{}, err
	}
	return res[0], nil
}

// Remember records e's event id as seen on its route, durably, without an
// item.
func (b *Backend) Remember(ctx context.Context, e spool.Entry) (spool.Result, error) {
	e.DedupeOnly = true
	return b.Enqueue(ctx, e)
}

// EnqueueAll stores entries in one atomic batch, each deduplicated on its
// route and event id: they stand or fall together, and if one conflicts
// none is stored (the others report Aborted, or Duplicate). It fails with a
// *spool.FullError when a bound is reached (duplicates and conflicts are
// still answered), ErrClosed after Close, or ctx's error; after a ctx error
// the entries may have been stored, and a retry is answered as a duplicate.
func (b *Backend) EnqueueAll(ctx context.Context, entries []spool.Entry) ([]spool.Result, error) {
	if b.closed.Load() {
		return nil, spool.ErrClosed
	}
	ps, err := b.prepare(entries)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*b.opts.RequestTimeout)
	defer cancel()
	b.ensureConsumers(ctx, ps)
	results := make([]spool.Result, len(ps))
	full := b.softFull(ps)
	read := full != nil
	var own []string
	for try := 0; ; try++ {
		pending := make([]*prepared, 0, len(ps))
		for i := range ps {
			if ps[i].primary == i {
				pending = append(pending, &ps[i])
			}
		}
		if read {
			var done bool
			pending, done, err = b.resolve(ctx, ps, results, own)
			if err != nil || done {
				return results, err
			}
			if full != nil {
				return nil, full
			}
		}
		nowMs := time.Now().UnixMilli()
		msgs := b.messages(pending, func(route string) int64 { return b.routes.get(route).pausedMs(nowMs) })
		cctx, ccancel := b.ctx(ctx)
		id, ack, err := publishBatch(cctx, b.nc, msgs)
		ccancel()
		own = append(own, id)
		if err == nil {
			seq := ack.Seq - uint64(len(msgs)) + 1
			for _, p := range pending {
				i := indexOf(ps, p)
				if p.e.DedupeOnly {
					results[i] = spool.Result{Status: spool.Accepted}
					seq++
				} else {
					results[i] = spool.Result{Status: spool.Accepted, ID: seq + 1}
					b.cache.added(1, int64(len(p.e.Body)))
					seq += 2
				}
				b.cache.addedRecords(1)
			}
			b.finishSecondaries(ps, results)
			return results, nil
		}
		read = true
		switch code := errCode(err); code {
		case codeWrongLastSeq, codeWrongLastSeqInFlight:
			if code == codeWrongLastSeqInFlight {
				retryPause(ctx, try)
			}
		case codeStoreFull:
			full = &spool.FullError{Limit: "max_items"}
			if strings.Contains(err.Error(), "bytes") {
				full = &spool.FullError{Limit: "max_bytes"}
			}
		case codeInsufficientStorage, codeStorageExceeded:
			full = &spool.FullError{Limit: "nats_storage"}
		case codeBatchIncomplete, codeBatchTooMany:
			retryPause(ctx, try)
		case 0:
			// A timeout, no responders or a lost connection: the commit may
			// have landed, which the read finds as our own.
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) &&
				!errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrConnectionClosed) &&
				!errors.Is(err, nats.ErrConnectionReconnecting) {
				return nil, fmt.Errorf("natsspool: enqueue: %w", err)
			}
			retryPause(ctx, try)
		default:
			return nil, fmt.Errorf("natsspool: enqueue: %w", err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// retryPauseOf is the pause after the try-th try: see retryPause.
func retryPauseOf(try int) time.Duration {
	d := min(retryPauseMin<<min(max(try, 0), 16), retryPauseMax)
	return d/2 + rand.N(d/2+1)
}

func indexOf(ps []prepared, p *prepared) int {
	for i := range ps {
		if &ps[i] == p {
			return i
		}
	}
	return -1
}

// Bounds of retryPause.
const (
	retryPauseMin = 2 * time.Millisecond
	retryPauseMax = 500 * time.Millisecond
)

// retryPause waits before a write is tried again after its try-th try (0
// the first) failed because a write to the same subject was in flight, the
// stream had too many open batches, or the answer was lost: between half
// and all of retryPauseMin doubled per try, at most retryPauseMax, or until
// ctx (which bounds the write) ends.
func retryPause(ctx context.Context, try int) {
	t := time.NewTimer(retryPauseOf(try))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// resolve reads the markers of the primary entries: an entry whose marker
// came from one of own (an earlier try whose answer was lost) is Accepted,
// one with the same fingerprint Duplicate, another Conflict. It returns the
// entries still to publish, or done when every entry has its result (or one
// conflicts, which aborts the rest).
func (b *Backend) resolve(ctx context.Context, ps []prepared, results []spool.Result, own []string) ([]*prepared, bool, error) {
	var pending []*prepared
	conflict := false
	for i := range ps {
		p := &ps[i]
		if p.primary != i {
			continue
		}
		m, err := b.firstRecord(ctx, p.subject)
		if err != nil {
			return nil, false, err
		}
		switch {
		case m == nil:
			pending = append(pending, p)
			continue
		case slices.Contains(own, m.batch):
			results[i] = spool.Result{Status: spool.Accepted, ID: m.item}
		case m.fp == p.fp:
			results[i] = spool.Result{Status: spool.Duplicate, ID: m.item}
		default:
			results[i] = spool.Result{Status: spool.Conflict, ID: m.item}
			conflict = true
		}
	}
	if conflict {
		for _, p := range pending {
			results[indexOf(ps, p)] = spool.Result{Status: spool.Aborted}
		}
		b.finishSecondaries(ps, results)
		return nil, true, nil
	}
	if len(pending) == 0 {
		b.finishSecondaries(ps, results)
		return nil, true, nil
	}
	return pending, false, nil
}

// finishSecondaries answers the entries that repeat an earlier entry's
// event: a duplicate or conflict of it.
func (b *Backend) finishSecondaries(ps []prepared, results []spool.Result) {
	for i := range ps {
		j := ps[i].primary
		if j == i {
			continue
		}
		switch {
		case results[j].Status == spool.Aborted:
			results[i] = spool.Result{Status: spool.Aborted}
		case ps[j].fp == ps[i].fp:
			results[i] = spool.Result{Status: spool.Duplicate, ID: results[j].ID}
		default:
			results[i] = spool.Result{Status: spool.Conflict, ID: results[j].ID}
		}
	}
}

// firstRecord reads the oldest record of an event's subject, from the
// stream's leader (the stream has no direct get); nil if there is none.
func (b *Backend) firstRecord(ctx context.Context, subject string) (*marker, error) {
	cctx, cancel := b.ctx(ctx)
	defer cancel()
	msg, err := b.queue.GetMsg(cctx, 1, jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("natsspool: read %s: %w", subject, err)
	}
	return markerOf(msg), nil
}

func markerOf(msg *jetstream.RawStreamMsg) *marker {
	m := &marker{seq: msg.Sequence, fp: msg.Header.Get(hdrFp), batch: msg.Header.Get(hdrBatchID)}
	switch {
	case msg.Header.Get(hdrItem) != "":
		m.item, _ = strconv.ParseUint(msg.Header.Get(hdrItem), 10, 64)
	case msg.Header.Get(hdrOnly) == "":
		m.item = msg.Sequence + 1 // the payload follows its marker in the batch
	}
	return m
}

// Seen reports without writing whether a route already has an event id:
// Duplicate (same body), Conflict (another body) or Accepted (not seen).
func (b *Backend) Seen(ctx context.Context, route, eventID string, body []byte) (spool.Status, error) {
	m, err := b.firstRecord(ctx, b.n.ids(route, eventID))
	switch {
	case err != nil:
		return 0, err
	case m == nil:
		return spool.Accepted, nil
	case m.fp == strconv.FormatUint(xxhash.Sum64(body), 16):
		return spool.Duplicate, nil
	}
	return spool.Conflict, nil
}

// CanRemember reports from the cached counts whether a new event id would
// fit the record budget.
func (b *Backend) CanRemember() error {
	u := b.cache.get()
	if (u.records+1)*recordBytes > b.limits.Load().MaxRecordBytes {
		return &spool.FullError{Limit: "max_record_bytes"}
	}
	return nil
}

// softFull checks the bounds against the last snapshot and this
// instance's additions since (never waiting for a read): the error new
// entries get, nil if they fit.
func (b *Backend) softFull(ps []prepared) error {
	l := b.limits.Load()
	u := b.cache.get()
	var items, bytes, records int64
	for _, p := range ps {
		records++
		if !p.e.DedupeOnly {
			items++
			bytes += int64(len(p.e.Body))
		}
	}
	switch {
	case items > 0 && u.items+items > l.MaxItems:
		return &spool.FullError{Limit: "max_items"}
	case items > 0 && u.bytes+bytes > l.MaxBytes:
		return &spool.FullError{Limit: "max_bytes"}
	case (u.records+records)*recordBytes > l.MaxRecordBytes:
		return &spool.FullError{Limit: "max_record_bytes"}
	}
	return nil
}
