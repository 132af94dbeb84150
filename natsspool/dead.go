package natsspool

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/hookgate/hookgate/spool"
)

// Headers of dead letters and of the records about them.
const (
	hdrReason     = "Hg-Reason"
	hdrLastStatus = "Hg-Last-Status"
	hdrLastError  = "Hg-Last-Error"
	hdrAttempts   = "Hg-Attempts" // attempts of the run that ended
	hdrDeadAt     = "Hg-Dead-At"  // unix ms
	hdrDead       = "Hg-Dead"     // a dead letter's sequence in P_DEAD
)

// deadInfo is why and how an item's run ended.
type deadInfo struct {
	reason   string
	status   int
	lastErr  string
	attempts int
}

func (d deadInfo) set(h nats.Header) {
	h.Set(hdrReason, d.reason)
	h.Set(hdrLastStatus, strconv.Itoa(d.status))
	h.Set(hdrLastError, headerSafe(d.lastErr))
	h.Set(hdrAttempts, strconv.Itoa(d.attempts))
}

func deadInfoOf(h nats.Header) deadInfo {
	d := deadInfo{reason: h.Get(hdrReason), lastErr: h.Get(hdrLastError)}
	d.status, _ = strconv.Atoi(h.Get(hdrLastStatus))
	d.attempts, _ = strconv.Atoi(h.Get(hdrAttempts))
	return d
}

// headerSafe cuts text to one header line of at most maxErrorLen bytes.
func headerSafe(s string) string {
	out := []byte(s)
	for i, c := range out {
		if c == '\r' || c == '\n' {
			out[i] = ' '
		}
	}
	if len(out) > maxErrorLen {
		out = out[:maxErrorLen]
	}
	return string(out)
}

// intentTTL is how long the records of a kill last: as long as the event's
// marker, not longer, since a record left on the event's subject refuses
// its id (the enqueue expects the subject empty) after its dedupe window.
// A kill whose records expire before it finishes (the window ending
// meanwhile) is made again by the item's next attempt; its dead copy is
// deduplicated by the item for deadDuplicates.
func (b *Backend) intentTTL(it *item) time.Duration {
	return max(it.remaining(), time.Second)
}

// kill makes an item a dead letter. First a dead-intent record: from then on
// a redelivery of the item (after a crash at any later step) finishes the
// kill without another attempt. Then the copy in P_DEAD (deduplicated by the
// item, so a repeated step stores one copy), a dead record naming it, and
// the ack that removes the payload.
func (b *Backend) kill(ctx context.Context, msg jetstream.Msg, it *item, d deadInfo) {
	m := b.record(it, kindDeadIntent, b.intentTTL(it))
	d.set(m.Header)
	if _, err := b.js.PublishMsg(ctx, m); err != nil {
		b.killFailed(msg, it, "natsspool: dead letter not started; retried", err)
		return
	}
	b.finishKill(ctx, msg, it, d)
}

// killWarnEvery is the least time between two warnings of failed kills.
const killWarnEvery = time.Minute

// warnLimiter counts failures and lets a warning of them through at most
// once per killWarnEvery.
type warnLimiter struct {
	mu     sync.Mutex
	at     time.Time
	failed int
}

// allow counts a failure and says how many to warn of now: 0 while the
// last warning is recent.
func (w *warnLimiter) allow() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failed++
	if !w.at.IsZero() && time.Since(w.at) < killWarnEvery {
		return 0
	}
	n := w.failed
	w.at, w.failed = time.Now(), 0
	return n
}

// killFailed releases an item whose kill failed at a step (the dead
// letters full, say) for a redelivery that finishes it: un-acked, it stays
// in the queue until its dead letter is stored. The redelivery waits
// skipDelay (up to a minute), and the warning is logged at most once per
// killWarnEvery.
func (b *Backend) killFailed(msg jetstream.Msg, it *item, what string, err error) {
	if n := b.killWarn.allow(); n > 0 {
		b.log.Warn(what, zap.String("route", it.route), zap.Int("failures", n), zap.Error(err))
	}
	_ = msg.NakWithDelay(skipDelay(it.delivered))
}

