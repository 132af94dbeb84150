package natsspool

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookgate/hookgate/spool"
)

// Lookup finds where a route's event stands, from its records, while its
// marker lasts: its current run's item (a replay starts a new one; a dead
// or deleted item is named by its dead letter's id), its attempts over
// every run, and its state.
func (b *Backend) Lookup(ctx context.Context, route, eventID string) (spool.ItemStatus, error) {
	st, gone, err := b.lookup(ctx, route, eventID)
	if gone && err == nil {
		// Its payload was gone when read, after its records were: an
		// attempt record written before the ack may be new since. Read
		// them again.
		st, _, err = b.lookup(ctx, route, eventID)
	}
	return st, err
}

// lookup reads an event's records, then its payload; gone says its state
// follows from the payload's absence only.
func (b *Backend) lookup(ctx context.Context, route, eventID string) (spool.ItemStatus, bool, error) {
	recs, err := b.records(ctx, b.n.ids(route, eventID))
	if err != nil {
		return spool.ItemStatus{}, false, err
	}
	if len(recs) == 0 {
		return spool.ItemStatus{}, false, spool.ErrNotFound
	}
	var out spool.ItemStatus
	var deadSeq uint64
	deleted, delivered := false, false
	for _, r := range recs {
		h := r.Header
		switch h.Get(hdrKind) {
		case kindMarker, kindReplayed:
			out.ID = markerOf(r).item
			deadSeq, deleted, delivered = 0, false, false
		case kindAttempt:
			var a attemptRecord
			if json.Unmarshal(r.Data, &a) == nil {
				out.Attempts = append(out.Attempts, spool.Attempt{Number: a.Number, At: time.UnixMilli(a.AtMs),
					Duration: time.Duration(a.DurationUs) * time.Microsecond, StatusCode: a.StatusCode, Error: a.Error})
				delivered = a.Error == "" && a.StatusCode >= 200 && a.StatusCode < 300
			}
		case kindDead:
			if h.Get(hdrItem) == strconv.FormatUint(out.ID, 10) {
				deadSeq, _ = strconv.ParseUint(h.Get(hdrDead), 10, 64)
			}
		case kindDeleted:
			if h.Get(hdrDead) == strconv.FormatUint(deadSeq, 10) {
				deleted = true
			}
		}
	}
	cctx, cancel := b.ctx(ctx)
	defer cancel()
	if deadSeq != 0 {
		out.ID = deadSeq // a dead letter is named by its id in the dead letters, which DeleteDead and Replay take
	}
	switch {
	case deleted:
		out.State = spool.StateDeleted
	case deadSeq != 0:
		dm, err := b.dead.GetMsg(cctx, deadSeq)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound): // purged
			out.State = spool.StateDeleted
		case err != nil:
			return spool.ItemStatus{}, false, err
		default:
			d := deadLetter(dm)
			out.State, out.Dead = spool.StateDead, &d
		}
	case out.ID == 0 || delivered: // remembered, never an item; or its last attempt succeeded (the ack may be on its way)
		out.State = spool.StateDelivered
	default:
		_, err := b.queue.GetMsg(cctx, out.ID)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			out.State = spool.StateDelivered
			return out, true, nil
		case err != nil:
			return spool.ItemStatus{}, false, err
		default:
			out.State = spool.StatePending
		}
	}
	return out, false, nil
}