func (b *Backend) finishKill(ctx context.Context, msg jetstream.Msg, it *item, d deadInfo) {
	if it.rl != nil {
		// From its dead copy on, the item counts as dead, not in flight, so
		// that stats taken meanwhile do not count it twice.
		it.rl.settling.Add(1)
		defer it.rl.settling.Add(-1)
		it.leave()
	}
	c := nats.NewMsg(b.n.dead(it.route, d.reason))
	for k, v := range it.raw {
		if strings.HasPrefix(k, "Hg-") { // not the batch headers the payload was stored with
			c.Header[k] = v
		}
	}
	d.set(c.Header)
	c.Header.Set(hdrItem, strconv.FormatUint(it.seq, 10))
	c.Header.Set(hdrDeadAt, strconv.FormatInt(time.Now().UnixMilli(), 10))
	c.Data = it.body
	ack, err := b.js.PublishMsg(ctx, c, jetstream.WithMsgID("dead:"+strconv.FormatUint(it.seq, 10)))
	if err != nil {
		b.killFailed(msg, it, "natsspool: dead letter not stored; retried", err)
		return
	}
	r := b.record(it, kindDead, b.intentTTL(it))
	d.set(r.Header)
	r.Header.Set(hdrDead, strconv.FormatUint(ack.Sequence, 10))
	if _, err := b.js.PublishMsg(ctx, r); err != nil {
		b.killFailed(msg, it, "natsspool: dead record not written; retried", err)
		return
	}
	if err := msg.DoubleAck(ctx); err != nil {
		b.log.Warn("natsspool: ack of a dead letter's item failed; its redelivery finishes it", zap.String("route", it.route), zap.Error(err))
	}
	b.cache.invalidate()
}

// deadLetter decodes a message of P_DEAD.
func deadLetter(msg *jetstream.RawStreamMsg) spool.DeadLetter {
	h := msg.Header
	d := deadInfoOf(h)
	recv, _ := strconv.ParseInt(h.Get(hdrReceived), 10, 64)
	at, _ := strconv.ParseInt(h.Get(hdrDeadAt), 10, 64)
	return spool.DeadLetter{
		ID: msg.Sequence, Route: h.Get(hdrRoute), EventID: h.Get(hdrEventID), Reason: d.reason,
		LastStatus: d.status, LastError: d.lastErr, Attempts: d.attempts, Size: int64(len(msg.Data)),
		ReceivedAt: time.UnixMilli(recv), DeadAt: time.UnixMilli(at),
	}
}

// maxPage bounds a ListDead page, as Badger's.
const maxPage = 1000

// ListDead returns up to limit dead letters matching f with ids above
// after, oldest first, and the cursor for the next page (0 at the end).
// A dead letter's id is its sequence in the dead letters' stream.
func (b *Backend) ListDead(ctx context.Context, f spool.DeadFilter, after uint64, limit int) ([]spool.DeadLetter, uint64, error) {
	limit = min(max(limit, 1), maxPage)
	filter := b.n.deadFilter(f.Route, f.Reason)
	var out []spool.DeadLetter
	seq := after + 1
	for {
		cctx, cancel := b.ctx(ctx)
		msg, err := b.dead.GetMsg(cctx, seq, jetstream.WithGetMsgSubject(filter))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, 0, nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("natsspool: list dead letters: %w", err)
		}
		if len(out) == limit {
			return out, out[len(out)-1].ID, nil
		}
		out = append(out, deadLetter(msg))
		seq = msg.Sequence + 1
	}
}

// Replay puts dead letters back in their route's queue with a fresh budget
// (attempts and age from now), keeping their receive time and numbering
// their attempts on. It returns how many it replayed; unknown ids are
// skipped. A replay is one atomic batch of a "replayed" record (checked
// against the event's last record, so that two replays of one dead letter
// store one payload) and the new payload; the dead letter is deleted after.
func (b *Backend) Replay(ctx context.Context, ids ...uint64) (int, error) {
	n := 0
	for _, id := range ids {
		ok, err := b.replay(ctx, id)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	b.cache.invalidate()
	return n, nil
}

func (b *Backend) replay(ctx context.Context, id uint64) (bool, error) {
	cctx, cancel := b.ctx(ctx)
	defer cancel()
	dm, err := b.dead.GetMsg(cctx, id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	it := b.deadItem(dm)
	for try := 0; ; try++ {
		if try == 100 {
			return false, fmt.Errorf("natsspool: replay of %d: the event's records keep changing", id)
		}
		recs, err := b.records(cctx, it.subject)
		if err != nil {
			return false, err
		}
		var lastSeq uint64
		done := false
		for _, r := range recs {
			lastSeq = r.Sequence
			if r.Header.Get(hdrKind) == kindReplayed && r.Header.Get(hdrDead) == strconv.FormatUint(id, 10) {
				done = true
			}
		}
		if !done {
			d := deadInfoOf(dm.Header)
			ttl := it.remaining()
			if ttl < time.Second {
				ttl = it.window // the marker is gone: dedupe for a window from the replay
			}
			rec := b.record(&it, kindReplayed, ttl)
			rec.Header.Set(hdrDead, strconv.FormatUint(id, 10))
			rec.Header.Set(hdrExpectLast, strconv.FormatUint(lastSeq, 10))
			rec.Header.Del(hdrItem) // the new payload follows it in the batch
			q := nats.NewMsg(b.n.queue(it.route))
			for _, k := range []string{hdrRoute, hdrEventID, hdrFp, hdrReceived, hdrWindow, hdrHeader} {
				q.Header.Set(k, dm.Header.Get(k))
			}
			nowMs := time.Now().UnixMilli()
			q.Header.Set(hdrAgeStart, strconv.FormatInt(nowMs, 10))
			q.Header.Set(hdrAttemptBase, strconv.Itoa(it.attemptBase+d.attempts))
			q.Header.Set(hdrPausedBase, strconv.FormatInt(b.routes.get(it.route).pausedMs(nowMs), 10))
			q.Data = dm.Data
			_, _, err := publishBatch(cctx, b.nc, []*nats.Msg{rec, q})
			if c := errCode(err); c == codeWrongLastSeq || c == codeWrongLastSeqInFlight {
				retryPause(cctx, try)
				continue
			}
			if err != nil {
				return false, fmt.Errorf("natsspool: replay of %d: %w", id, err)
			}
		}
		if err := b.dead.DeleteMsg(cctx, id); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, fmt.Errorf("natsspool: replay of %d: delete: %w", id, err)
		}
		return true, nil
	}
}

// replayPage is how many dead letters ReplayMatching lists at a time.
var replayPage = maxPage

// ReplayMatching replays every dead letter f selects that exists when it
// starts: it stops at the dead letters' last id taken first, so that items
// dying again while it runs (new ids) are not replayed again and again.
func (b *Backend) ReplayMatching(ctx context.Context, f spool.DeadFilter) (int, error) {
	cctx, cancel := b.ctx(ctx)
	info, err := b.dead.Info(cctx)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("natsspool: replay: %w", err)
	}
	last := info.State.LastSeq
	total := 0
	var after uint64
	for after < last {
		page, next, err := b.ListDead(ctx, f, after, replayPage)
		if err != nil {
			return total, err
		}
		ids := make([]uint64, 0, len(page))
		for _, d := range page {
			if d.ID <= last {
				ids = append(ids, d.ID)
			}
		}
		n, err := b.Replay(ctx, ids...)
		total += n
		if err != nil || next == 0 {
			return total, err
		}
		after = next
	}
	return total, nil
}

// DeleteDead deletes dead letters, first recording each deletion on its
// event (for Lookup), and returns how many it deleted.
func (b *Backend) DeleteDead(ctx context.Context, ids ...uint64) (int, error) {
	n := 0
	for _, id := range ids {
		cctx, cancel := b.ctx(ctx)
		dm, err := b.dead.GetMsg(cctx, id)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			cancel()
			continue
		}
		if err == nil {
			it := b.deadItem(dm)
			if ttl := it.remaining(); ttl >= time.Second {
				rec := b.record(&it, kindDeleted, ttl)
				rec.Header.Set(hdrDead, strconv.FormatUint(id, 10))
				_, err = b.js.PublishMsg(cctx, rec)
			}
		}
		if err == nil {
			err = b.dead.DeleteMsg(cctx, id)
		}
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("natsspool: delete dead letter %d: %w", id, err)
		}
		n++
	}
	b.cache.invalidate()
	return n, nil
}

// maxRecords bounds the records read of one event.
const maxRecords = 10_000

// records reads an event's records, oldest first.
func (b *Backend) records(ctx context.Context, subject string) ([]*jetstream.RawStreamMsg, error) {
	var out []*jetstream.RawStreamMsg
	seq := uint64(1)
	for len(out) < maxRecords {
		cctx, cancel := b.ctx(ctx)
		msg, err := b.queue.GetMsg(cctx, seq, jetstream.WithGetMsgSubject(subject))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("natsspool: read %s: %w", subject, err)
		}
		out = append(out, msg)
		seq = msg.Sequence + 1
	}
	return out, nil
}

// deadItem is the item a dead letter was.
func (b *Backend) deadItem(dm *jetstream.RawStreamMsg) item {
	seq, _ := strconv.ParseUint(dm.Header.Get(hdrItem), 10, 64)
	return b.itemOf(seq, dm.Header, dm.Data)
}
